"""Reverse sampling in latent space with an identity generator (the 2D tasks: main paper Alg. 2-3,
supp. Alg. 4), written over an eps-predictor callable so a UNet or a toy model can stand behind it.

Every task's step at index ``i`` (timestep ``t_i``, ``a_i = abar_{t_i}``) returns a :class:`Step`:
``z0``, the argmin z-bar of that step's latent problem (eq. 13 with g = identity), and ``eps``, the
noise carried to the next level. The next iterate is then (eq. 12, DDIM's update)

    z_{i+1} = sqrt(a_{i+1}) * z0 + sqrt(1 - a_{i+1}) * eps,

with ``a_N`` = ``final_alpha`` after the last step (diffusers' ``final_alpha_cumprod``: abar_0, or 1
when ``set_alpha_to_one``), so an identity generator with CFG reproduces diffusers' DDIM sampling.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

from .process import Latent, cfg, ddim_sigma, forward_noise, scalar_like, tweedie
from .schedules import ReverseSchedule

# eps_theta(z_t [B, C, h, w], t, text embeddings [B, L, D]) -> [B, C, h, w]
EpsFn = Callable[[Tensor, int, Tensor], Tensor]


class Step(NamedTuple):
    """One reverse step's result: the clean latent z-bar and the noise carried to the next level."""

    z0: Tensor
    eps: Tensor


def predict(eps_fn: EpsFn, z: Latent, t: int, embeddings: Sequence[Tensor]) -> List[Tensor]:
    """eps_theta(z, t, c) for each text embedding ``c`` ([1, L, D] or [B, L, D]) in one batched call."""
    k, b = len(embeddings), z.shape[0]
    emb = torch.cat([e.expand(b, *e.shape[1:]) for e in embeddings])
    out = eps_fn(torch.cat([z] * k), t, emb)
    return list(out.chunk(k))


def guided_step(eps_fn: EpsFn, z_t: Latent, t: int, alpha: float, null: Tensor, cond: Tensor, scale: float) -> Step:
    """Alg. 2 with g = identity solved exactly: eps^ = CFG (eq. 6), z-bar = Tweedie (eq. 14), eps^ carried."""
    e_null, e_cond = predict(eps_fn, z_t, t, [null, cond])
    eps = cfg(e_null, e_cond, scale)
    return Step(tweedie(z_t, eps, alpha), eps)


def ddim_invert(eps_fn: EpsFn, z0: Latent, schedule: ReverseSchedule, emb: Tensor) -> Latent:
    """Deterministic DDIM inversion with one embedding and no CFG (Alg. 3, line 2; supp. sec. 2.2).

    From level ``final_alpha`` upwards through the schedule's timesteps in ascending order, the
    model is evaluated at the target timestep on the current latent (diffusers' ``DDIMInverseScheduler``):
    ``z <- sqrt(a_t) * Tweedie(z, eps, a_prev) + sqrt(1 - a_t) * eps``.
    """
    z, a_cur = z0, schedule.final_alpha
    for i in reversed(range(len(schedule))):
        (eps,) = predict(eps_fn, z, schedule.t(i), [emb])
        z = forward_noise(tweedie(z, eps, a_cur), eps, schedule.alpha(i))
        a_cur = schedule.alpha(i)
    return z


def ddim_invert_noise(
    eps_fn: Callable[[Tensor, int], Tensor],
    z0: Latent,
    timesteps: Sequence[int],
    alphas_cumprod: Tensor,
    initial_alpha: float,
    eta: float = 0.0,
    randn_like: Callable[[Tensor], Tensor] = torch.randn_like,
) -> Tuple[Latent, Latent]:
    """SDI's DDIM inversion of a clean latent: ``(z_K, kappa)``, the latent at the last timestep and the
    noise estimate ``kappa = (z_K - sqrt(a_K) z0) / sqrt(1 - a_K)``.

    SDI (Lukoianov et al. 2024, "Score Distillation via Reparametrized DDIM", arXiv:2405.15891) replaces
    SDS's i.i.d. noise by the noise kappa^t_y(x0) found by inverting DDIM from the render x0 with the
    prompt y. With levels ``a_i = abar[t_i]`` (``initial_alpha`` for a negative timestep: diffusers'
    ``initial_alpha_cumprod``, 1 or abar_0 by ``set_alpha_to_one``), each step from ``t_i`` to the next,
    noisier ``t_{i+1}`` evaluates ``eps_fn`` (the guided prediction) at ``t_i`` and runs DDIM's update
    (Song et al. 2021, arXiv:2010.02502, eq. 12) upwards, with SDI's stochastic term added on top:

        eps     = eps_fn(z, t_i)
        z      <- sqrt(a_{i+1}) Tweedie(z, eps, a_i) + sqrt(1 - a_{i+1}) eps + eta sigma_i e
        sigma_i = sqrt((1 - a_i) / (1 - a_{i+1})) sqrt(1 - a_{i+1} / a_i)   (DDIM's sigma between the levels)

    ``e = randn_like(z)`` is drawn at every step whatever ``eta`` (as threestudio's
    ``stable-diffusion-sdi-guidance`` does, so both consume the same random numbers). With ``eta = 0``
    each step is diffusers' ``DDIMInverseScheduler.step`` given the prediction at ``t_i``.
    """
    def level(t: int) -> float:
        return float(initial_alpha) if int(t) < 0 else float(alphas_cumprod[int(t)])

    z = z0
    for t_from, t_to in zip(timesteps[:-1], timesteps[1:]):
        a_from, a_to = level(t_from), level(t_to)
        eps = eps_fn(z, int(t_from))
        e = randn_like(z)
        z = forward_noise(tweedie(z, eps, a_from), eps, a_to) + ddim_sigma(a_to, a_from, eta, z) * e
    a_k = scalar_like(level(timesteps[-1]), z)
    return z, (z - a_k.sqrt() * z0) / (1 - a_k).sqrt()


StepFn = Callable[[Tensor, int], Step]


def run(step_fn: StepFn, z_T: Latent, schedule: ReverseSchedule) -> Latent:
    """The reverse loop: z_{i+1} = forward_noise(step_fn(z_i, i)) from ``z_T`` down to level ``final_alpha``."""
    z = z_T
    for i in range(len(schedule)):
        out = step_fn(z, i)
        z = forward_noise(out.z0, out.eps, schedule.alpha_next(i))
    return z


def sample(eps_fn: EpsFn, z_T: Latent, schedule: ReverseSchedule, null: Tensor, cond: Tensor, scale: float) -> Latent:
    """Text-to-image: Alg. 2 with an identity generator from the initial latent ``z_T`` (= DDIM with CFG)."""
    return run(lambda z, i: guided_step(eps_fn, z, schedule.t(i), schedule.alpha(i), null, cond, scale), z_T, schedule)
