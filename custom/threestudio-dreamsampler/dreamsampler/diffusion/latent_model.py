"""The callables the 2D tasks take from a Stable Diffusion checkpoint: eps_theta(z, t, c), the VAE's
encoder / decoder on images in [-1, 1], and the CLIP text encoder for any number of prompts (null
text included), encoded exactly as diffusers' ``StableDiffusionPipeline.encode_prompt`` does.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor

from .process import check_prediction_type, to_epsilon


def load_text_encoder(model: str, dtype: torch.dtype, device, field_name: str = "pretrained_model_name_or_path"):
    """(tokenizer, text_encoder) from the ``tokenizer`` / ``text_encoder`` subfolders of ``model``, frozen."""
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=dtype)
    except (OSError, ValueError) as exc:
        where = "a local directory without tokenizer/ and text_encoder/" if os.path.isdir(model) else "unreachable or unknown"
        raise ValueError(f"{field_name}={model!r}: cannot load the CLIP text encoder ({where}): {exc}") from exc
    text_encoder.eval().requires_grad_(False)
    return tokenizer, text_encoder.to(device)


def vae_factor(vae_config) -> int:
    """Image pixels per latent pixel of a diffusers VAE config (8 for Stable Diffusion); 1 without a VAE
    (``None``: a pixel-space model such as DeepFloyd IF)."""
    return 1 if vae_config is None else 2 ** (len(vae_config["block_out_channels"]) - 1)


def native_resolution(unet_config, vae_config) -> int:
    """The image size a diffusion model was trained at: ``unet.sample_size`` x the VAE factor (512 for SD
    1.x / 2.x-base, 768 for SD 2.x, 64 for the miniature world model and for DeepFloyd IF stage I)."""
    return int(unet_config["sample_size"]) * vae_factor(vae_config)


def is_pixel_space(model: str, field_name: str = "pretrained_model_name_or_path") -> bool:
    """Whether the pipeline at ``model`` diffuses pixels (no VAE: DeepFloyd IF) rather than latents (Stable
    Diffusion): a local folder without ``vae/``, or a hub model whose ``model_index.json`` lists no VAE."""
    if os.path.isdir(model):
        return not os.path.isdir(os.path.join(model, "vae"))
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(model)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{field_name}={model!r} could not be read: the model hub cannot be reached or the id is wrong; pass a "
            f"local directory saved with save_pretrained. ({type(exc).__name__}: {exc})"
        ) from exc
    vae = index.get("vae")
    return vae is None or vae[0] is None


def model_resolution(model: str, field_name: str = "pretrained_model_name_or_path") -> int:
    """:func:`native_resolution` of a model id or folder, from its configs alone (no weights are loaded)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.load_config(model, subfolder="unet")
        vae = None if is_pixel_space(model, field_name) else AutoencoderKL.load_config(model, subfolder="vae")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{field_name}={model!r}: cannot read its unet / vae configs to find its resolution ({exc})") from exc
    return native_resolution(unet, vae)


class LatentModel:
    """eps / encode / decode / text over loaded diffusers modules (float weights of any dtype; inputs and
    outputs keep the caller's dtype). ``scheduler`` (the model's own) says what the UNet predicts:
    epsilon, v (SD 2.x at 768) or x0; :meth:`eps` always returns epsilon (``process.to_epsilon``)."""

    def __init__(self, vae, unet, tokenizer, text_encoder, scheduler):
        self.vae, self.unet, self.tokenizer, self.text_encoder = vae, unet, tokenizer, text_encoder
        self.scale = float(vae.config.scaling_factor)
        self.dtype = unet.dtype
        self.prediction_type = check_prediction_type(scheduler.config.prediction_type, "the model's scheduler")
        self.alphas_cumprod = scheduler.alphas_cumprod

    @property
    def latent_factor(self) -> int:
        """Image pixels per latent pixel (8 for Stable Diffusion)."""
        return vae_factor(self.vae.config)

    @property
    def resolution(self) -> int:
        """The model's native image size (:func:`native_resolution`)."""
        return native_resolution(self.unet.config, self.vae.config)

    def eps(self, z: Tensor, t: int, emb: Tensor) -> Tensor:
        """eps_theta(z_t, t, c) for a batch of latents and matching text embeddings."""
        t = torch.as_tensor(t, dtype=torch.long, device=z.device)
        out = self.unet(z.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype)).sample.to(z.dtype)
        return to_epsilon(out, z, self.alphas_cumprod[t.cpu()].view(-1, 1, 1, 1), self.prediction_type)

    def encode(self, x: Tensor) -> Tensor:
        """E(x): the posterior mean of the VAE encoder, scaled (x in [-1, 1], [B, 3, H, W])."""
        return (self.vae.encode(x.to(self.dtype)).latent_dist.mean * self.scale).to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """D(z) in [-1, 1] (not clamped, so data consistency sees the decoder's own range)."""
        return self.vae.decode((z / self.scale).to(self.dtype)).sample.to(z.dtype)

    @torch.no_grad()
    def text(self, prompts: Sequence[str]) -> Tensor:
        """CLIP embeddings [K, L, D] of ``prompts`` (padded to the tokenizer's max length, as diffusers does)."""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = self.text_encoder.device
        mask = tokens.attention_mask.to(device) if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        return self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0].float()
