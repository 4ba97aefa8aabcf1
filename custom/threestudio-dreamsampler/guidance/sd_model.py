"""Loading the Stable Diffusion parts a guidance needs (VAE, UNet, DDIM scheduler), frozen."""
from __future__ import annotations

import os

import torch


def load_sd_components(
    model: str,
    dtype: torch.dtype,
    device,
    field_name: str = "pretrained_model_name_or_path",
    memory_efficient_attention: bool = False,
    attention_slicing: bool = False,
    channels_last: bool = False,
    sequential_cpu_offload: bool = False,
):
    """(vae, unet, scheduler) from a model id or a local directory; a clear error when unreachable."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    try:
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype)
        scheduler = DDIMScheduler.from_pretrained(model, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        hint = (
            "the directory exists but does not hold a diffusers Stable Diffusion layout (vae/, unet/, scheduler/)"
            if os.path.isdir(model)
            else "the model hub cannot be reached or the id is wrong; pass a local directory saved with "
            "save_pretrained (e.g. the tiny offline pipeline: `bash launch.sh tiny-sd`)"
        )
        raise ValueError(f"{field_name}={model!r} could not be loaded: {hint}. ({type(exc).__name__}: {exc})") from exc
    for m in (vae, unet):
        m.eval().requires_grad_(False)
    if memory_efficient_attention and int(torch.__version__.split(".")[0]) < 2:
        unet.enable_xformers_memory_efficient_attention()
    if attention_slicing:
        unet.set_attention_slice(1)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if sequential_cpu_offload:
        raise ValueError("sequential CPU offload is not supported by this guidance; unset enable_sequential_cpu_offload")
    return vae.to(device), unet.to(device), scheduler
