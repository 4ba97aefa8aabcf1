"""DreamSampler core: pure PyTorch (no threestudio imports), laid out by concern.

    diffusion/   the reverse process: formulas (process), schedules, the carried-noise sampler, reverse loops
    distill/     the guidance modes as functions (sds, dreamsampler, bridge, dds, lmc), weights, losses
    image/       editing (Alg. 3), inpainting and restoration (Alg. 4): the 2D reverse samplers
    inverse/     degradation operators with adjoints, conjugate gradient, data consistency (eq. 18, 21)
    vector/      the Bezier rasterizer and SVG scenes
    multiview/   cameras, view folders, the procedural scene
    image_io     reading images / masks, and the image-layout conversions (one place)
    metrics      PSNR / SSIM / LPIPS
    testing/     the tiny offline pipeline, a Gaussian mixture with exact scores

Images at the core's public boundaries are ``[B, 3, H, W]`` floats in [0, 1] (one image: ``[3, H, W]``);
latents ``[B, C, h, w]``. threestudio's ``[B, H, W, 3]`` is converted by the adapters with
:func:`dreamsampler.image_io.bchw` / :func:`dreamsampler.image_io.bhwc`.

The contract other code relies on is :class:`DreamSampler` (``diffusion/sampler.py``).
"""
from .diffusion.sampler import DreamSampler
from .diffusion.schedules import decreasing_timesteps, gamma_schedule, index_for_step

__all__ = ["DreamSampler", "decreasing_timesteps", "gamma_schedule", "index_for_step"]
