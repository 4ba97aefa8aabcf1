"""DreamSampler core: pure PyTorch (no threestudio imports).

The contract other code relies on is :class:`DreamSampler` (see ``sampler.py``).
"""
from .sampler import DreamSampler
from .schedules import decreasing_timesteps, gamma_schedule, index_for_step

__all__ = ["DreamSampler", "decreasing_timesteps", "gamma_schedule", "index_for_step"]
