"""Start-up of every Python process of ``scripts/device_check.sh`` (this folder is on its PYTHONPATH).

A GPU machine prepared only with PyTorch lacks packages threestudio imports at module level. Real
packages always win: the stand-ins below serve a name only when no installed package provides it
(their finder is the last one asked).

- ``tinycudann``: the CPU back end's PyTorch stand-in (``dreamsampler_launcher.threestudio_cpu``), which
  runs on CUDA tensors as well (tiny-cuda-nn itself is built from source with CUDA, not carried);
- ``nvdiffrast``, ``nvdiffrast.torch``: the back end's importable, unusable stand-in (no config here rasterizes);
- ``wandb`` (``threestudio.utils.saving`` imports it; no config here logs to it) and ``IPython.display``
  (threestudio's ``extern/ldm_zero123`` imports ``clear_output``): empty stubs.

Two patches after an import:

- ``imageio``, when ``imageio-ffmpeg`` is absent (its 0.8.1 wheel bundles ffmpeg: 68 MB): ``imageio.mimsave`` of an
  ``.mp4`` (threestudio's test videos, the SVG system's progress video) writes it with OpenCV's own FFmpeg
  (``cv2.VideoWriter``, codec mp4v);
- ``nerfacc``, with ``DREAMSAMPLER_NERFACC_TORCH=1`` (the check sets it when nerfacc's CUDA kernels did not
  build): its packed scans, ``pack_info`` and ``OccGridEstimator.sampling`` take the CPU back end's PyTorch
  paths on every device, CUDA tensors included (constant steps, no occupancy grid), as on a CPU run.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types


def _tinycudann():
    from dreamsampler_launcher.threestudio_cpu import tinycudann

    return tinycudann


_NVDIFFRAST = {}


def _nvdiffrast(name):
    if not _NVDIFFRAST:
        from dreamsampler_launcher.threestudio_cpu import nvdiffrast

        _NVDIFFRAST.update(nvdiffrast.modules())
    return _NVDIFFRAST[name]


def _stub(name, **attrs):
    module = types.ModuleType(name)
    module.STUB = True
    module.__dict__.update(attrs)
    return module


STAND_INS = {  # name -> (make the module, is a package)
    "tinycudann": (_tinycudann, False),
    "nvdiffrast": (lambda: _nvdiffrast("nvdiffrast"), True),
    "nvdiffrast.torch": (lambda: _nvdiffrast("nvdiffrast.torch"), False),
    "wandb": (lambda: _stub("wandb"), False),
    "IPython": (lambda: _stub("IPython", __path__=[]), True),
    "IPython.display": (lambda: _stub("IPython.display", clear_output=lambda *a, **k: None), False),
}


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves :data:`STAND_INS` for names no other finder found (it is appended last)."""

    def find_spec(self, name, path=None, target=None):
        if name not in STAND_INS:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=STAND_INS[name][1])

    def create_module(self, spec):
        return STAND_INS[spec.name][0]()

    def exec_module(self, module):
        pass


def torch_nerfacc() -> None:
    """nerfacc's CUDA-only ops through the CPU back end's PyTorch implementations, on any device."""
    import nerfacc
    import nerfacc.pack
    import nerfacc.scan
    import nerfacc.volrend
    from nerfacc.estimators.occ_grid import OccGridEstimator

    from dreamsampler_launcher.threestudio_cpu import nerfacc_cpu

    if getattr(nerfacc.scan.exclusive_sum, "torch_paths", False):
        return
    scans = {"inclusive_sum": ("sum", False), "exclusive_sum": ("sum", True),
             "inclusive_prod": ("prod", False), "exclusive_prod": ("prod", True)}
    for name, (op, exclusive) in scans.items():
        original = getattr(nerfacc.scan, name)

        def scan(inputs, packed_info=None, _original=original, _op=op, _exclusive=exclusive):
            if packed_info is None:  # nerfacc's own PyTorch path (a cumulative op on the last dimension)
                return _original(inputs, None)
            return nerfacc_cpu._packed_scan(inputs, packed_info, _op, _exclusive)

        scan.torch_paths = True
        for module in (nerfacc.scan, nerfacc.volrend, nerfacc):
            if hasattr(module, name):
                setattr(module, name, scan)
    for module in (nerfacc.pack, nerfacc.volrend, nerfacc):
        module.pack_info = nerfacc_cpu.pack_info
    OccGridEstimator.sampling = lambda self, *args, **kwargs: nerfacc_cpu.uniform_sampling(self, *args, **kwargs)
    OccGridEstimator.update_every_n_steps = lambda self, *a, **k: None


def cv2_mp4() -> None:
    """``imageio.mimsave`` writes ``.mp4`` files with ``cv2.VideoWriter`` (RGB uint8 frames, as imageio takes them)."""
    import imageio

    original = imageio.mimsave

    def mimsave(uri, ims, *args, **kwargs):
        if not str(uri).lower().endswith(".mp4"):
            return original(uri, ims, *args, **kwargs)
        import cv2
        import numpy as np

        frames = [np.asarray(im) for im in ims]
        if not frames:
            return None
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(uri), cv2.VideoWriter_fourcc(*"mp4v"), float(kwargs.get("fps", 30)), (w, h))
        for frame in frames:
            frame = frame.astype(np.uint8)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR if frame.ndim == 3 else cv2.COLOR_GRAY2BGR))
        writer.release()
        return None

    imageio.mimsave = mimsave


class _After(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs ``patch()`` right after the real module ``name`` is imported (once)."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                self.loader, spec.loader = spec.loader, self
                return spec
        return None

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        sys.meta_path.remove(self)
        self.patch()


sys.meta_path.append(_StandIns())
if os.environ.get("DREAMSAMPLER_NERFACC_TORCH") == "1":
    sys.meta_path.insert(0, _After("nerfacc", torch_nerfacc))
if importlib.util.find_spec("imageio_ffmpeg") is None:
    sys.meta_path.insert(0, _After("imageio", cv2_mp4))
