"""Distillation math shared by every guidance mode: CFG, Tweedie targets, SDS-form gradients.

- CFG (main paper eq. 6): eps_w = eps(null) + w * (eps(c) - eps(null)).
- Tweedie (eq. 14 / 16): z0^ = (z_t - sqrt(1 - a) eps) / sqrt(a).
- The DreamSampler objective ||z - z0^||^2 equals (1 - a) / a * ||eps~ - eps^||^2 (eq. 10-11), so
  its gradient is the SDS form ``w(t) * (eps^ - eps~)`` with w = sqrt((1 - a) / a) up to a factor 2;
  threestudio's weightings (``sds``: 1 - a, ``uniform``: 1, ``fantasia3d``: sqrt(a)(1 - a)) are kept
  so existing configs mean what they meant.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

WEIGHTING_STRATEGIES = ("sds", "uniform", "fantasia3d", "tweedie")


def cfg(eps_uncond: Tensor, eps_cond: Tensor, scale) -> Tensor:
    """Classifier-free guidance, eq. 6 (``scale`` may be a per-sample tensor)."""
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


def tweedie(z_t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """Posterior mean E[z0 | z_t], eq. 14 / 16 (``alpha_bar`` broadcastable, e.g. [B,1,1,1])."""
    return (z_t - torch.sqrt(1 - alpha_bar) * eps) / torch.sqrt(alpha_bar)


def weighting(strategy: str, alpha_bar: Tensor) -> Tensor:
    """w(t) of the SDS-form gradient (see module docstring)."""
    if strategy == "sds":
        return 1 - alpha_bar
    if strategy == "uniform":
        return torch.ones_like(alpha_bar)
    if strategy == "fantasia3d":
        return alpha_bar.sqrt() * (1 - alpha_bar)
    if strategy == "tweedie":
        return torch.sqrt((1 - alpha_bar) / alpha_bar)
    raise ValueError(f"unknown weighting_strategy {strategy!r}; choose one of {WEIGHTING_STRATEGIES}")


def surrogate_loss(x: Tensor, grad: Tensor) -> Tensor:
    """A loss whose gradient w.r.t. ``x`` is ``grad`` / batch (threestudio's reparameterization)."""
    target = (x - grad).detach()
    return 0.5 * F.mse_loss(x, target, reduction="sum") / x.shape[0]


def pixel_loss(x: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Pixel-space regularizer ||x - D(z0^)||^2 (supp. eq. 19; mean over pixels)."""
    diff = (x - target.detach()) ** 2
    if mask is not None:
        diff = diff * mask
    return diff.mean()
