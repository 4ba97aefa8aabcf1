"""Degradation operators A of the inverse problems (main paper eq. 20-21, supp. eq. 13 and 18).

Each operator is a linear map on images ``x: [B, C, H, W]`` with

- ``forward(x)`` (also ``A(x)``): the noise-free map, applied to renders / decodes inside losses;
- ``adjoint(y)``: the exact transpose of the *discrete* map, ``<A x, y> = <x, A^T y>``: for the
  self-adjoint ones (identity, mask, noise) written out, otherwise the vector-Jacobian product of
  ``forward``, which for a linear map is its transpose exactly (padding and anti-aliasing included);
- ``measure(x, generator)``: ``forward`` plus the measurement noise, for making data ``y``
  (only :class:`AdditiveNoise` adds any; inside losses it is the identity);
- ``output_size(h, w)`` / ``input_size(h, w)``: sizes across the map, and ``check_measurement``.

``build_operator({"type": ..., **params})`` builds one from a config mapping; ``compose`` chains
``ops`` in order (``{"type": "compose", "ops": [{"type": "blur", ...}, {"type": "noise", ...}]}``).
Paper settings: SVG deblurring 61x61 Gaussian, sigma 5; SVG super-resolution bicubic x8; NeRF
deblurring 5x5 Gaussian, sigma 10; inpainting y = M x with M zero on the regions to fill.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Size = Tuple[int, int]
BORDER_TYPES = ("reflect", "replicate", "constant", "circular")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v) and float(v).is_integer()


class Operator(nn.Module):
    """Base class: a linear image operator (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:
        """A^T y as the vector-Jacobian product of the linear map ``forward`` (exact transpose)."""
        h, w = self.input_size(y.shape[-2], y.shape[-1])
        with torch.enable_grad():
            x = torch.zeros(*y.shape[:-2], h, w, dtype=y.dtype, device=y.device, requires_grad=True)
            (aty,) = torch.autograd.grad(self.forward(x), x, grad_outputs=y, create_graph=y.requires_grad)
        return aty

    def measure(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """A measurement y of the clean image x (noise-free unless the operator adds noise)."""
        return self.forward(x)

    def output_size(self, height: int, width: int) -> Size:
        return int(height), int(width)

    def input_size(self, height: int, width: int) -> Size:
        return int(height), int(width)

    def check_measurement(self, y: Tensor, height: int, width: int) -> None:
        """Raise a ValueError naming both sizes when ``y`` is not A's output size for an H x W image."""
        expected = self.output_size(height, width)
        got = tuple(int(s) for s in y.shape[-2:])
        if got != expected:
            raise ValueError(
                f"measurement size {got[0]}x{got[1]} does not match the operator's output size "
                f"{expected[0]}x{expected[1]} for image size {int(height)}x{int(width)} ({self})"
            )


class Identity(Operator):
    """A = I (e.g. text-to-image as an inverse problem without data)."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y


class GaussianBlur(Operator):
    """Convolution with a normalized ``kernel_size`` x ``kernel_size`` Gaussian of std ``sigma`` (kornia),
    'same' size; ``border_type`` says how the image is extended beyond its edge."""

    def __init__(self, kernel_size: int, sigma: float, border_type: str = "reflect"):
        super().__init__()
        if not _is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"blur kernel_size must be a positive odd integer, got {kernel_size!r}")
        if not _is_number(sigma) or not sigma > 0:
            raise ValueError(f"blur sigma must be a number > 0, got {sigma!r}")
        if border_type not in BORDER_TYPES:
            raise ValueError(f"blur border_type={border_type!r} is unknown; choose one of {BORDER_TYPES}")
        self.kernel_size, self.sigma, self.border_type = int(kernel_size), float(sigma), border_type

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size, self.sigma
        return kornia.filters.gaussian_blur2d(x, (k, k), (s, s), border_type=self.border_type)

    def kernel(self, dtype=torch.float64) -> Tensor:
        """The 2-D kernel [k, k] (outer product of the normalized 1-D Gaussian)."""
        g = kornia.filters.get_gaussian_kernel1d(self.kernel_size, self.sigma).to(dtype).flatten()
        return g[:, None] * g[None, :]

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, border_type={self.border_type}"


class BicubicDownsample(Operator):
    """Down-sampling by an integer ``factor`` with the anti-aliased bicubic kernel (torch's
    ``interpolate(mode="bicubic", antialias=True)``, the PIL / imresize convention); H and W must be
    multiples of ``factor``."""

    def __init__(self, factor: int, antialias: bool = True):
        super().__init__()
        if not _is_int(factor) or factor < 1:
            raise ValueError(f"downsample factor must be a positive integer, got {factor!r}")
        self.factor, self.antialias = int(factor), bool(antialias)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.output_size(x.shape[-2], x.shape[-1])
        if self.factor == 1:
            return x
        lead = x.shape[:-3]
        x4 = x.reshape(-1, *x.shape[-3:])
        y = F.interpolate(x4, size=(h, w), mode="bicubic", align_corners=False, antialias=self.antialias)
        return y.reshape(*lead, *y.shape[-3:])

    def output_size(self, height: int, width: int) -> Size:
        k = self.factor
        if height % k or width % k:
            raise ValueError(
                f"image size {int(height)}x{int(width)} is not divisible by the downsample factor {k}"
            )
        return int(height) // k, int(width) // k

    def input_size(self, height: int, width: int) -> Size:
        return int(height) * self.factor, int(width) * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}, antialias={self.antialias}"


class AdditiveNoise(Operator):
    """y = x + sigma * n, n ~ N(0, I): ``measure`` adds the noise, as a linear map it is the identity."""

    def __init__(self, sigma: float):
        super().__init__()
        if not _is_number(sigma) or not sigma >= 0:
            raise ValueError(f"noise sigma must be a number >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y

    def measure(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        if generator is None:
            n = torch.randn_like(x)
        else:
            n = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        return x + self.sigma * n

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class Mask(Operator):
    """y = M * x (inpainting): ``mask`` [H, W], [1, H, W] or [C, H, W], 1 where pixels are observed."""

    def __init__(self, mask: Tensor):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() == 2:
            mask = mask[None]
        if mask.dim() != 3:
            raise ValueError(f"mask must have shape [H, W] or [C, H, W], got {tuple(mask.shape)}")
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        self.output_size(x.shape[-2], x.shape[-1])
        return x * self.mask.to(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.forward(y)

    def output_size(self, height: int, width: int) -> Size:
        mh, mw = (int(s) for s in self.mask.shape[-2:])
        if (int(height), int(width)) != (mh, mw):
            raise ValueError(f"mask size {mh}x{mw} does not match the image size {int(height)}x{int(width)}")
        return mh, mw

    def extra_repr(self) -> str:
        return f"size={tuple(self.mask.shape)}, observed={float(self.mask.mean()):.3f}"


class Compose(Operator):
    """A = A_n ... A_1: ``ops`` applied in order (adjoints in reverse order)."""

    def __init__(self, ops: Sequence[Operator]):
        super().__init__()
        if len(ops) == 0:
            raise ValueError("compose needs at least one operator in 'ops'")
        self.ops = nn.ModuleList(ops)

    def forward(self, x: Tensor) -> Tensor:
        for op in self.ops:
            x = op(x)
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        for op in reversed(self.ops):
            y = op.adjoint(y)
        return y

    def measure(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        for op in self.ops:
            x = op.measure(x, generator)
        return x

    def output_size(self, height: int, width: int) -> Size:
        for op in self.ops:
            height, width = op.output_size(height, width)
        return height, width

    def input_size(self, height: int, width: int) -> Size:
        for op in reversed(self.ops):
            height, width = op.input_size(height, width)
        return height, width


_BUILDERS: Dict[str, Tuple[type, Tuple[str, ...], Tuple[str, ...]]] = {
    # type: (class, required parameters, optional parameters)
    "identity": (Identity, (), ()),
    "blur": (GaussianBlur, ("kernel_size", "sigma"), ("border_type",)),
    "downsample": (BicubicDownsample, ("factor",), ("antialias",)),
    "noise": (AdditiveNoise, ("sigma",), ()),
    "mask": (Mask, ("mask",), ()),
}
OPERATOR_TYPES = tuple(_BUILDERS) + ("compose",)


def build_operator(spec: Mapping[str, Any]) -> Operator:
    """An operator from ``{"type": <one of OPERATOR_TYPES>, **params}``; a ValueError names an
    unknown type, a missing or unknown parameter, or a bad value."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"an operator spec must be a mapping with a 'type' (one of {OPERATOR_TYPES}), got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "compose":
        unknown = set(spec) - {"ops"}
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)} for operator type 'compose' (expects 'ops')")
        ops = spec.get("ops")
        if not isinstance(ops, Sequence) or isinstance(ops, (str, bytes)):
            raise ValueError(f"operator type 'compose' needs 'ops', a list of operator specs, got {ops!r}")
        return Compose([build_operator(s) for s in ops])
    if kind not in _BUILDERS:
        raise ValueError(f"unknown operator type {kind!r}; choose one of {OPERATOR_TYPES}")
    cls, required, optional = _BUILDERS[kind]
    missing = [p for p in required if p not in spec]
    if missing:
        raise ValueError(f"operator type {kind!r} is missing parameter(s) {missing}")
    unknown = sorted(set(spec) - set(required) - set(optional))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for operator type {kind!r}; it takes {list(required + optional)}"
        )
    try:
        return cls(**spec)
    except TypeError as exc:
        raise ValueError(f"bad parameter for operator type {kind!r}: {exc}") from exc
