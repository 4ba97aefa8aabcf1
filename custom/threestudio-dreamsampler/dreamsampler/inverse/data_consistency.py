"""Distillation with data consistency for inverse problems (supp. eq. 18; main paper eq. 21 has the
same form for SVGs):

    min_psi (1 - gamma) l_SDS ||E(g(psi)) - z0^_t(c_y)||^2 + gamma l_DC ||y - A g(psi)||^2,   gamma = abar_t

plus, for NeRFs, pixel distillation ||g(psi) - D(z0^_t(c_y))||^2 (eq. 19). ``A`` is applied to the
generator's output exactly as it produced the data ``y`` (its noise-free forward map).
Both squared norms use one reduction, 0.5 * sum / batch: ``dreamsampler-guidance`` with
``weighting_strategy=tweedie`` returns the first as ``loss_sds`` (its gradient in the latent is
E(g) - z0^), and ``data_consistency`` below the second (its gradient in x is A^T (A x - y) / B).
"""
from __future__ import annotations

from typing import Callable, Tuple

from torch import Tensor


def data_consistency(y: Tensor, A: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """0.5 ||y - A x||^2 / B (eq. 18's data term); ``x`` and ``y`` are ``[B, C, H, W]`` (sizes as A maps them).
    Computed in float32 whatever the render's dtype (a float16 sum over a 512x512 image overflows at 65504)."""
    Ax = A(x.float())
    if Ax.shape != y.shape:
        raise ValueError(f"A(render) has shape {tuple(Ax.shape)} but the measurement has {tuple(y.shape)}")
    return 0.5 * ((y.float() - Ax.float()) ** 2).sum() / y.shape[0]


def eq18_weights(gamma: float, lambda_sds: float, lambda_dc: float) -> Tuple[float, float]:
    """The weights ((1 - gamma) l_SDS, gamma l_DC) of the two terms of eq. 18."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    return (1.0 - gamma) * lambda_sds, gamma * lambda_dc
