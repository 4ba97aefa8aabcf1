"""DeepFloyd IF's text encoder: T5 embeddings of prompts, as threestudio's ``deep-floyd-prompt-processor``
computes and caches them (77 tokens, padded and truncated, with the attention mask).

Why here: threestudio v0.2.3 loads the encoder with ``load_in_8bit=True``, a keyword transformers 5 no
longer takes (``TypeError`` on every machine), and 8-bit loading needs bitsandbytes and CUDA. This module
loads it the transformers-5 way: 8-bit through ``BitsAndBytesConfig`` when CUDA and bitsandbytes are
there, float16 on CUDA otherwise, float32 on a CPU. The extension points threestudio's processor at
:func:`cache_t5_embeddings` (``guidance/deep_floyd_prompts.py``).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, Sequence

import torch
from torch import Tensor

MAX_LENGTH = 77  # threestudio's deep-floyd-prompt-processor's context
VARIANTS = ("8bit", None)  # DeepFloyd's repositories keep the encoder's weights under the "8bit" variant


def load_t5(model: str):
    """(tokenizer, encoder) from the ``tokenizer`` / ``text_encoder`` subfolders of ``model``, frozen."""
    from transformers import T5EncoderModel, T5Tokenizer

    cuda = torch.cuda.is_available()
    kwargs = {"dtype": torch.float16 if cuda else torch.float32}
    if cuda and importlib.util.find_spec("bitsandbytes") is not None:
        from transformers import BitsAndBytesConfig

        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="auto")
    tokenizer = T5Tokenizer.from_pretrained(model, subfolder="tokenizer")
    error = None
    for variant in VARIANTS:
        try:
            encoder = T5EncoderModel.from_pretrained(model, subfolder="text_encoder", variant=variant, **kwargs)
            break
        except OSError as exc:  # this variant's files are absent: try the next
            error = exc
    else:
        raise OSError(f"{model!r}: no T5 text encoder under text_encoder/ (variants {VARIANTS}): {error}")
    if "device_map" not in kwargs:
        encoder = encoder.to("cuda" if cuda else "cpu")
    return tokenizer, encoder.eval().requires_grad_(False)


@torch.no_grad()
def encode_t5(tokenizer, encoder, prompts: Sequence[str]) -> Tensor:
    """T5 embeddings [K, 77, D] of ``prompts`` (padded and truncated to 77 tokens, masked)."""
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device = encoder.device
    return encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[0]


def cache_t5_embeddings(cache_name: Callable[[str, str], str], model: str, prompts: Sequence[str], cache_dir: str) -> None:
    """Encode ``prompts`` with ``model``'s T5 and save each as ``<cache_dir>/<cache_name(model, prompt)>.pt``
    (threestudio's prompt cache; ``cache_name`` is its ``hash_prompt``)."""
    tokenizer, encoder = load_t5(model)
    for prompt, embedding in zip(prompts, encode_t5(tokenizer, encoder, prompts)):
        torch.save(embedding.cpu(), os.path.join(cache_dir, f"{cache_name(model, prompt)}.pt"))
