"""Stand-in for ``nvdiffrast`` and ``nvdiffrast.torch``: importable, unusable.

threestudio imports ``nvdiffrast.torch`` at module level (PBR material, mesh rasterizer), so the
import must succeed for threestudio to load at all; any use raises an error that says what is
missing. Mesh rasterization (``nvdiff-rasterizer``, ``pbr-material``, textured mesh export) needs the
real nvdiffrast on a GPU. Creating a rasterizer context is allowed (threestudio's mesh exporter makes
one up front even when it never rasterizes, as in an untextured ``.obj`` export); rasterizing with it
raises.
"""
from __future__ import annotations

import types


class NvdiffrastUnavailable(RuntimeError):
    """nvdiffrast was used on a machine where only the CPU stand-in is present."""


class _Unavailable:
    """Any ``nvdiffrast`` name: usable in annotations, raises when called or instantiated."""

    qualified_name = "nvdiffrast"

    def __new__(cls, *args, **kwargs):
        raise NvdiffrastUnavailable(
            f"{cls.qualified_name} is not available: nvdiffrast is not installed on this machine and the CPU "
            "backend (threestudio_cpu) only stands in for it so that threestudio imports. Mesh "
            "rasterization (nvdiff-rasterizer, pbr-material, textured mesh export) needs nvdiffrast and a GPU."
        )


class _Context:
    """``RasterizeGLContext`` / ``RasterizeCudaContext``: constructible; every op that takes one raises."""

    def __init__(self, *args, **kwargs):
        pass


CONTEXTS = ("RasterizeGLContext", "RasterizeCudaContext")


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name, __doc__)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in CONTEXTS:
            return type(attr, (_Context,), {})
        return type(attr, (_Unavailable,), {"qualified_name": f"{name}.{attr}"})

    module.__getattr__ = __getattr__
    module.STAND_IN = True
    return module


def modules() -> dict:
    """``{"nvdiffrast": ..., "nvdiffrast.torch": ...}`` to put into ``sys.modules``."""
    package, torch_module = _module("nvdiffrast"), _module("nvdiffrast.torch")
    package.__path__ = []  # a package, so that ``import nvdiffrast.torch`` resolves
    package.torch = torch_module
    return {"nvdiffrast": package, "nvdiffrast.torch": torch_module}
