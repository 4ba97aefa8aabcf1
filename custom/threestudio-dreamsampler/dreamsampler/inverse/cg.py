"""Conjugate gradient for the pixel-space data-consistency step (supp. eq. 13):

    x^_0(y) = argmin_x ||y - A x||^2 + lambda ||x - x_ref||^2
            <=>  (A^T A + lambda I) x = A^T y + lambda x_ref,

a symmetric positive-definite system for lambda > 0, solved matrix-free with the operator's exact
adjoint. Each batch element is its own system (inner products over all but the first dimension).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.dim() - 1)))


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Optional[Tensor] = None,
    iters: int = 10,
    tol: float = 1e-6,
) -> Tensor:
    """Solve ``apply(x) = b`` for a symmetric positive-definite ``apply``; stops after ``iters``
    iterations or when every residual norm is below ``tol * ||b||``."""
    if iters < 0:
        raise ValueError(f"CG iterations must be >= 0, got {iters}")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x)
    p = r.clone()
    rs = _dot(r, r)
    stop = (tol * _dot(b, b).sqrt()) ** 2
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        alpha = rs / _dot(p, ap).clamp_min(torch.finfo(b.dtype).tiny)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _dot(r, r)
        p = r + (rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rs = rs_new
    return x


def data_consistency_solve(op, y: Tensor, x_ref: Tensor, lam: float, iters: int = 10, tol: float = 1e-6) -> Tensor:
    """x^_0(y) of supp. eq. 13 by CG, started from ``x_ref`` (= D(z^_0|t(null)) in Alg. 4)."""
    if not lam > 0:
        raise ValueError(f"the data-consistency weight lambda must be > 0, got {lam}")
    apply = lambda x: op.adjoint(op(x)) + lam * x
    return conjugate_gradient(apply, op.adjoint(y) + lam * x_ref, x0=x_ref, iters=iters, tol=tol)
