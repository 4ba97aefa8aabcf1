"""Text-guided inverse problems in latent space: inpainting (main paper eq. 20, supp. sec. 2.3,
Alg. 4, eq. 10-17) and, with the same step and no mask, restoration of blurred / down-sampled images.

At a timestep t with a = abar_t, in the set Gamma = {t : t mod 3 == 0, t <= 170}:

    z^(null), z^(c_i) = Tweedie with eps(z_t, null), eps(z_t, c_i)                 (eq. 16)
    x^_0(y) = argmin_x ||y - A x||^2 + lambda ||x - D(z^(null))||^2   by CG          (eq. 13)
    z^(y)   = E(x^_0(y))
    z-bar   = a z^(c) + (1 - a)^2 z^(null) + a (1 - a) z^(y)    inside mask M        (eq. 15, 17)
            = (1 - a) z^(null) + a z^(y)                         outside             (eq. 17)

(the argmin of eq. 14 / 16 with weights gamma_1 = a, gamma_2 = (1 - a)^2, gamma_3 = a (1 - a)).
Elsewhere a DPS step: z_{t-1} = z'_{t-1} - rho_t grad_{z_t} ||A(D(z^_0|t(null))) - y||, with
z'_{t-1} the DDIM update of z^(null) and rho_t = s * sqrt(abar_{t-1}) (the authors' released code
uses s = 1), i.e. z-bar = z^(null) - s * grad. Both branches carry
eps~ = (sqrt(1 - abar_{t-1} - sigma^2) eps(null) + sigma e) / sqrt(1 - abar_{t-1}) with
sigma = eta beta_t = sqrt(abar_t) sqrt(1 - abar_{t-1}) (supp. sec. 2.3); the last step is
deterministic (sigma = 0), so the output is a clean latent plus the model's own noise estimate.
Several masks carry distinct prompts (localized distillation, eq. 19): inside mask i, z^(c_i).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from ..diffusion.process import Latent, carried_noise, cfg, tweedie
from ..diffusion.reverse import EpsFn, Step, ddim_invert, predict, run
from ..diffusion.schedules import ReverseSchedule
from ..inverse.cg import data_consistency_solve
from ..inverse.operators import Operator
from .regions import region_weights

GAMMA_PERIOD, GAMMA_T_MAX = 3, 170


def in_gamma_set(t: int, period: int = GAMMA_PERIOD, t_max: int = GAMMA_T_MAX) -> bool:
    """t in Gamma = {t : t mod 3 == 0, t <= 170} (supp. sec. 2.3): closed-form steps; DPS otherwise."""
    return int(t) % int(period) == 0 and int(t) <= int(t_max)


def closed_form_weights(a):
    """(gamma_1, gamma_2, gamma_3) of eq. 14 that give eq. 15: (a, (1 - a)^2, a (1 - a)); they sum to 1."""
    return a, (1 - a) ** 2, a * (1 - a)


def closed_form(z_tgt: Latent, z_null: Latent, z_y: Latent, a) -> Latent:
    """Eq. 15: argmin of eq. 14 = a z^(c) + (1 - a)^2 z^(null) + a (1 - a) z^(y)."""
    g1, g2, g3 = closed_form_weights(a)
    return g1 * z_tgt + g2 * z_null + g3 * z_y


def closed_form_outside(z_null: Latent, z_y: Latent, a) -> Latent:
    """Eq. 17 outside the mask: argmin of eq. 16 where M = 0, (1 - a) z^(null) + a z^(y)."""
    return (1 - a) * z_null + a * z_y


def masked_closed_form(z_tgts: Sequence[Tensor], z_null: Latent, z_y: Latent, masks: Optional[Tensor], a) -> Latent:
    """Eq. 17 with one or several masks ``[K, 1, h, w]`` (eq. 15 inside mask i with z^(c_i)), or eq. 15
    everywhere when ``masks`` is None (a single prompt). Overlapping masks are normalized as in eq. 19:
    with w_i = M_i / max(1, sum_j M_j),  z-bar = z_out + a * sum_i w_i (z^(c_i) - z_out)."""
    weights = region_weights(masks, len(z_tgts))
    if weights is None:
        return closed_form(z_tgts[0], z_null, z_y, a)
    z_out = closed_form_outside(z_null, z_y, a)
    return z_out + a * sum(w * (z - z_out) for w, z in zip(weights.to(z_out), z_tgts))


def stochastic_sigma(a_t: float, a_next: float) -> float:
    """eta beta_t = sqrt(abar_t) sqrt(1 - abar_{t-1}) (supp. sec. 2.3)."""
    return (a_t * (1.0 - a_next)) ** 0.5


def alg4_carried_noise(e_null: Latent, a: float, a_next: float, noise: Optional[Latent]) -> Latent:
    """Eq. 5 with Alg. 4's sigma; deterministic (sigma = 0, eps~ = eps(null)) when ``noise`` is None."""
    return carried_noise(e_null, a_next, stochastic_sigma(a, a_next) if noise is not None else 0.0, noise)


