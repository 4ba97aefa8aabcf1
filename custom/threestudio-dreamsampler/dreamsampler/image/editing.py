"""Real image editing (main paper sec. 3.3, Alg. 3, Theorem 1, eq. 15-19; supp. sec. 2.2).

The source latent is DDIM-inverted with the null prompt and no CFG; then at every timestep

    eps^  = eps(z_t, null) + gamma_t * sum_i M_i * (eps(z_t, c_i) - eps(z_t, null))     (eq. 18-19)
    z-bar = (z_t - sqrt(1 - a_t) eps^) / sqrt(a_t)                     (argmin of eq. 17, Theorem 1)
    z_{t-1} = sqrt(a_{t-1}) z-bar + sqrt(1 - a_{t-1}) eps(z_t, null)   (the noise term is the null prediction)

with gamma_t = C * abar_t (supp. sec. 2.2, C in [0.1, 0.3]; 0.15 in the paper's tables). Eq. 19
writes the sum over (mask, prompt) pairs covering the image; the background (outside every mask)
is the pair (1 - sum_i M_i, null), whose guided prediction is eps(null) itself, hence the form above.
Without masks there is one prompt and M = 1; overlapping masks are normalized by ``regions.region_weights``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ..diffusion.process import Latent, tweedie
from ..diffusion.reverse import EpsFn, Step, ddim_invert, predict, run
from ..diffusion.schedules import ReverseSchedule, gamma_schedule
from .regions import region_weights


def localized_cfg(eps_null: Tensor, eps_targets: Sequence[Tensor], masks: Optional[Tensor], gamma: float) -> Tensor:
    """eps(null) + gamma * sum_i M_i (eps(c_i) - eps(null))  (eq. 18 and 19).

    ``masks``: ``[K, 1, h, w]`` (one per target, latent resolution) or None for a single global prompt.
    """
    weights = region_weights(masks, len(eps_targets))
    if weights is None:
        return eps_null + gamma * (eps_targets[0] - eps_null)
    delta = sum(w * (e - eps_null) for w, e in zip(weights.to(eps_null), eps_targets))
    return eps_null + gamma * delta


def edit_step(
    eps_fn: EpsFn,
    z_t: Latent,
    t: int,
    alpha: float,
    null: Tensor,
    targets: Sequence[Tensor],
    masks: Optional[Tensor],
    gamma: float,
) -> Step:
    """One step of Alg. 3: z-bar from the (localized) guided prediction, the null prediction carried."""
    e_null, *e_targets = predict(eps_fn, z_t, t, [null, *targets])
    eps = localized_cfg(e_null, e_targets, masks, gamma)
    return Step(tweedie(z_t, eps, alpha), e_null)


def edit_gamma(schedule: ReverseSchedule, i: int, scale: float) -> float:
    """gamma_t = C * abar_t (supp. sec. 2.2)."""
    return float(gamma_schedule("scaled_alpha", torch.tensor(schedule.alpha(i), dtype=torch.float64), scale))


def edit(
    eps_fn: EpsFn,
    z0: Latent,
    schedule: ReverseSchedule,
    null: Tensor,
    targets: Sequence[Tensor],
    masks: Optional[Tensor] = None,
    scale: float = 0.15,
) -> Latent:
    """Alg. 3 end to end: invert ``z0`` with the null prompt, then the reverse loop; returns the edited latent."""
    z_T = ddim_invert(eps_fn, z0, schedule, null)
    step = lambda z, i: edit_step(
        eps_fn, z, schedule.t(i), schedule.alpha(i), null, targets, masks, edit_gamma(schedule, i, scale)
    )
    return run(step, z_T, schedule)
