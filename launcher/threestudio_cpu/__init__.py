"""A CPU backend for threestudio (v0.2.3): run real threestudio on a machine without a GPU.

Why this exists: threestudio imports ``tinycudann`` and ``nvdiffrast`` (CUDA-only, and not on the
package registries), nerfacc 0.5's ray marching and packed scans are CUDA kernels, and threestudio
picks ``cuda:<rank>`` as its device unconditionally. No registry package provides CPU versions of
these, so this package does, for CI, laptops and debugging. It is used only when CUDA is absent (or
when forced); on a GPU machine nothing here is installed and the real packages run.

What :func:`install` covers (the subset threestudio's NeRF pipelines use):

- ``tinycudann``: Grid (Hash / Dense / Tiled), Frequency, SphericalHarmonics and Identity encodings;
  FullyFusedMLP / CutlassMLP networks; NetworkWithInputEncoding -- plain PyTorch, same config keys
  and output widths, trainable parameters (:mod:`threestudio_cpu.tinycudann`);
- ``nvdiffrast``: importable; any use raises :class:`~threestudio_cpu.nvdiffrast.NvdiffrastUnavailable`;
- nerfacc: packed scans / ``pack_info`` / ``OccGridEstimator.sampling`` / ``update_every_n_steps``
  take torch paths for CPU tensors only (:mod:`threestudio_cpu.nerfacc_cpu`); nerfacc's own
  pure-torch pieces (``accumulate_along_rays``, ray/box intersection) are used as they are;
- threestudio: ``get_device()`` returns cpu, ``networks.get_rank`` is a device, and
  ``torch.cuda.device`` of a CPU device is a no-op (:mod:`threestudio_cpu.threestudio_patches`).

A real ``tinycudann`` / ``nvdiffrast`` that imports always wins over the stand-ins. Call
:func:`install` before threestudio is imported. This package imports nothing from threestudio.
"""
from __future__ import annotations

import importlib
import os
import sys

__all__ = ["install", "installed", "cuda_available", "stand_ins"]

_state = {"installed": False}


def cuda_available() -> bool:
    """Whether a CUDA device is usable, asked without initialising CUDA.

    NVML answers instead of the CUDA runtime, so ``CUDA_VISIBLE_DEVICES`` set later (threestudio's
    launch.py sets it from ``--gpu``) still takes effect.
    """
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return torch.cuda.is_available()


def _real_module_imports(name: str) -> bool:
    module = sys.modules.get(name)
    if module is not None:
        return not getattr(module, "STAND_IN", False)
    try:
        importlib.import_module(name)
        return True
    except Exception:  # ImportError, or a CUDA-less machine failing inside the real package
        sys.modules.pop(name, None)
        return False


def stand_ins() -> list:
    """Names of the modules currently served by stand-ins."""
    return [n for n in ("tinycudann", "nvdiffrast") if getattr(sys.modules.get(n), "STAND_IN", False)]


def installed() -> bool:
    return _state["installed"]


def install(force: bool = False) -> bool:
    """Install the CPU backend; returns whether it is installed.

    Without ``force`` it does nothing when CUDA is available. Must run before ``import threestudio``:
    threestudio imports tinycudann at module level.
    """
    if _state["installed"]:
        return True
    if not force and cuda_available():
        return False
    from . import nerfacc_cpu, nvdiffrast, threestudio_patches, tinycudann

    if not _real_module_imports("tinycudann"):
        sys.modules["tinycudann"] = tinycudann
    if not _real_module_imports("nvdiffrast.torch"):
        sys.modules.update(nvdiffrast.modules())
    nerfacc_cpu.patch()
    threestudio_patches.patch_torch_cuda_device()
    threestudio_patches.patch_threestudio_on_import()
    _state["installed"] = True
    return True
