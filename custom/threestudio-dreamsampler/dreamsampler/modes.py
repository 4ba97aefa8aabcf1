"""Guidance directions of the distillation modes, as functions of the noise predictions.

Every mode returns the direction ``d`` whose product with w(t) is the gradient on the latent
(threestudio's SDS convention, see ``distill.surrogate_loss``):

- ``sds`` / ``dreamsampler``: d = eps_w - eps~ with eps_w = CFG (main paper Alg. 1 / Alg. 2 line 7);
  they differ only in where t and eps~ come from (random vs. reverse schedule with carried noise).
- ``bridge`` (seed 002, "Extending Data Priors Across Domains with Diffusion Distillation"):
  d = w_b * (eps(y_tgt) - eps(y_src)), y_src = y_tgt + artifact descriptors (or a domain descriptor);
  with y_src = null this is exactly SDS's dominant CFG term w * (eps(c) - eps(null)).
- ``dds`` (Delta Denoising Score; main paper eq. 15): d = w * (eps(z_t, y_tgt) - eps(z^src_t, y_src)),
  where z^src_t is the source image noised with the same t and noise. With y_src = null and the
  same z_t, one step of size sqrt(1-a)/sqrt(a) from z0^(null) is Tweedie with CFG w (Theorem 1).
"""
from __future__ import annotations

from torch import Tensor

from .distill import cfg

MODES = ("dreamsampler", "sds", "bridge", "dds", "lmc")

ARTIFACT_DESCRIPTORS = (
    ", oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad structure, noisy, malformed"
)


def score_direction(eps_cond: Tensor, eps_uncond: Tensor, eps_tilde: Tensor, scale) -> Tensor:
    """SDS / DreamSampler: CFG prediction minus the noise that made z_t."""
    return cfg(eps_uncond, eps_cond, scale) - eps_tilde


def bridge_direction(eps_tgt: Tensor, eps_src: Tensor, scale) -> Tensor:
    """Source-prompt bridge: scale * (eps(y_tgt) - eps(y_src))."""
    return scale * (eps_tgt - eps_src)


def dds_direction(eps_tgt: Tensor, eps_src_on_source: Tensor, scale) -> Tensor:
    """DDS: scale * (eps(z_t, y_tgt) - eps(z^src_t, y_src)) (eq. 15 without the step size)."""
    return scale * (eps_tgt - eps_src_on_source)


def source_prompt(target: str, source: str | None = None, suffix: str = ARTIFACT_DESCRIPTORS) -> str:
    """y_src: a user-given source prompt, else the target prompt plus the descriptors."""
    if not target or not target.strip():
        raise ValueError("the bridge mode needs a non-empty target prompt (system.prompt_processor.prompt)")
    if source is not None and source.strip():
        return source
    return target + suffix
