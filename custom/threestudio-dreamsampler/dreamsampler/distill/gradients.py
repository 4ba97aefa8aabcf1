"""Weights and losses shared by every guidance mode (CFG and Tweedie live in ``diffusion.process``).

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
