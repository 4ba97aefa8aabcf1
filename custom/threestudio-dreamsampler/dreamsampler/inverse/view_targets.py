"""Targets for a NeRF from degraded views, made once from the prior (the ``consistent-targets`` prior of the
degraded-view system): each data view's render is taken one reverse step of the model, D(z0^_t) (z0^ the Tweedie
estimate of the CFG noise, eq. 6 / supp. eq. 18's target, D its decoding: supp. eq. 19's pixel target), and
replaced by the image nearest that estimate whose measurement is the view's y (supp. eq. 13, the 2D sampler's
data-consistency step). The NeRF is then fitted to these images alone: the 3D fusion of one DreamSampler step
per view, instead of eq. 18's loop render -> target -> render, which feeds each estimate back into the next.

Written here because no library makes per-view restoration targets for a NeRF from a diffusion model; the
pieces are the core's (``process.forward_noise`` / ``tweedie``; the data-consistency step is
``prior_settings.consistent_with``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..diffusion.process import forward_noise, tweedie


@torch.no_grad()
def one_step_estimates(images: Tensor, alpha_bar: float, encode: Callable[[Tensor], Tensor],
                       guided_eps: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor], model_size: int,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """D(z0^_t) of ``images`` ``[V, 3, S, S]`` in [0, 1], back at size S: resized to ``model_size`` (as the
    guidance resizes renders), encoded (``encode``: [0, 1] images to latents), noised to the level
    ``alpha_bar`` = abar_t with a fresh draw (eq. 1), one guided noise prediction (``guided_eps``: z_t to CFG's
    eps, eq. 6), Tweedie's z0^ (supp. eq. 18), decoded (``decode``: latents to [0, 1] images) and area-resized, as
    the pixel term compares it with a render."""
    size = images.shape[-1]
    z0 = encode(F.interpolate(images, size=model_size, mode="bilinear", align_corners=False))
    z_t = forward_noise(z0, torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device), alpha_bar)
    estimate = decode(tweedie(z_t, guided_eps(z_t), alpha_bar))
    return F.interpolate(estimate, size=size, mode="area")

