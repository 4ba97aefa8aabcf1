"""SVG restoration helpers (main paper sec. 4.1; supplementary sec. 2.1): the paper's initialisation,
the self-intersection regularizer L_xing, the learning-rate schedule and SVG 1.1 export.

Paths are closed cubic Bezier paths in pixel coordinates, ``points [P, 3S, 2]`` as in
:mod:`dreamsampler.vector.rasterizer`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..image_io import WORLD_PREFIX, world_icon
from .rasterizer import render, segment_controls, validate_scene

ICON_SUFFIX = ", minimal flat 2d vector icon. lineal color. on a white background. trending on artstation."


@dataclass
class VectorScene:
    """The SVG parameters psi of eq. 21."""

    points: Tensor  # [P, 3S, 2] pixels
    colors: Tensor  # [P, 3] in [0, 1]
    opacity: Tensor  # [P] in [0, 1]
    background: Tensor  # [3] in [0, 1]


def init_scene(
    num_paths: int,
    height: int,
    width: int,
    num_segments: int = 4,
    radius: float = 20.0,
    background=(1.0, 1.0, 1.0),
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> VectorScene:
    """The paper's initialisation (sec. 4.1, following VectorFusion/LIVE): each path's ``3S`` control
    points evenly spaced on a circle of ``radius`` pixels around a uniformly random centre, a uniformly
    random fill colour and opacity ~ U(0.7, 1)."""
    if num_paths < 1 or num_segments < 2 or radius <= 0:
        raise ValueError(f"need num_paths >= 1, num_segments >= 2, radius > 0; got {num_paths}, {num_segments}, {radius}")
    angle = torch.arange(3 * num_segments, dtype=dtype) * (2 * math.pi / (3 * num_segments))
    ring = radius * torch.stack([angle.cos(), angle.sin()], -1)
    centre = torch.rand(num_paths, 1, 2, generator=generator, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    return VectorScene(
        points=centre + ring,
        colors=torch.rand(num_paths, 3, generator=generator, dtype=dtype),
        opacity=0.7 + 0.3 * torch.rand(num_paths, generator=generator, dtype=dtype),
        background=torch.tensor(background, dtype=dtype),
    )


def shapes_scene(height: int, width: int, dtype: torch.dtype = torch.float32) -> VectorScene:
    """A synthetic icon with known paths (4 segments each) on white: an orange disc, a blue square,
    a green triangle and a purple ellipse, placed in fractions of the canvas."""
    k = 4 * (math.sqrt(2) - 1) / 3

    def ellipse(cx, cy, rx, ry):
        unit = [(1, 0), (1, k), (k, 1), (0, 1), (-k, 1), (-1, k), (-1, 0), (-1, -k), (-k, -1), (0, -1), (k, -1), (1, -k)]
        return [(cx + rx * u, cy + ry * v) for u, v in unit]

    def polygon(corners):  # straight cubic segments: control points at 1/3 and 2/3 of each side
        out = []
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
            out += [(x0, y0), (x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3), (x0 + 2 * (x1 - x0) / 3, y0 + 2 * (y1 - y0) / 3)]
        return out

    shapes = [
        ellipse(0.33, 0.34, 0.2, 0.2),
        polygon([(0.5, 0.45), (0.85, 0.45), (0.85, 0.8), (0.5, 0.8)]),
        polygon([(0.1, 0.9), (0.3, 0.9), (0.5, 0.9), (0.3, 0.55)]),
        ellipse(0.72, 0.22, 0.17, 0.09),
    ]
    scale = torch.tensor([width, height], dtype=dtype)
    return VectorScene(
        points=torch.tensor(shapes, dtype=dtype) * scale,
        colors=torch.tensor([[1.0, 0.55, 0.1], [0.15, 0.35, 0.85], [0.2, 0.7, 0.3], [0.55, 0.2, 0.65]], dtype=dtype),
        opacity=torch.ones(4, dtype=dtype),
        background=torch.ones(3, dtype=dtype),
    )


def load_image(source: str, height: Optional[int] = None, width: Optional[int] = None) -> Tensor:
    """A ``[3, H, W]`` image in [0, 1] from ``"shapes"`` (:func:`shapes_scene`, needs a size),
    ``"skimage:<name>"`` (a picture shipped in ``skimage.data``), ``"world:<index>"`` (a held-out world icon,
    ``image_io.world_icon``) or an image file. Alpha is composited
    over white; with a size, the image is centre-cropped to its aspect ratio and resized (antialiased)."""
    if source == "shapes":
        if height is None or width is None:
            raise ValueError("the 'shapes' image needs a size")
        s = shapes_scene(height, width)
        return render(s.points, s.colors, s.opacity, s.background, height, width, backend="torch").permute(2, 0, 1)
    if source.startswith("skimage:"):
        import skimage.data

        name = source.split(":", 1)[1]
        if not callable(getattr(skimage.data, name, None)):
            raise ValueError(f"skimage.data has no picture {name!r} (try astronaut, chelsea, coffee, rocket)")
        array = getattr(skimage.data, name)()
    elif source.startswith(WORLD_PREFIX):
        array = world_icon(source, "system.target").permute(1, 2, 0).numpy()
    else:
        import imageio.v3 as iio

        try:
            array = iio.imread(source)
        except (FileNotFoundError, OSError) as e:
            raise ValueError(f"cannot read image {source!r}: {e}") from e
    array = np.asarray(array)
    scale = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1.0
    img = torch.from_numpy(array.astype(np.float32) / scale)
    img = img[..., None].expand(*img.shape, 3) if img.dim() == 2 else img
    if img.shape[-1] == 4:
        img = img[..., :3] * img[..., 3:] + (1 - img[..., 3:])
    img = img[..., :3].permute(2, 0, 1)
    if height is None or width is None:
        return img.clamp(0, 1).contiguous()
    h, w = img.shape[1:]
    if h * width > w * height:  # too tall: crop rows
        ch = round(w * height / width)
        img = img[:, (h - ch) // 2 : (h - ch) // 2 + ch]
    else:
        cw = round(h * width / height)
        img = img[:, :, (w - cw) // 2 : (w - cw) // 2 + cw]
    img = F.interpolate(img[None], (height, width), mode="bilinear", antialias=True, align_corners=False)[0]
    return img.clamp(0, 1).contiguous()


def _sine(u: Tensor, v: Tensor) -> Tensor:
    """Sine of the angle from ``u`` to ``v`` (``[..., 2]``)."""
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    norms = torch.sqrt((u * u).sum(-1) * (v * v).sum(-1) + 1e-12)
    return cross / norms


def xing_loss(points: Tensor) -> Tensor:
    """Self-intersection regularizer L_xing of LIVE (Ma et al. 2022), used by VectorFusion and the paper.

    For each cubic segment with control legs ``l1 = p1 - p0``, ``l2 = p2 - p1``, ``l3 = p3 - p2``: where
    the control polygon turns left at ``p1`` (``sin(l1, l2) >= 0``) it penalises ``relu(-sin(l1, l3))``,
    otherwise ``relu(sin(l1, l3))``, i.e. a control polygon that folds back over itself. Mean over the
    segments of each path, then over paths.
    """
    ctrl = segment_controls(points)  # [P, S, 4, 2]
    l1, l2, l3 = ctrl[:, :, 1] - ctrl[:, :, 0], ctrl[:, :, 2] - ctrl[:, :, 1], ctrl[:, :, 3] - ctrl[:, :, 2]
    left = (_sine(l1, l2) >= 0).to(points.dtype).detach()
    s13 = _sine(l1, l3)
    return (left * torch.relu(-s13) + (1 - left) * torch.relu(s13)).mean()


def point_lr(
    step: int,
    total_steps: int,
    initial: float = 0.02,
    peak: float = 0.2,
    final: float = 0.05,
    warmup_steps: int = 500,
) -> float:
    """Control-point learning rate (supp. sec. 2.1): linear ``initial -> peak`` over ``warmup_steps``,
    then cosine decay to ``final`` at ``total_steps``. Colours use 1/20 of it, the background 1/200."""
    if step < warmup_steps:
        return initial + (peak - initial) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _hex(rgb: Tensor) -> str:
    r, g, b = (int(round(float(c) * 255)) for c in rgb.clamp(0, 1))
    return f"#{r:02x}{g:02x}{b:02x}"


def to_svg(scene: VectorScene, height: int, width: int, precision: int = 3) -> str:
    """The scene as an SVG 1.1 document: a background rectangle, then one ``<path>`` per path in
    painter's order with ``fill``, ``fill-opacity`` and the non-zero fill rule. Colours and opacities
    are clamped to [0, 1] (as SVG viewers do); non-finite values raise ``ValueError``."""
    pts, col, op, bg = (t.detach().cpu().double() for t in (scene.points, scene.colors, scene.opacity, scene.background))
    validate_scene(pts, col, op, bg)
    fmt = f"{{:.{precision}f}}"
    lines = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="{_hex(bg)}"/>',
    ]
    for p in range(pts.shape[0]):
        xy = [" ".join(fmt.format(float(v)) for v in q) for q in pts[p]]
        n = len(xy)
        body = " ".join(f"C {xy[k + 1]} {xy[k + 2]} {xy[(k + 3) % n]}" for k in range(0, n, 3))
        lines.append(
            f'<path d="M {xy[0]} {body} Z" fill="{_hex(col[p])}" '
            f'fill-opacity="{float(op[p].clamp(0, 1)):.4f}" fill-rule="nonzero"/>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def save_svg(path: str, scene: VectorScene, height: int, width: int) -> str:
    """Write :func:`to_svg` to ``path`` (nothing is written if the scene holds NaN/inf)."""
    text = to_svg(scene, height, width)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
