"""A tiny DeepFloyd-IF-shaped pipeline (stage I) with random weights, for tests and offline smoke runs.

Shaped like ``DeepFloyd/IF-I-XL-v1.0`` where the code paths care: pixel space (no VAE, 3x64x64
images in [-1, 1]), a UNet with 6 output channels (epsilon, then the learned variance), a T5 text
encoder with a SentencePiece tokenizer in ``tokenizer/spiece.model`` (DeepFloyd's layout, so
``T5Tokenizer.from_pretrained`` converts it as it converts the real one), the IF scheduler config
(DDPM, squared-cosine betas, learned-range variance, dynamic thresholding), and the weights saved twice,
plain and as the ``fp16`` variant threestudio's ``deep-floyd-guidance`` asks for. Saved with
``IFPipeline.save_pretrained`` and loaded by ``from_pretrained``, the path a model id takes.

The tokenizer is trained here by SentencePiece (nothing is downloaded) on the words of the tiny SD
pipeline's vocabulary (prompts of tests and configs, threestudio's view suffixes, the papers'
descriptors) and the world grammar's, so those prompts stay short; other words fall back to pieces.

Command line: ``python -m dreamsampler.testing.tiny_if_pipeline <out_dir>``.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import torch

from ..diffusion.t5_text import MAX_LENGTH
from .tiny_pipeline import WORDS, cache_location

# diffusers' configuration of DeepFloyd IF stage I's scheduler (its model card / scheduler_config.json)
IF_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.0001,
    beta_end=0.02,
    clip_sample=True,
    clip_sample_range=1.0,
    thresholding=True,
    dynamic_thresholding_ratio=0.95,
    sample_max_value=1.5,
    prediction_type="epsilon",
    variance_type="learned_range",
)


def train_spiece(words, vocab_size: int = 256) -> bytes:
    """A SentencePiece unigram model (T5's special ids: pad 0, eos 1, unk 2) trained on ``words``."""
    import sentencepiece as spm

    words = list(dict.fromkeys(words))
    # every word in several contexts, so the unigram model keeps whole words as pieces
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] + [",.!?'-0123456789"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
        num_threads=1,
    )
    return model.getvalue()


def _vocabulary_words():
    from ..world.captions import WORDS as WORLD_WORDS

    return list(WORDS) + list(WORLD_WORDS)


def build_tiny_if_pipeline(out_dir, seed: int = 0, overwrite: bool = False, sample_size: int = 64) -> str:
    """Build and save the tiny IF pipeline under ``out_dir``; returns the path (reused if present).
    ``sample_size`` is its native resolution (IF stage I's 64 by default; smaller is faster)."""
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    out = Path(out_dir)
    if (out / "model_index.json").exists() and not overwrite:
        return str(out)
    tok_dir = out / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "spiece.model").write_bytes(train_spiece(_vocabulary_words()))
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": MAX_LENGTH,
             "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
            indent=2,
        )
    )
    tokenizer = T5Tokenizer.from_pretrained(str(tok_dir))

    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    unet = UNet2DConditionModel(  # IF-I's block types at toy widths
        sample_size=int(sample_size),
        in_channels=3,
        out_channels=6,  # epsilon and the learned variance
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        cross_attention_dim=32,
        encoder_hid_dim=32,  # T5's width: the UNet projects the text embeddings itself
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        norm_num_groups=8,
    )
    pipe = IFPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        scheduler=DDPMScheduler(**IF_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out))
    pipe.save_pretrained(str(out), variant="fp16")  # the file names deep-floyd-guidance loads with fp16 weights
    (tok_dir / "tokenizer.json").unlink()  # as DeepFloyd's folder: the tokenizer is read from spiece.model
    return str(out)


def default_location() -> str:
    """Where launch.sh and the tests keep the tiny IF pipeline (override with DREAMSAMPLER_TINY_IF)."""
    return cache_location("DREAMSAMPLER_TINY_IF", "tiny-if")


if __name__ == "__main__":
    print(build_tiny_if_pipeline(sys.argv[1] if len(sys.argv) > 1 else default_location()))
