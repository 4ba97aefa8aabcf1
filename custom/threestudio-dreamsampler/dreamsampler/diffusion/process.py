"""The diffusion process's formulas, each written once; every other module imports them from here.

With ``a = abar_t`` (the cumulative product of the model's schedule at timestep t):

    forward noising     z_t   = sqrt(a) z0 + sqrt(1 - a) eps                         (main paper eq. 1, 12)
    Tweedie             z0^   = (z_t - sqrt(1 - a) eps) / sqrt(a)                     (eq. 14 / 16)
    CFG                 eps_w = eps(null) + w (eps(c) - eps(null))                    (eq. 6)
    carried noise       eps~  = (sqrt(1 - a_to - sigma^2) eps^ + sigma e) / sqrt(1 - a_to)   (eq. 5)
    DDIM's sigma        sigma = eta sqrt((1 - a_to) / (1 - a_from)) sqrt(1 - a_from / a_to)
    v to epsilon        eps   = sqrt(a) v + sqrt(1 - a) z_t      (v = sqrt(a) eps - sqrt(1 - a) z0, SD 2.x)
    x0 to epsilon       eps   = (z_t - sqrt(a) x0) / sqrt(1 - a)
    learned variance    [eps, v] = pred.split(C)    (DeepFloyd IF: 2C output channels; the variance is dropped)

``a_from`` is the (noisier) level the prediction eps^ was made at and ``a_to`` the level the noise
is carried to. ``alpha_bar`` arguments broadcast against the tensors (a float, a 0-d tensor or
``[B, 1, 1, 1]``); latents and predictions are ``[B, C, h, w]``.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor

Level = Union[float, Tensor]
Latent = Float[Tensor, "B C h w"]  # latents and noise predictions at the core's boundaries


def scalar_like(value: float, like: Tensor) -> Tensor:
    """A Python float as a 0-d tensor on ``like``'s device and dtype."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _level(alpha_bar: Level, like: Tensor) -> Tensor:
    a = alpha_bar if isinstance(alpha_bar, Tensor) else scalar_like(alpha_bar, like)
    return a.to(device=like.device, dtype=like.dtype)


def _sqrt(x: Tensor) -> Tensor:
    return torch.sqrt(torch.clamp(x, min=0.0))


def forward_noise(z0: Float[Tensor, "B C h w"], eps: Float[Tensor, "B C h w"], alpha_bar: Level) -> Float[Tensor, "B C h w"]:
    """z_t = sqrt(a) z0 + sqrt(1 - a) eps (eq. 1, 12; also DDIM's update to the next level)."""
    a = _level(alpha_bar, z0)
    return _sqrt(a) * z0 + _sqrt(1 - a) * eps


def tweedie(z_t: Float[Tensor, "B C h w"], eps: Float[Tensor, "B C h w"], alpha_bar: Level) -> Float[Tensor, "B C h w"]:
    """Posterior mean E[z0 | z_t] = (z_t - sqrt(1 - a) eps) / sqrt(a) (eq. 14 / 16)."""
    a = _level(alpha_bar, z_t)
    return (z_t - _sqrt(1 - a) * eps) / _sqrt(a)


def cfg(eps_uncond: Float[Tensor, "B C h w"], eps_cond: Float[Tensor, "B C h w"], scale) -> Float[Tensor, "B C h w"]:
    """Classifier-free guidance, eq. 6 (``scale`` may be a per-sample ``[B]`` tensor)."""
    if isinstance(scale, Tensor) and scale.dim() == 1:
        scale = scale.view(-1, *([1] * (eps_cond.dim() - 1)))
    return eps_uncond + scale * (eps_cond - eps_uncond)


def perpendicular_component(x: Tensor, y: Tensor) -> Tensor:
    """Component of x orthogonal to y, per sample (Perp-Neg)."""
    dims = tuple(range(1, x.dim()))
    coef = (x * y).sum(dims, keepdim=True) / (y * y).sum(dims, keepdim=True).clamp_min(1e-12)
    return x - coef * y


def perp_neg_cfg(eps_cond: Tensor, eps_uncond: Tensor, eps_neg: Tensor, neg_weights: Tensor, scale) -> Tensor:
    """CFG with Perp-Neg negative prompts; ``eps_neg`` holds ``K`` predictions per sample, interleaved."""
    e_pos = eps_cond - eps_uncond
    k = neg_weights.shape[-1]
    accum = torch.zeros_like(e_pos)
    for n in range(k):
        e_neg = eps_neg[n::k] - eps_uncond
        accum = accum + neg_weights[:, n].view(-1, *([1] * (e_pos.dim() - 1))) * perpendicular_component(e_neg, e_pos)
    return eps_uncond + scale * (e_pos + accum)


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str, where: str) -> str:
    """``prediction_type`` if the core converts it, else an error naming the model (``where``) and the field."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"{where}: scheduler prediction_type={prediction_type!r} is not supported; "
            f"this project converts {PREDICTION_TYPES} to epsilon"
        )
    return prediction_type


def to_epsilon(pred: Float[Tensor, "B K h w"], z_t: Latent, alpha_bar: Level, prediction_type: str) -> Latent:
    """The model's output as the noise prediction eps every formula here uses (epsilon / v / x0 models).

    An output with twice the sample's channels carries a learned variance after the prediction (DeepFloyd
    IF's 6 channels for 3); the variance is dropped, as threestudio's ``deep-floyd-guidance`` does."""
    c = z_t.shape[1]
    if pred.shape[1] == 2 * c:
        pred = pred[:, :c]
    elif pred.shape[1] != c:
        raise ValueError(f"the model predicts {pred.shape[1]} channels for a {c}-channel sample (expected {c} or {2 * c})")
    if prediction_type == "epsilon":
        return pred
    a = _level(alpha_bar, z_t)
    if prediction_type == "v_prediction":
        return _sqrt(a) * pred + _sqrt(1 - a) * z_t
    if prediction_type == "sample":
        return (z_t - _sqrt(a) * pred) / _sqrt(1 - a)
    raise ValueError(f"prediction_type={prediction_type!r} is not one of {PREDICTION_TYPES}")


def ddim_sigma(a_from: Level, a_to: Level, eta: float, like: Tensor) -> Tensor:
    """DDIM's eta * beta between the level ``a_from`` (noisier) and ``a_to`` (the sigma of eq. 5)."""
    a_f, a_t = _level(a_from, like), _level(a_to, like)
    return float(eta) * _sqrt((1 - a_t) / (1 - a_f)) * _sqrt(1 - a_f / a_t)


def carried_noise(
    eps_hat: Float[Tensor, "B C h w"], a_to: Level, sigma: Level, fresh: Optional[Float[Tensor, "B C h w"]] = None
) -> Float[Tensor, "B C h w"]:
    """eps~ = (sqrt(1 - a_to - sigma^2) eps^ + sigma e) / sqrt(1 - a_to) (eq. 5); ``fresh`` is e ~ N(0, I),
    unused (and may be None) when sigma is 0."""
    a, s = _level(a_to, eps_hat), _level(sigma, eps_hat)
    e = torch.zeros_like(eps_hat) if fresh is None else fresh.to(eps_hat)
    return (_sqrt(1 - a - s**2) * eps_hat + s * e) / _sqrt(1 - a)