@dataclass
class InverseProblem:
    """Everything Alg. 4 needs besides the iterate. ``decode``/``encode`` map latents to images in the
    measurement's range ([-1, 1]); ``masks`` ``[K, 1, h, w]`` at latent resolution, one per target
    prompt (None: one prompt everywhere, i.e. restoration)."""

    eps_fn: EpsFn
    decode: Callable[[Tensor], Tensor]
    encode: Callable[[Tensor], Tensor]
    op: Operator
    y: Tensor
    null: Tensor
    targets: List[Tensor]
    masks: Optional[Tensor] = None
    lam: float = 1e-4
    cg_iters: int = 10
    dps_scale: float = 1.0
    guidance_scale: float = 1.0  # CFG scale inside z^(c) (1: the plain conditional Tweedie of eq. 16)
    gamma_period: int = GAMMA_PERIOD
    gamma_t_max: int = GAMMA_T_MAX
    gamma_on_step_index: bool = False  # test Gamma on the step index instead of t (the authors' code)


def closed_form_step(p: InverseProblem, z_t: Latent, t: int, a: float, a_next: float, noise: Optional[Latent]) -> Step:
    """t in Gamma: CG data consistency (eq. 13) and the closed forms of eq. 15 / 17."""
    with torch.no_grad():
        e_null, *e_tgts = predict(p.eps_fn, z_t, t, [p.null, *p.targets])
        z_null = tweedie(z_t, e_null, a)
        z_tgts = [tweedie(z_t, cfg(e_null, e, p.guidance_scale), a) for e in e_tgts]
        x_y = data_consistency_solve(p.op, p.y, p.decode(z_null), p.lam, p.cg_iters)
        z_bar = masked_closed_form(z_tgts, z_null, p.encode(x_y), p.masks, a)
    return Step(z_bar, alg4_carried_noise(e_null, a, a_next, noise))


def dps_step(p: InverseProblem, z_t: Latent, t: int, a: float, a_next: float, noise: Optional[Latent]) -> Step:
    """t not in Gamma: z-bar = z^(null) - s * grad_{z_t} ||A(D(z^_0|t(null))) - y|| (DPS, rho_t = s sqrt(abar_{t-1}))."""
    with torch.enable_grad():
        z = z_t.detach().requires_grad_(True)
        (e_null,) = predict(p.eps_fn, z, t, [p.null])
        z_null = tweedie(z, e_null, a)
        residual = (p.op(p.decode(z_null)) - p.y).flatten(1).norm(dim=1).sum()
        (grad,) = torch.autograd.grad(residual, z)
    e_null = e_null.detach()
    z_bar = z_null.detach() - p.dps_scale * grad
    return Step(z_bar, alg4_carried_noise(e_null, a, a_next, noise))


def inverse_step(p: InverseProblem, schedule: ReverseSchedule, z_t: Latent, i: int, noise: Optional[Latent]) -> Step:
    """Step ``i`` of Alg. 4 (``noise``: the fresh e ~ N(0, I), None for a deterministic step)."""
    t, a, a_next = schedule.t(i), schedule.alpha(i), schedule.alpha_next(i)
    closed = in_gamma_set(i if p.gamma_on_step_index else t, p.gamma_period, p.gamma_t_max)
    return (closed_form_step if closed else dps_step)(p, z_t, t, a, a_next, noise)


def initial_latent(p: InverseProblem, schedule: ReverseSchedule) -> Tensor:
    """z_T = Inversion(E(x_init)) with the null prompt (Alg. 4, lines 1-2), x_init = argmin
    ||y - A x||^2 + lambda ||x||^2 (for a mask: the measurement itself, up to 1 / (1 + lambda))."""
    with torch.no_grad():
        shape = (*p.y.shape[:-2], *p.op.input_size(*p.y.shape[-2:]))
        x_init = data_consistency_solve(p.op, p.y, torch.zeros(shape, dtype=p.y.dtype, device=p.y.device), p.lam, p.cg_iters)
        return ddim_invert(p.eps_fn, p.encode(x_init), schedule, p.null)


def fresh_noise(seed: int, i: int, schedule: ReverseSchedule, like: Tensor) -> Optional[Tensor]:
    """e ~ N(0, I) of Alg. 4's step ``i``, from a generator seeded by (seed, i): the one seeding rule of
    :func:`solve`, the image system and ``scripts/table2_inpainting.py`` (a resumed run repeats it).
    None at the last step, which is deterministic."""
    if i == len(schedule) - 1:
        return None
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(i) + 1)
    return torch.randn(like.shape, generator=gen).to(like)


def solve(p: InverseProblem, z_T: Latent, schedule: ReverseSchedule, seed: int = 0) -> Latent:
    """Alg. 4's reverse loop from ``z_T``; the fresh noise of step i is :func:`fresh_noise` (seed, i)."""
    return run(lambda z, i: inverse_step(p, schedule, z, i, fresh_noise(seed, i, schedule, z)), z_T, schedule)
