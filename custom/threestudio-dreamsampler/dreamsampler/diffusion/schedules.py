"""Timestep and gamma schedules over a run of optimizer steps.

DreamSampler follows the reverse-diffusion schedule (main paper Alg. 2, line 3: ``t <- i``) rather
than SDS's ``t ~ U[t_min, t_max]``; over a run of ``num_steps`` optimizer steps the timestep
decreases from ``max_step`` to ``min_step``. Shapes of the decrease:

- ``linear``: t_k = max - (max - min) * k / (n - 1)
- ``sqrt``:   t_k = min + (max - min) * (1 - sqrt(k / (n - 1)))        (HiFA's sqrt annealing)
- ``cosine``: t_k = min + (max - min) * (1 + cos(pi * k / (n - 1))) / 2

with ``n = ceil(num_steps / steps_per_timestep)`` distinct indices, so several optimizer steps can
share one timestep (the inner argmin of eq. 13 solved with more than one step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

TIMESTEP_SCHEDULES = ("linear", "sqrt", "cosine")
GAMMA_SCHEDULES = ("constant", "alpha", "scaled_alpha")


def decreasing_timesteps(
    num_steps: int,
    min_step: int,
    max_step: int,
    schedule: str = "linear",
    steps_per_timestep: int = 1,
) -> Tensor:
    """Descending integer timesteps for ``num_steps`` optimizer steps (see module docstring)."""
    if schedule not in TIMESTEP_SCHEDULES:
        raise ValueError(f"unknown timestep schedule {schedule!r}; choose one of {TIMESTEP_SCHEDULES}")
    if int(min_step) >= int(max_step):
        raise ValueError(f"min_step ({min_step}) must be smaller than max_step ({max_step})")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if steps_per_timestep < 1:
        raise ValueError(f"steps_per_timestep must be >= 1, got {steps_per_timestep}")
    n = math.ceil(num_steps / steps_per_timestep)
    frac = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    if schedule == "linear":
        level = 1.0 - frac
    elif schedule == "sqrt":
        level = 1.0 - frac.sqrt()
    else:
        level = 0.5 * (1.0 + torch.cos(math.pi * frac))
    t = min_step + (max_step - min_step) * level
    return t.round().long()


def inversion_timesteps(
    invert_to: int,
    n_steps: int,
    num_train_timesteps: int = 1000,
    delta: int = 0,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> list:
    """Ascending timesteps of SDI's DDIM inversion of a clean latent up to ``invert_to + delta``.

    SDI (Lukoianov et al. 2024, "Score Distillation via Reparametrized DDIM", arXiv:2405.15891) takes
    the noise of each update from a DDIM inversion of the render with ``n_steps`` inference steps: the
    grid of a DDIM sampler with ``n_steps`` steps (diffusers' ``leading`` or ``trailing`` spacing, with
    ``steps_offset``) below ``invert_to``, started one grid step below the first (a negative timestep:
    the clean level, see :func:`dreamsampler.diffusion.reverse.ddim_invert_noise`) and ended at
    ``min(invert_to + delta, T - 1)``; ``delta`` in ``[0, T / n_steps)`` is drawn by the caller (the
    threestudio implementation, ``stable-diffusion-sdi-guidance``, ends a random fraction of a grid step
    past t). When no grid timestep lies below ``invert_to`` the path is the start and the end alone.
    """
    import numpy as np

    T, n = int(num_train_timesteps), int(n_steps)
    if not 1 <= n <= T:
        raise ValueError(f"the number of inversion steps must lie in [1, {T}], got {n}")
    if spacing == "leading":
        ratio = T // n
        grid = (np.arange(0, n) * ratio).round().astype(np.int64) + int(steps_offset)
    elif spacing == "trailing":
        ratio = T / n
        grid = np.round(np.arange(T, 0, -ratio)[::-1]).astype(np.int64) - 1
    else:
        raise ValueError(f"timestep spacing {spacing!r} is not supported; choose 'leading' or 'trailing'")
    below = [int(x) for x in grid if x < int(invert_to)]
    start = int((below[0] if below else int(grid[0])) - ratio)
    return [start] + below + [min(int(invert_to) + int(delta), T - 1)]


def index_for_step(global_step: int, steps_per_timestep: int, num_indices: int) -> int:
    """The schedule index an optimizer step uses (clamped to the last index after the run)."""
    return min(max(int(global_step), 0) // int(steps_per_timestep), int(num_indices) - 1)


def gamma_schedule(kind: str, alpha_bar: Tensor, scale: float = 1.0) -> Tensor:
    """Weight gamma_t between distillation and regularization.

    ``constant``: gamma = scale; ``alpha``: gamma = abar_t (eq. 18, eq. 21);
    ``scaled_alpha``: gamma = scale * abar_t (editing, supp. sec. 2.2, C in [0.1, 0.3]).
    """
    if kind == "constant":
        return torch.full_like(alpha_bar, float(scale))
    if kind == "alpha":
        return alpha_bar.clone()
    if kind == "scaled_alpha":
        return float(scale) * alpha_bar
    raise ValueError(f"unknown gamma schedule {kind!r}; choose one of {GAMMA_SCHEDULES}")


@dataclass
class ReverseSchedule:
    """The one schedule object: descending timesteps ``t_0 >= ... >= t_{N-1}``, the model's abar table and
    the level after the last step (``final_alpha``; default abar_0, diffusers' ``set_alpha_to_one=False``).

    ``strict`` demands strictly descending timesteps (a reverse sampler's DDIM timesteps); the
    distillation schedules of :func:`decreasing_timesteps` may repeat a timestep.
    """

    alphas_cumprod: Tensor
    timesteps: Tensor
    final_alpha: Optional[float] = None
    strict: bool = True

    def __post_init__(self):
        self.timesteps = torch.as_tensor(self.timesteps, dtype=torch.long).flatten().cpu()
        self.alphas_cumprod = torch.as_tensor(self.alphas_cumprod).cpu()
        if self.timesteps.numel() < 1:
            raise ValueError("the reverse schedule needs at least one timestep (NFE >= 1)")
        steps = self.timesteps[1:] - self.timesteps[:-1]
        if (steps >= 0).any() if self.strict else (steps > 0).any():
            raise ValueError(f"timesteps must be {'strictly descending' if self.strict else 'descending (non-increasing)'}")
        if self.timesteps.min() < 0 or self.timesteps.max() >= self.alphas_cumprod.numel():
            raise ValueError(
                f"timesteps must lie in [0, {self.alphas_cumprod.numel() - 1}], "
                f"got [{int(self.timesteps.min())}, {int(self.timesteps.max())}]"
            )
        if self.final_alpha is None:
            self.final_alpha = float(self.alphas_cumprod[0])

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
