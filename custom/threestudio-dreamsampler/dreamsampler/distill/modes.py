"""The guidance modes, as functions of a noise predictor, the noised latents and the weights.

Each mode returns ``(grad, eps_target)``: the gradient on the latent (threestudio's SDS convention,
``w(t) * d``, used through :func:`dreamsampler.distill.surrogate_loss`) and the prediction whose
Tweedie estimate is the mode's target z0^ (what DreamSampler carries to the next step).
``eps_fn(z, t, emb)`` takes ``[n, C, h, w]`` latents, ``[n]`` timesteps and ``[n, L, D]`` embeddings;
every mode makes one batched call. For ``bridge``, ``dds`` and ``lmc`` the guidance
(``dreamsampler-guidance``) calls these functions. For ``sds`` and ``dreamsampler`` it composes the
same two steps itself: its own CFG prediction (``predict_noise``: eq. 6, or Perp-Neg when the prompt
processor asks for it), then :func:`sds_gradient`; ``benchmarks/compare.py`` calls
:func:`score_distillation` for them (and :func:`guided_prediction` for SDI's), the same formula without Perp-Neg.

- ``sds`` / ``dreamsampler``: d = eps_w - eps~ with eps_w = CFG (main paper Alg. 1 / Alg. 2 line 7);
  they differ only in where t and eps~ come from (random vs. reverse schedule with carried noise).
- ``bridge`` (McAllister et al. 2024, "Rethinking Score Distillation as a Bridge Between Image
  Distributions", arXiv:2406.09417; also McAllister's thesis "Extending Data Priors Across Domains
  with Diffusion Distillation", UC Berkeley EECS-2024-177):
  d = w_b * (eps(y_tgt) - eps(y_src)), y_src = y_tgt + artifact descriptors (or a domain descriptor);
  with y_src = null this is exactly SDS's dominant CFG term w * (eps(c) - eps(null)).
- ``dds`` (Delta Denoising Score; main paper eq. 15): d = w * (eps(z_t, y_tgt) - eps(z^src_t, y_src)),
  where z^src_t is the source image noised with the same t and noise. With y_src = null and the
  same z_t, one step of size sqrt(1-a)/sqrt(a) from z0^(null) is Tweedie with CFG w (Theorem 1).
- ``lmc`` (LMC-SDS: Alldieck, Kolotouros, Sminchisescu 2024, arXiv:2401.05293): L_cond + L_lmc with
  the learned corrective k_psi (see :mod:`dreamsampler.distill.lmc`).
- ``sdi`` (Score Distillation via Inversion: Lukoianov et al. 2024, "Score Distillation via
  Reparametrized DDIM", arXiv:2405.15891): the noised latent z_t is not forward-noised with i.i.d. noise
  but found by a DDIM inversion of the render conditioned on the prompt (its noise kappa^t_y,
  :func:`dreamsampler.diffusion.reverse.ddim_invert_noise`, on the path of
  :func:`dreamsampler.diffusion.schedules.inversion_timesteps`); d = z - Tweedie(z_t, eps_w, abar_t)
  (:func:`sdi_gradient`), the render minus its one-step denoised target, without w(t). The guidance
  composes it (its inversion and target use its own ``predict_noise``, so Perp-Neg too), as
  threestudio's ``stable-diffusion-sdi-guidance`` does, whose loss 0.5 * mean((z - target)^2) / B it returns.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from ..diffusion.process import cfg, tweedie
from .lmc import Corrective, lmc_gradient

MODES = ("dreamsampler", "sds", "bridge", "dds", "lmc", "sdi")

ARTIFACT_DESCRIPTORS = (
    ", oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad structure, noisy, malformed"
)

EpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]
Latent = Float[Tensor, "B C h w"]
Embedding = Float[Tensor, "B L D"]


def batched_predictions(eps_fn: EpsFn, latents: Sequence[Tensor], t: Tensor, embeddings: Sequence[Tensor]) -> Tuple[Tensor, ...]:
    """eps_fn on each (latent, embedding) pair, in one call; ``t`` ``[B]`` is shared."""
    out = eps_fn(torch.cat(list(latents)), torch.cat([t] * len(latents)), torch.cat(list(embeddings)))
    return out.chunk(len(latents))


def sds_gradient(eps_hat: Latent, eps_tilde: Latent, weight) -> Latent:
    """w(t) (eps^ - eps~): SDS (Alg. 1) and DreamSampler (Alg. 2, line 7; eq. 10-11)."""
    return weight * (eps_hat - eps_tilde)


def sdi_gradient(z: Latent, z_t: Latent, eps_hat: Latent, alpha_bar) -> Latent:
    """``sdi``: z - Tweedie(z_t, eps^, abar_t), z_t the inverted latent (see the module docstring)."""
    return z - tweedie(z_t, eps_hat, alpha_bar)


def guided_prediction(eps_fn: EpsFn, z_t: Latent, t: Tensor, cond: Embedding, uncond: Embedding, scale) -> Latent:
    """eps^ = CFG (eq. 6) of one batched call: eps(null) + scale (eps(c) - eps(null))."""
    eps_c, eps_u = batched_predictions(eps_fn, [z_t, z_t], t, [cond, uncond])
    return cfg(eps_u, eps_c, scale)


def score_distillation(
    eps_fn: EpsFn, z_t: Latent, t: Tensor, cond: Embedding, uncond: Embedding, eps_tilde: Latent, scale, weight
) -> Tuple[Latent, Latent]:
    """``sds`` / ``dreamsampler``: eps^ = :func:`guided_prediction`, gradient w (eps^ - eps~)."""
    eps_hat = guided_prediction(eps_fn, z_t, t, cond, uncond, scale)
    return sds_gradient(eps_hat, eps_tilde, weight), eps_hat


def bridge_distillation(
    eps_fn: EpsFn, z_t: Latent, t: Tensor, target: Embedding, source: Embedding, scale, weight
) -> Tuple[Latent, Latent]:
    """``bridge``: w * scale * (eps(z_t, y_tgt) - eps(z_t, y_src))."""
    eps_tgt, eps_src = batched_predictions(eps_fn, [z_t, z_t], t, [target, source])
    return weight * scale * (eps_tgt - eps_src), eps_tgt


def dds_distillation(
    eps_fn: EpsFn, z_t: Latent, z_src_t: Latent, t: Tensor, target: Embedding, source: Embedding, scale, weight
) -> Tuple[Latent, Latent]:
    """``dds``: w * scale * (eps(z_t, y_tgt) - eps(z^src_t, y_src)) (eq. 15 without the step size)."""
    eps_tgt, eps_src = batched_predictions(eps_fn, [z_t, z_src_t], t, [target, source])
    return weight * scale * (eps_tgt - eps_src), eps_tgt


def lmc_distillation(
    eps_fn: EpsFn,
    corrective: Corrective,
    z: Latent,
    z_t: Latent,
    t: Tensor,
    alpha_bar,
    cond: Embedding,
    uncond: Embedding,
    scale,
    weight,
    manifold_weight=None,
    z_t_fixed: Optional[Latent] = None,
    normalize_target: bool = True,
) -> Tuple[Latent, Latent]:
    """``lmc``: L_cond + L_lmc (LMC-SDS eq. 6c and 9); with ``z_t_fixed`` (the fixed-noise option)
    the unconditional prediction on it is made in the same batched call and used inside L_lmc only."""
    if z_t_fixed is None:
        eps_c, eps_u = batched_predictions(eps_fn, [z_t, z_t], t, [cond, uncond])
        fixed = {}
    else:
        eps_c, eps_u, eps_u_fixed = batched_predictions(eps_fn, [z_t, z_t, z_t_fixed], t, [cond, uncond, uncond])
        fixed = dict(z_t_fixed=z_t_fixed, eps_uncond_fixed=eps_u_fixed)
    grad = lmc_gradient(
        corrective, z.detach(), t, alpha_bar, z_t, eps_c, eps_u, scale, weight,
        normalize_target=normalize_target, manifold_weight=manifold_weight, **fixed,
    )
    return grad, cfg(eps_u, eps_c, scale)


def source_prompt(target: str, source: str | None = None, suffix: str = ARTIFACT_DESCRIPTORS) -> str:
    """y_src: a user-given source prompt (an empty or blank one: the null prompt, so the bridge is the
    CFG direction eps(y_tgt) - eps(null)), else the target prompt plus the descriptors."""
    if not target or not target.strip():
        raise ValueError("the bridge mode needs a non-empty target prompt (system.prompt_processor.prompt)")
    if source is not None:
        return source.strip()
    return target + suffix
