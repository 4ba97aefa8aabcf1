"""A tiny Stable-Diffusion-shaped pipeline with random weights, for tests and offline smoke runs.

No model hub is needed: the UNet, VAE, CLIP text encoder and a character-level CLIP tokenizer (its
vocabulary written here) are built from small configs, saved with ``save_pretrained`` and then
loaded by the same ``from_pretrained`` path a real model id takes. The VAE has four levels, so a
512x512 image maps to a 4x64x64 latent exactly as in Stable Diffusion; the scheduler is SD's
(scaled-linear betas 0.00085 -> 0.012, 1000 steps). The outputs are noise-like images: the point is
the shapes, the code paths and the numerics, not the pictures.

Command line: ``python -m dreamsampler.testing.tiny_pipeline <out_dir>``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def _byte_vocab():
    """GPT-2/CLIP byte-to-unicode table: every byte maps to one printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


# Words that get a single token, so prompts used in tests, configs and the papers' descriptors stay
# well under CLIP's 77 tokens; any other word falls back to one token per character.
WORDS = (
    "a an the of on in with and photo photography picture image painting drawing face person man woman "
    "cat dog horse zebra bear lion squirrel bird hamburger car house tree flower chair table apple "
    "glasses smile wearing red green blue yellow white black orange purple pink brown "
    "oversaturated smooth pixelated cartoon foggy hazy blurry bad structure noisy malformed "
    "minimal flat 2d vector icon lineal color background trending artstation out focus depth field "
    "high quality detailed realistic 3d render dslr front side back overhead view"
).split()


def tiny_vocabulary(words=WORDS):
    """(vocab, merges) of a byte-level CLIP BPE: every byte alone or word-final, plus ``words`` (default
    :data:`WORDS`; the miniature world model passes its grammar's words).

    Each word is built by left-to-right merges (c1+c2, then +c3, ...), so it encodes to one token.
    """
    chars = _byte_vocab()
    tokens = chars + [c + "</w>" for c in chars]
    merges, seen = [], set(tokens)
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            if (left, right) not in seen:
                merges.append((left, right))
                seen.add((left, right))
            if merged not in seen:
                tokens.append(merged)
                seen.add(merged)
            left = merged
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tiny_pipeline(
    out_dir, seed: int = 0, overwrite: bool = False, sample_size: int = 64, prediction_type: str = "epsilon"
) -> str:
    """Build and save the tiny pipeline under ``out_dir``; returns the path (reused if present).

    ``sample_size`` is the UNet's latent size: the native resolution is 8x that (512 by default, as SD 1.5).
    ``prediction_type="v_prediction"`` makes it shaped like Stable Diffusion 2.x at 768 (a v-predicting UNet).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    if (out / "model_index.json").exists() and not overwrite:
        return str(out)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=int(sample_size),
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=8 * int(sample_size),
        scaling_factor=0.18215,
    )
    vocab, merges = tiny_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**{**SCHEDULER_CONFIG, "prediction_type": prediction_type}),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out))
    return str(out)


def cache_location(env: str, name: str) -> str:
    """``$env`` if set, else ``~/.cache/threestudio-dreamsampler/<name>``: where an offline pipeline is kept."""
    return os.environ.get(env, os.path.join(os.path.expanduser("~"), ".cache", "threestudio-dreamsampler", name))


def default_location() -> str:
    """Where launch.sh and the tests keep the tiny pipeline (override with DREAMSAMPLER_TINY_SD)."""
    return cache_location("DREAMSAMPLER_TINY_SD", "tiny-sd")


if __name__ == "__main__":
    print(build_tiny_pipeline(sys.argv[1] if len(sys.argv) > 1 else default_location()))
