"""Settings of the eq. 18-19 prior (supp. sec. 5.1) for a given model, operator and render size, by rules that
carry from one model to another instead of values picked on a scene.

- **Where the reverse schedule starts** (SDEdit's rule, Meng et al. 2022, arXiv:2108.01073: noise the
  estimate until its error is swamped). The warm-up leaves the data-consistency estimate; what it gets wrong is
  what the operator's null space hides. The schedule starts at the first t whose latent noise-to-signal ratio
  ``sqrt((1 - abar_t) / abar_t)`` reaches the relative latent error of that estimate, measured on the model's own
  samples put through the operator at the run's render size (:func:`dc_latent_error`): a mild blur starts near
  t = 0 and changes little, x8 down-sampling starts high.
- **CFG**: the scale at which the model's own samples are best (its model card; 7.5 for Stable Diffusion).
- **Loss weights**: the paper's weights hold for Stable Diffusion at 512 px (latent 4x64x64, renders
  3x512x512). At another resolution each term keeps its gradient per rendered pixel (:func:`per_pixel_weights`):
  ``lambda_sds`` scales with latent elements per rendered element, ``lambda_pixel`` (a mean over pixels) with the
  rendered elements.

Written here because no library states a start time or weights for a given operator; the data-consistency
estimate is the core's own CG solve (``inverse.cg``).
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from .cg import data_consistency_solve
from .operators import Operator

# Stable Diffusion at 512 px, where the paper's eq. 18-19 weights hold (lambda_sds, lambda_pixel of the shipped config)
PAPER_LATENT_ELEMENTS = 4 * 64 * 64
PAPER_RENDER_ELEMENTS = 3 * 512 * 512
PAPER_LAMBDA_SDS = 1.0
PAPER_LAMBDA_PIXEL = 3932.0
DC_WEIGHT = 1e-3  # lambda of the CG solve: a least-squares estimate (x_ref = 0 barely pulls)
DC_ITERS = 50


def dc_estimate(images: Tensor, operator: Operator) -> Tensor:
    """The data-consistency estimate of ``images`` ``[B, 3, H, W]`` in [0, 1] from their measurement A(x):
    supp. eq. 13 with x_ref = 0 and a small lambda (``DC_WEIGHT``), clamped to [0, 1]."""
    x = images * 2 - 1
    with torch.no_grad():
        y = operator(x)
        estimate = data_consistency_solve(operator, y, torch.zeros_like(x), DC_WEIGHT, iters=DC_ITERS)
    return (estimate / 2 + 0.5).clamp(0, 1)


def dc_latent_error(encode: Callable[[Tensor], Tensor], samples: Tensor, operator: Operator, render_size: int,
                    model_size: int) -> float:
    """Relative latent RMS error ``||E(x) - E(x_dc)|| / ||E(x) - mean||`` of the data-consistency estimate of the
    model's own ``samples`` ``[B, 3, H, W]`` (in [0, 1]) seen at ``render_size`` (the NeRF's renders, which the
    operator measures) and resized to ``model_size`` as the guidance resizes renders; ``encode`` maps [0, 1]
    images at ``model_size`` to scaled latents."""
    up = lambda x: F.interpolate(x, size=model_size, mode="bilinear", align_corners=False)
    renders = F.interpolate(samples, size=render_size, mode="area")
    with torch.no_grad():
        z, z_dc = encode(up(renders)), encode(up(dc_estimate(renders, operator)))
    return float((z - z_dc).pow(2).mean().sqrt() / z.std())


def start_timestep(alphas_cumprod: Tensor, relative_error: float) -> int:
    """The first t with ``sqrt((1 - abar_t) / abar_t) >= relative_error`` (the last timestep if none)."""
    ratio = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    hits = (ratio >= relative_error).nonzero()
    return int(hits[0]) if len(hits) else len(alphas_cumprod) - 1


def per_pixel_weights(latent_elements: int, render_elements: int) -> Dict[str, float]:
    """``lambda_sds`` and ``lambda_pixel`` with the paper's gradient per rendered pixel: the SDS term (a sum over
    latent elements) weighs ``latent / rendered`` elements against the paper's ratio, the pixel term (a mean) is
    the paper's per-element weight times the rendered elements."""
    ratio = (PAPER_LATENT_ELEMENTS / PAPER_RENDER_ELEMENTS) / (latent_elements / render_elements)
    return {"lambda_sds": PAPER_LAMBDA_SDS * ratio,
            "lambda_pixel": PAPER_LAMBDA_PIXEL / PAPER_RENDER_ELEMENTS * render_elements}


def rounded(x: float, digits: int = 3) -> float:
    """``x`` to ``digits`` significant digits (settings written into configs and command lines)."""
    return float(f"{x:.{digits}g}") if x and math.isfinite(x) else x
