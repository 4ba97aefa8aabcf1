"""The reverse process: its formulas (``process``), schedules, the carried-noise sampler
(``sampler.DreamSampler``), identity-generator reverse sampling (``reverse``) and the Stable Diffusion
callables the 2D tasks use (``latent_model``)."""
from .process import carried_noise, cfg, ddim_sigma, forward_noise, perp_neg_cfg, scalar_like, tweedie
from .sampler import DreamSampler
from .schedules import ReverseSchedule, decreasing_timesteps, gamma_schedule, index_for_step
