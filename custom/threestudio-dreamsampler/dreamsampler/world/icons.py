"""Flat icons: one to three palette-coloured shapes on white, anti-aliased by 4x supersampling."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .attributes import Attributes
from .captions import icon_caption
from .palette import COLOUR_NAMES, ICON_SHAPES, IMAGE_SIZE, colour_rgb

COUNT_PROBS = (0.5, 0.3, 0.2)  # one, two, three shapes
SIZE_RANGE = (0.08, 0.2)  # circumradius, fraction of the image width
STAR_INNER = 0.382  # inner / outer radius of the five-pointed star (a regular pentagram)
SUPERSAMPLE = 4


def _rand(g, lo=0.0, hi=1.0) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def sample_icon_attrs(g: torch.Generator, count: int | None = None) -> Attributes:
    """Draw shapes, colours, sizes, rotations and non-overlapping positions (bounding circles apart)."""
    if count is None:
        count = 1 + int(torch.multinomial(torch.tensor(COUNT_PROBS), 1, generator=g))
    while True:  # rejection sampling; three shapes of the largest size still fit easily
        sizes = [_rand(g, *SIZE_RANGE) for _ in range(count)]
        pos = [(_rand(g, r, 1 - r), _rand(g, r, 1 - r)) for r in sizes]
        if all(
            math.dist(pos[i], pos[j]) > sizes[i] + sizes[j] + 0.02 for i in range(count) for j in range(i)
        ):
            break
    shapes = [ICON_SHAPES[int(torch.randint(4, (), generator=g))] for _ in range(count)]
    colours = [COLOUR_NAMES[int(torch.randint(5, (), generator=g))] for _ in range(count)]
    rotations = [_rand(g, 0.0, 360.0) for _ in range(count)]
    order = sorted(range(count), key=lambda i: pos[i][0])  # captions read left to right
    pick = lambda xs: [xs[i] for i in order]
    return Attributes("icon", pick(shapes), pick(colours), pick(pos), pick(sizes), pick(rotations))


def shape_mask(shape: str, x: torch.Tensor, y: torch.Tensor, radius: float) -> torch.Tensor:
    """Boolean inside-test of a shape of circumradius ``radius`` at the origin, in its own frame
    (a vertex of square, triangle and star points along +x)."""
    rho, phi = torch.hypot(x, y), torch.atan2(y, x)
    if shape == "circle":
        return rho <= radius
    if shape == "square":
        xr, yr = (x + y) / math.sqrt(2), (y - x) / math.sqrt(2)  # rotate 45 deg: corners on the axes
        return torch.maximum(xr.abs(), yr.abs()) <= radius / math.sqrt(2)
    if shape == "triangle":  # inradius = R/2; edge normals point away from the three vertices
        inside = torch.ones_like(x, dtype=torch.bool)
        for k in range(3):
            a = math.pi + 2 * math.pi * k / 3
            inside &= x * math.cos(a) + y * math.sin(a) <= radius / 2
        return inside
    if shape == "star":  # fold into one 36-degree half-sector: tip (R, 0) to inner vertex (r, 36 deg)
        sector = 2 * math.pi / 5
        f = torch.remainder(phi + sector / 2, sector) - sector / 2
        px, py = rho * torch.cos(f), rho * torch.sin(f).abs()
        ix, iy = radius * STAR_INNER * math.cos(sector / 2), radius * STAR_INNER * math.sin(sector / 2)
        cross = (ix - radius) * (py - 0.0) - iy * (px - radius)  # > 0: left of tip -> inner edge
        return cross >= 0
    raise ValueError(shape)


def render_icon(attrs: Attributes, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The icon image [3,size,size] in [0,1]: white background, shapes painted in order."""
    n = size * SUPERSAMPLE
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    img = torch.ones(3, n, n)
    for shape, colour, (px, py), r, rot in zip(
        attrs.shapes, attrs.colours, attrs.positions, attrs.sizes, attrs.rotations
    ):
        a = math.radians(rot)
        dx, dy = xx - px, yy - py
        lx, ly = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
        m = shape_mask(shape, lx, ly, r)
        img[:, m] = colour_rgb(colour)[:, None]
    return F.avg_pool2d(img[None], SUPERSAMPLE)[0]


def sample_icon(g: torch.Generator, count: int | None = None):
    """One icon: (image [3,64,64] in [0,1], caption, Attributes)."""
    attrs = sample_icon_attrs(g, count)
    return render_icon(attrs), icon_caption(attrs.colours, attrs.shapes), attrs
