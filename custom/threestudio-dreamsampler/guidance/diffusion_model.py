"""Loading the parts of a diffusion pipeline a guidance needs, frozen: the UNet, its scheduler and, for a
latent model (Stable Diffusion), the VAE. A pixel-space model (DeepFloyd IF stage I) has no VAE."""
from __future__ import annotations

import functools
import os

import torch

from dreamsampler.diffusion.latent_model import is_pixel_space

HALF_ON_CPU_ENV = "DREAMSAMPLER_HALF_ON_CPU"
HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def weights_dtype(half_precision_weights: bool, device) -> torch.dtype:
    """The dtype of a diffusion model's weights: float16 on a CUDA device when ``half_precision_weights``
    (threestudio's default), float32 elsewhere. ``DREAMSAMPLER_HALF_ON_CPU=float16`` (or ``bfloat16``)
    keeps half-precision weights on a CPU too (slow: for the tests of the half-precision code paths)."""
    if not half_precision_weights:
        return torch.float32
    if torch.device(device).type == "cuda":
        return torch.float16
    forced = os.environ.get(HALF_ON_CPU_ENV, "")
    if forced and forced not in HALF_DTYPES:
        raise ValueError(f"{HALF_ON_CPU_ENV}={forced!r} must be one of {sorted(HALF_DTYPES)} (or unset)")
    return HALF_DTYPES.get(forced, torch.float32)


def without_autocast(fn):
    """``fn`` with autocast off on every device: under threestudio's ``16-mixed`` (CUDA autocast) or a CPU
    autocast the diffusion model still runs in its weights' dtype and the guidance's arithmetic in the
    dtype of its inputs (float32), as without autocast."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def load_diffusion_components(
    model: str,
    dtype: torch.dtype,
    device,
    field_name: str = "pretrained_model_name_or_path",
    memory_efficient_attention: bool = False,
    attention_slicing: bool = False,
    channels_last: bool = False,
    sequential_cpu_offload: bool = False,
):
    """(vae or None, unet, scheduler) from a model id or a local directory; a clear error when unreachable.

    The scheduler is read as DDIM (only its betas, prediction type and step count are used). For a pixel
    model with float16 weights the ``fp16`` variant files are loaded, as threestudio's ``deep-floyd-guidance``
    does (DeepFloyd's repositories hold both)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    pixel = is_pixel_space(model, field_name)
    variant = "fp16" if pixel and dtype == torch.float16 else None
    try:
        vae = None if pixel else AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype, variant=variant)
        scheduler = DDIMScheduler.from_pretrained(model, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        hint = (
            "the directory exists but does not hold a diffusers layout (unet/, scheduler/, and vae/ for a latent model)"
            if os.path.isdir(model)
            else "the model hub cannot be reached or the id is wrong; pass a local directory saved with "
            "save_pretrained (e.g. the tiny offline pipeline: `bash launch.sh tiny-sd`)"
        )
        raise ValueError(f"{field_name}={model!r} could not be loaded: {hint}. ({type(exc).__name__}: {exc})") from exc
    for m in (vae, unet):
        if m is not None:
            m.eval().requires_grad_(False)
    if memory_efficient_attention and int(torch.__version__.split(".")[0]) < 2:
        unet.enable_xformers_memory_efficient_attention()
    if attention_slicing:
        unet.set_attention_slice(1)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if sequential_cpu_offload:
        raise ValueError("sequential CPU offload is not supported by this guidance; unset enable_sequential_cpu_offload")
    return (vae.to(device) if vae is not None else None), unet.to(device), scheduler
