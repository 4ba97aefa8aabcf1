"""A procedural test scene with exact ground truth: a box with checker-textured coloured faces.

Rendered analytically (ray / axis-aligned box intersection by the slab method) from known cameras,
so the degraded-view pipeline can be measured against clean views on a machine with no data sets:

    t_enter = max_k min(t1_k, t2_k),  t_exit = min_k max(t1_k, t2_k),  t1,2_k = (+-h - o_k) / d_k

a ray hits when ``t_exit >= max(t_enter, 0)``; the face is the axis attaining ``t_enter`` (its sign
opposite to d_k); each face carries its own colour, darkened on alternate checker squares. Pixels are
averaged over ``supersample``^2 sub-pixel rays (the clean image of a pixel's area).

Command line (writes ``<out>/clean`` and ``<out>/degraded``, each a transforms.json + PNGs):
``python -m dreamsampler.multiview.procedural <out> [--size 64] [--views 16] [--operator '{"type": "blur", ...}']``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..image_io import bchw
from .cameras import focal_from_fov, rays, ring_c2w
from .views import RingSpec, Views, write_views

# +x, -x, +y, -y, +z, -z
FACE_COLOURS = torch.tensor(
    [[0.90, 0.20, 0.15], [0.15, 0.75, 0.80], [0.20, 0.75, 0.25], [0.80, 0.25, 0.75], [0.20, 0.35, 0.90], [0.95, 0.80, 0.15]]
)
CAPTION = "a cube with coloured checkerboard faces"
DEFAULT_OPERATOR = {"type": "blur", "kernel_size": 5, "sigma": 10.0}  # supp. sec. 5.1


def render_box(
    rays_o: Tensor,
    rays_d: Tensor,
    half_size: float = 0.35,
    checks: int = 4,
    dark: float = 0.55,
    background=(1.0, 1.0, 1.0),
) -> Tensor:
    """Colour ``[..., 3]`` seen along each ray (module docstring); ``background`` where it misses."""
    h = half_size
    d = torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t1, t2 = (-h - rays_o) / d, (h - rays_o) / d
    t_near, t_far = torch.minimum(t1, t2), torch.maximum(t1, t2)
    t_enter, axis = t_near.max(dim=-1)
    t_exit = t_far.min(dim=-1).values
    hit = t_exit >= t_enter.clamp_min(0.0)
    p = rays_o + t_enter[..., None] * rays_d
    sign_neg = torch.gather(rays_d, -1, axis[..., None])[..., 0] > 0  # entering through the -axis face
    face = 2 * axis + sign_neg.long()
    # the two in-face coordinates, in [0, 1)
    uv_axes = torch.tensor([[1, 2], [0, 2], [0, 1]])[axis]
    uv = (torch.gather(p, -1, uv_axes) + h) / (2 * h)
    cell = torch.floor(uv.clamp(0, 1 - 1e-6) * checks).long().sum(-1) % 2
    colour = FACE_COLOURS.to(rays_o)[face] * torch.where(cell == 1, dark, 1.0)[..., None]
    bg = torch.as_tensor(background, dtype=rays_o.dtype).expand_as(colour)
    return torch.where(hit[..., None], colour, bg)


def render_views(c2w: Tensor, size: int, fov_rad: float, supersample: int = 4, **box) -> Tensor:
    """Clean ``[N, 3, size, size]`` renders of the box from cameras ``c2w``, area-averaged per pixel."""
    s = int(supersample)
    big = size * s
    o, d = rays(c2w, big, big, focal_from_fov(fov_rad, big))
    img = render_box(o, d, **box)
    return F.avg_pool2d(bchw(img), s).contiguous()


def scene_views(size: int = 64, ring: Optional[RingSpec] = None, supersample: int = 4) -> Views:
    """The clean views of the scene on the camera ring ``ring`` (in memory)."""
    ring = ring or RingSpec()
    c2w = ring_c2w(ring.n_views, ring.elevation_deg, ring.distance, ring.azimuth0_deg)
    fov = math.radians(ring.fovy_deg)
    return Views(render_views(c2w, size, fov, supersample), c2w, focal_from_fov(fov, size), [])


def make_scene(
    out_dir: str,
    size: int = 64,
    ring: Optional[RingSpec] = None,
    operator: Optional[dict] = None,
    seed: int = 0,
    supersample: int = 4,
) -> dict:
    """Write ``out_dir/clean`` and ``out_dir/degraded`` (the operator applied to the clean views);
    returns the paths, the caption and the operator spec."""
    from ..inverse.operators import build_operator

    ring = ring or RingSpec()
    operator = dict(operator or DEFAULT_OPERATOR)
    views = scene_views(size, ring, supersample)
    clean, c2w, fov = views.images, views.c2w, math.radians(ring.fovy_deg)
    A = build_operator(operator)
    with torch.no_grad():  # the generator drives the noise of a noisy operator
        y = A.measure(clean, torch.Generator().manual_seed(seed))
    clean_dir, deg_dir = os.path.join(out_dir, "clean"), os.path.join(out_dir, "degraded")
    write_views(clean_dir, clean, c2w, fov)
    write_views(deg_dir, y, c2w, fov)
    info = {"clean": clean_dir, "degraded": deg_dir, "caption": CAPTION, "operator": operator}
    with open(os.path.join(out_dir, "scene.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--elevation", type=float, default=30.0)
    parser.add_argument("--operator", type=json.loads, default=DEFAULT_OPERATOR)
    args = parser.parse_args(argv)
    info = make_scene(args.out, args.size, RingSpec(n_views=args.views, elevation_deg=args.elevation), args.operator)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
