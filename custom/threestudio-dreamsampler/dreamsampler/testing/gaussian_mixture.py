"""A ground-truth "diffusion model": an isotropic Gaussian mixture with exact eps(z_t, t, c).

Under the forward process z_t = sqrt(a) z_0 + sqrt(1 - a) e, a mixture sum_k pi_k N(mu_k, s_k^2 I)
stays a mixture with means sqrt(a) mu_k and variances a s_k^2 + 1 - a, so the score and hence the
optimal noise prediction eps(z_t) = -sqrt(1 - a) grad log p_t(z_t) are exact. A condition ``c`` is a
subset of components (the class), so CFG has an exact conditional and unconditional branch.
Used by tests and ``benchmarks/compare.py`` to turn "samples match the true distribution" and
"SDS collapses, DreamSampler does not" into numbers. Written here because no registry package
provides diffusion-noised mixtures with exact noise predictions.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


class GaussianMixture:
    def __init__(self, means: Tensor, stds: Tensor, weights: Optional[Tensor] = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        k = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()

    def _mask(self, cond: Optional[Sequence[int]]) -> Tensor:
        m = torch.zeros_like(self.weights, dtype=torch.bool)
        if cond is None:
            m[:] = True
        else:
            m[list(cond)] = True
        return m

    def embedding(self, cond: Optional[Sequence[int]], n: int) -> Tensor:
        """The condition as a per-sample "text embedding" ``[n, K]`` (1 on the allowed modes), for :meth:`eps_fn`."""
        return self._mask(cond).to(torch.float64).expand(n, -1)

    def eps_fn(self, alphas_cumprod: Tensor):
        """``eps_fn(z, t, emb)`` in the guidance modes' signature (``dreamsampler.distill.modes``): ``t`` ``[N]``
        (one timestep), ``emb`` ``[N, K]`` from :meth:`embedding`."""

        def eps_fn(z: Tensor, t: Tensor, emb: Tensor) -> Tensor:
            if not bool((t == t[0]).all()):
                raise ValueError("the mixture's eps_fn takes one timestep per call")
            return self.eps(z, alphas_cumprod[t[0]], emb > 0)

        return eps_fn

    def eps(self, z_t: Tensor, alpha_bar, cond=None) -> Tensor:
        """Exact eps(z_t, t, c) = -sqrt(1 - a) * grad log p_t(z_t | c); z_t: [N, D]; ``cond`` a list of
        allowed modes, or a per-sample ``[N, K]`` boolean mask."""
        a = torch.as_tensor(alpha_bar, dtype=torch.float64)
        z = z_t.to(torch.float64)
        mu = a.sqrt() * self.means  # [K, D]
        var = a * self.stds**2 + (1 - a)  # [K]
        d = z.shape[-1]
        diff = z[:, None, :] - mu[None]  # [N, K, D]
        logw = self.weights.log() - 0.5 * d * var.log() - 0.5 * (diff**2).sum(-1) / var
        allowed = cond if isinstance(cond, Tensor) else self._mask(cond)[None]
        logw = logw.masked_fill(~allowed, float("-inf"))
        resp = torch.softmax(logw, dim=1)  # [N, K]
        score = -(resp[..., None] * diff / var[None, :, None]).sum(1)
        return (-(1 - a).sqrt() * score).to(z_t.dtype)

    def sample(self, n: int, generator: Optional[torch.Generator] = None, cond=None) -> Tensor:
        w = self.weights * self._mask(cond)
        idx = torch.multinomial(w / w.sum(), n, replacement=True, generator=generator)
        e = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[idx] + self.stds[idx, None] * e

    def assign(self, x: Tensor) -> Tensor:
        """Index of the nearest mode for each sample."""
        return torch.cdist(x.to(torch.float64), self.means).argmin(1)

    def mode_stats(self, x: Tensor, cond=None, min_share: float = 0.2):
        """(modes covered, mean within-mode std / true std) for the modes allowed by ``cond``.

        A mode counts as covered when it receives at least ``min_share`` of its expected share.
        """
        allowed = self._mask(cond).nonzero().flatten().tolist()
        w = self.weights[allowed] / self.weights[allowed].sum()
        a = self.assign(x)
        covered, ratios = 0, []
        for k, wk in zip(allowed, w):
            pts = x[a == k].to(torch.float64)
            if pts.shape[0] >= min_share * wk * x.shape[0]:
                covered += 1
            if pts.shape[0] > 1:
                ratios.append(float(pts.std(0).mean() / self.stds[k]))
        return covered, (sum(ratios) / len(ratios) if ratios else 0.0)


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between equal-size sample sets (sorted projections)."""
    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    dirs = torch.randn(d, n_proj, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = (x.to(torch.float64) @ dirs).sort(0)
    py, _ = (y.to(torch.float64) @ dirs).sort(0)
    return float((px - py).abs().mean())
