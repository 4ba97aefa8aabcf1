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

from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Sequence

import torch
from torch import Tensor

from .distill import cfg, tweedie

# eps_theta(z_t [B, C, h, w], t, text embeddings [B, L, D]) -> [B, C, h, w]
EpsFn = Callable[[Tensor, int, Tensor], Tensor]


class Step(NamedTuple):
    """One reverse step's result: the clean latent z-bar and the noise carried to the next level."""

    z0: Tensor
    eps: Tensor


@dataclass
class ReverseSchedule:
    """Descending timesteps ``t_0 > ... > t_{N-1}``, the model's abar table and the level after the last step."""

    alphas_cumprod: Tensor
    timesteps: Tensor
    final_alpha: float

    def __post_init__(self):
        self.timesteps = torch.as_tensor(self.timesteps, dtype=torch.long).flatten().cpu()
        self.alphas_cumprod = torch.as_tensor(self.alphas_cumprod).cpu()
        if self.timesteps.numel() < 1:
            raise ValueError("the reverse schedule needs at least one timestep (NFE >= 1)")
        if (self.timesteps[1:] >= self.timesteps[:-1]).any():
            raise ValueError("reverse-schedule timesteps must be strictly descending")

    @classmethod
    def from_scheduler(cls, scheduler, nfe: int) -> "ReverseSchedule":
        """The DDIM timesteps a diffusers ``DDIMScheduler`` uses for ``nfe`` steps (it is left set to them)."""
        if int(nfe) < 1:
            raise ValueError(f"the number of function evaluations (NFE) must be >= 1, got {nfe}")
        scheduler.set_timesteps(int(nfe))
        return cls(scheduler.alphas_cumprod, scheduler.timesteps.clone(), float(scheduler.final_alpha_cumprod))

    def __len__(self) -> int:
        return int(self.timesteps.numel())

    def t(self, i: int) -> int:
        return int(self.timesteps[i])

    def alpha(self, i: int) -> float:
        """abar at t_i; ``i = N`` is the level after the last step."""
        return float(self.alphas_cumprod[self.timesteps[i]]) if i < len(self) else float(self.final_alpha)

    def alpha_next(self, i: int) -> float:
        return self.alpha(i + 1)


def renoise(z0: Tensor, eps: Tensor, alpha_next: float) -> Tensor:
    """z_{t-1} = sqrt(abar_{t-1}) z0 + sqrt(1 - abar_{t-1}) eps  (eq. 12; Alg. 3, last line)."""
    a = torch.as_tensor(alpha_next, dtype=z0.dtype, device=z0.device)
    return a.sqrt() * z0 + (1 - a).sqrt() * eps


def predict(eps_fn: EpsFn, z: Tensor, t: int, embeddings: Sequence[Tensor]) -> List[Tensor]:
    """eps_theta(z, t, c) for each text embedding ``c`` ([1, L, D] or [B, L, D]) in one batched call."""
    k, b = len(embeddings), z.shape[0]
    emb = torch.cat([e.expand(b, *e.shape[1:]) for e in embeddings])
    out = eps_fn(torch.cat([z] * k), t, emb)
    return list(out.chunk(k))


def guided_step(eps_fn: EpsFn, z_t: Tensor, t: int, alpha: float, null: Tensor, cond: Tensor, scale: float) -> Step:
    """Alg. 2 with g = identity solved exactly: eps^ = CFG (eq. 6), z-bar = Tweedie (eq. 14), eps^ carried."""
    e_null, e_cond = predict(eps_fn, z_t, t, [null, cond])
    eps = cfg(e_null, e_cond, scale)
    return Step(tweedie(z_t, eps, scalar_like(alpha, z_t)), eps)


def ddim_invert(eps_fn: EpsFn, z0: Tensor, schedule: ReverseSchedule, emb: Tensor) -> Tensor:
    """Deterministic DDIM inversion with one embedding and no CFG (Alg. 3, line 2; supp. sec. 2.2).

    From level ``final_alpha`` upwards through the schedule's timesteps in ascending order, the
    model is evaluated at the target timestep on the current latent (diffusers' ``DDIMInverseScheduler``):
    ``z <- sqrt(a_t) * Tweedie(z, eps, a_prev) + sqrt(1 - a_t) * eps``.
    """
    z, a_cur = z0, schedule.final_alpha
    for i in reversed(range(len(schedule))):
        (eps,) = predict(eps_fn, z, schedule.t(i), [emb])
        z = renoise(tweedie(z, eps, scalar_like(a_cur, z)), eps, schedule.alpha(i))
        a_cur = schedule.alpha(i)
    return z


StepFn = Callable[[Tensor, int], Step]


def run(step_fn: StepFn, z_T: Tensor, schedule: ReverseSchedule) -> Tensor:
    """The reverse loop: z_{i+1} = renoise(step_fn(z_i, i)) from ``z_T`` down to level ``final_alpha``."""
    z = z_T
    for i in range(len(schedule)):
        out = step_fn(z, i)
        z = renoise(out.z0, out.eps, schedule.alpha_next(i))
    return z


def sample(eps_fn: EpsFn, z_T: Tensor, schedule: ReverseSchedule, null: Tensor, cond: Tensor, scale: float) -> Tensor:
    """Text-to-image: Alg. 2 with an identity generator from the initial latent ``z_T`` (= DDIM with CFG)."""
    return run(lambda z, i: guided_step(eps_fn, z, schedule.t(i), schedule.alpha(i), null, cond, scale), z_T, schedule)


def scalar_like(alpha: float, like: Tensor) -> Tensor:
    """A Python float as a 0-d tensor on ``like``'s device and dtype."""
    return torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
