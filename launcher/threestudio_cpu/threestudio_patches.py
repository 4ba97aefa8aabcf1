"""Device fixes applied to threestudio itself once it has been imported.

threestudio v0.2.3 assumes CUDA in a few places: ``threestudio.utils.misc.get_device()`` returns
``cuda:<rank>`` (imported by name into many modules), and ``threestudio.models.networks`` opens
``torch.cuda.device(get_rank())`` contexts and allocates masks on ``device=get_rank()``. On a CPU
run, ``get_device`` returns cpu everywhere, the networks module's ``get_rank`` returns "cpu", and
``torch.cuda.device`` of a CPU device (or with no CUDA) is a no-op context.

The patch runs from an import hook on the ``threestudio`` package, so ``install(); import threestudio``
is enough; modules imported later see the patched ``threestudio.utils.misc.get_device``.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import sys

import torch

CPU = torch.device("cpu")


def cpu_device() -> torch.device:
    """threestudio's ``get_device()`` on a CPU run."""
    return CPU


def _cpu_rank_device() -> str:
    """threestudio.models.networks' ``get_rank()`` on a CPU run: used only as a device."""
    return "cpu"


class _CudaDeviceOrNoOp:
    """``torch.cuda.device(d)``, or a no-op context when ``d`` is a CPU device or CUDA is absent."""

    def __init__(self, real):
        self.real = real

    def __call__(self, device):
        if not torch.cuda.is_available() or str(device).startswith("cpu"):
            return contextlib.nullcontext()
        return self.real(device)


def patch_torch_cuda_device() -> None:
    if not isinstance(torch.cuda.device, _CudaDeviceOrNoOp):
        torch.cuda.device = _CudaDeviceOrNoOp(torch.cuda.device)


def patch_loaded_threestudio() -> None:
    """Point every loaded threestudio module's ``get_device`` at cpu; make ``networks.get_rank`` a device."""
    misc = sys.modules["threestudio.utils.misc"]
    original = misc.get_device
    for name, module in list(sys.modules.items()):
        if (name == "threestudio" or name.startswith("threestudio.")) and getattr(module, "get_device", None) is original:
            module.get_device = cpu_device
    networks = sys.modules.get("threestudio.models.networks")
    if networks is not None:
        networks.get_rank = _cpu_rank_device


class _PatchAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs :func:`patch_loaded_threestudio` right after the ``threestudio`` package finishes importing."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "threestudio":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                self.loader = spec.loader
                spec.loader = self
                return spec
        return None

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader  # tracebacks and inspect read source through the real loader
        self.loader.exec_module(module)
        patch_loaded_threestudio()


def patch_threestudio_on_import() -> None:
    """Patch threestudio now if it is loaded, else as soon as it is imported."""
    if "threestudio.utils.misc" in sys.modules:
        patch_loaded_threestudio()
    elif not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())
