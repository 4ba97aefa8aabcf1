"""threestudio's ``deep-floyd-prompt-processor`` on transformers 5.

threestudio v0.2.3 loads the T5 encoder with ``load_in_8bit=True``, which transformers 5 (this project's
pin) rejects with a ``TypeError`` before anything is encoded, so IF configs cannot start. With transformers
5 installed, the processor's ``spawn_func`` becomes the core's :func:`~dreamsampler.diffusion.t5_text.cache_t5_embeddings`
(same tokens, mask and cache files; 8-bit when bitsandbytes and CUDA are there). It stays a picklable
reference (a ``partial`` of two importable functions), so the processor's spawned helper process runs it.
With an older transformers nothing is changed.
"""
from __future__ import annotations

import functools

import transformers
from threestudio.models.prompt_processors.base import hash_prompt
from threestudio.models.prompt_processors.deepfloyd_prompt_processor import DeepFloydPromptProcessor

from dreamsampler.diffusion.t5_text import cache_t5_embeddings


def transformers_major() -> int:
    return int(transformers.__version__.split(".")[0])


if transformers_major() >= 5:
    DeepFloydPromptProcessor.spawn_func = staticmethod(functools.partial(cache_t5_embeddings, hash_prompt))
