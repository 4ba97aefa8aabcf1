"""Analytic reading of flat icons: palette segmentation, connected components, shape by template fit.

Each pixel takes the nearest of white and the five palette colours. Every connected region of one
colour (8-connected, at least ``MIN_AREA`` pixels) is a shape. Its position and circumradius come from a
soft (anti-aliasing aware) mask, upsampled 4x. Its shape is read by analysis by synthesis: for each of
circle, square, triangle and star the world's own rasterizer (``icons.shape_mask``, 4x supersampled)
draws the shape at the region's centroid with the area the soft mask holds (blur keeps the area), at
every ``ROTATION_STEP`` degrees of the shape's symmetry period; template and region are both blurred by
``FIT_BLUR`` pixels, so that blur (a VAE, a diffusion model) and small irregularities weigh little, and
the shape whose best rotation leaves the least squared residual is the reading. Nothing on the package
registries reads these shapes, hence this module. (An earlier rule ranked the radial harmonics of the
boundary: with a wobble of 0.75 px RMS on the outlines, ``evaluator.warp``, it read 86.2% of held-out
icons' shapes right, this fit 99.6%.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..inverse.operators import GaussianBlur
from .icons import SUPERSAMPLE, shape_mask
from .palette import COLOUR_NAMES, COLOURS

MIN_AREA = 8  # pixels; the smallest world shape (a star of radius 0.08 at 64 px) covers about 30
UPSAMPLE = 4
SYMMETRY = {"circle": 0.0, "triangle": 120.0, "square": 90.0, "star": 72.0}  # rotation period, degrees
ROTATION_STEP = 3.0  # degrees
FIT_BLUR = 1.0  # Gaussian sigma, pixels
_REFS = torch.tensor([(1.0, 1.0, 1.0)] + [COLOURS[c] for c in COLOUR_NAMES])  # 0: white


def _components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels [H,W] (0: background) by max-label propagation."""
    h, w = mask.shape
    lab = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).reshape(h, w), torch.zeros(h, w))
    while True:
        new = F.max_pool2d(lab[None, None], 3, 1, 1)[0, 0] * mask
        if torch.equal(new, lab):
            return lab.long()
        lab = new


def _unit_area(shape: str, n: int = 400) -> float:
    """Area of a shape of circumradius 1, counted on an n x n grid."""
    c = (torch.arange(n) + 0.5) / n * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return shape_mask(shape, x, y, 1.0).float().mean().item() * 4


_UNIT_AREA = {shape: _unit_area(shape) for shape in SYMMETRY}


def _geometry(alpha: torch.Tensor, mask: torch.Tensor):
    """Centroid (pixels) and circumradius of one soft shape mask, measured on a bilinearly upsampled
    copy thresholded at 1/2."""
    iy, ix = torch.nonzero(mask, as_tuple=True)
    y0, x0 = max(int(iy.min()) - 2, 0), max(int(ix.min()) - 2, 0)
    crop = alpha[y0 : int(iy.max()) + 3, x0 : int(ix.max()) + 3]
    up = F.interpolate(crop[None, None], scale_factor=UPSAMPLE, mode="bilinear", align_corners=False)[0, 0]
    sy, sx = torch.nonzero(up >= 0.5, as_tuple=True)
    if len(sy) < 3:
        return None
    px, py = (sx + 0.5) / UPSAMPLE + x0, (sy + 0.5) / UPSAMPLE + y0
    cx, cy = px.mean().item(), py.mean().item()
    return (cx, cy), torch.hypot(px - cx, py - cy).max().item() + 0.5 / UPSAMPLE


_blur = GaussianBlur(2 * math.ceil(3 * FIT_BLUR) + 1, FIT_BLUR, border_type="constant")


def fit_shapes(alpha: torch.Tensor) -> dict:
    """{shape: relative residual} of the best rotation of each world shape against one soft shape mask
    ``alpha`` [H,W] (zero off the shape); the reading is the smallest."""
    h, w = alpha.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    area = alpha.sum()
    cx, cy = ((alpha * xs).sum() / area).item(), ((alpha * ys).sum() / area).item()
    half = math.ceil(math.sqrt(area.item() / min(_UNIT_AREA.values()))) + 3
    n, x0, y0 = 2 * half, int(cx) - half, int(cy) - half
    crop = F.pad(alpha, (n, n, n, n))[y0 + n : y0 + 2 * n, x0 + n : x0 + 2 * n]
    observed = _blur(crop[None, None])
    norm = observed.pow(2).sum()
    c = (torch.arange(n * SUPERSAMPLE, dtype=torch.float32) + 0.5) / SUPERSAMPLE
    yy, xx = torch.meshgrid(c + y0 - cy, c + x0 - cx, indexing="ij")
    fits = {}
    for shape, period in SYMMETRY.items():
        a = torch.deg2rad(torch.arange(0.0, period, ROTATION_STEP) if period else torch.zeros(1))[:, None, None]
        lx, ly = xx * torch.cos(a) + yy * torch.sin(a), -xx * torch.sin(a) + yy * torch.cos(a)
        radius = math.sqrt(area.item() / _UNIT_AREA[shape])
        template = F.avg_pool2d(shape_mask(shape, lx, ly, radius).float()[:, None], SUPERSAMPLE)
        residual = (_blur(template) - observed).pow(2).flatten(1).sum(1) / norm
        fits[shape] = residual.min().item()
    return fits


def read_icon(image: torch.Tensor) -> dict:
    """Shapes in one icon image [3,H,W] in [0,1], left to right: dict of lists ``colours``, ``shapes``,
    ``positions`` ((x, y) fractions of the width), ``sizes`` (circumradius fraction), ``fits``
    (``fit_shapes`` of each) and ``count``."""
    img = image.detach().float().cpu().clamp(0, 1)
    _, h, w = img.shape
    pix = img.permute(1, 2, 0)
    label = ((pix[:, :, None, :] - _REFS) ** 2).sum(-1).argmin(-1)  # [H,W] in 0..5
    found = []
    for ci, name in enumerate(COLOUR_NAMES, start=1):
        mask = label == ci
        if mask.sum() < MIN_AREA:
            continue
        comps = _components(mask)
        c = _REFS[ci]
        # soft coverage of this colour: where a pixel lies on the line white -> colour
        alpha = (((1 - pix) * (1 - c)).sum(-1) / ((1 - c) ** 2).sum()).clamp(0, 1)
        for k in comps.unique()[1:]:
            m = comps == k
            if m.sum() < MIN_AREA:
                continue
            ring = F.max_pool2d(m[None, None].float(), 3, 1, 1)[0, 0].bool() & ((label == 0) | m)
            geo = _geometry(alpha * ring, m)
            if geo is None:
                continue
            (cx, cy), r = geo
            fits = fit_shapes(alpha * ring)
            found.append(dict(colour=name, shape=min(fits, key=fits.get), position=(cx / w, cy / h), size=r / w, fits=fits))
    found.sort(key=lambda f: f["position"][0])
    out = {key + "s": [f[key] for f in found] for key in ("colour", "shape", "position", "size")}
    out["fits"] = [f["fits"] for f in found]
    out["count"] = len(found)
    return out
