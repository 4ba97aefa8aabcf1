"""Differentiable rasterizer for closed cubic Bezier paths with solid fills: the generator g(psi) of
SVG restoration (main paper sec. 4.1, eq. 21).

Why it exists: the paper renders with DiffVG (Li et al. 2020), whose Python module ``pydiffvg`` is
built from a source checkout and cannot be installed from the package registries. :func:`render`
uses pydiffvg when it imports and this module's own PyTorch rasterizer otherwise (CPU and GPU alike).

Scene, in pixel units (x right, y down; pixel ``[i, j]`` is the unit square centred at
``(j + 1/2, i + 1/2)``, as in SVG): ``P`` closed paths of ``S >= 2`` cubic segments, ``points``
``[P, 3S, 2]``, segment ``k`` using points ``3k, 3k+1, 3k+2, 3k+3 (mod 3S)``; fill ``colors [P, 3]``,
``opacity [P]``, ``background [3]``.

PyTorch backend:
- Flattening: each segment becomes ``K`` chords with vertices on the curve; ``K`` follows Wang's bound
  ``K = ceil(sqrt(3/4 * M / tol))``, ``M = max |p_i - 2 p_{i+1} + p_{i+2}|``, so chords stay within
  ``tol`` pixels of the curve (at most 64 chords per segment).
- Coverage: with ``d`` the distance from the pixel centre to the polyline and the non-zero winding rule
  deciding the sign (``sd = -d`` inside), ``c = smoothstep(1/2 - sd / w)`` for a ramp of ``w`` pixels
  (``aa_width``). The ramp is odd-symmetric about the edge, so a straight edge's area is exact; the
  gradient to the control points flows through the nearest chord of the pixels within ``w / 2``.
- Compositing (SVG source-over, painter's order, later paths on top):
  ``pixel = sum_p a_p T_p color_p + T_bg background`` with ``a_p = opacity_p c_p``,
  ``T_p = prod_{q > p} (1 - a_q)`` and ``T_bg = prod_q (1 - a_q)``.
- Speed: paths are processed in groups sharing a padded bounding-box window (convex-hull bound);
  winding numbers come from scanline crossings (a scatter and a cumulative sum per row); distances are
  computed only for (8x8 tile, chord) pairs within reach of each other; compositing runs over the
  covered pixels only, layered by depth.
"""
from __future__ import annotations

import functools
import math
from typing import List, Tuple

import torch
from torch import Tensor

BACKENDS = ("auto", "torch", "diffvg")
TILE = 8
MAX_SAMPLES = 64
_GROUP_PIXELS = 1 << 21  # padded window pixels per group (bounds the working memory)


@functools.lru_cache(maxsize=None)
def diffvg_available() -> bool:
    """Whether ``pydiffvg`` imports on this machine."""
    try:
        import pydiffvg  # noqa: F401
    except Exception:
        return False
    return True


def validate_scene(points: Tensor, colors: Tensor, opacity: Tensor, background: Tensor) -> None:
    """Raise ``ValueError`` on shapes the rasterizer cannot draw or on non-finite values."""
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[1] % 3 != 0:
        raise ValueError(f"points must have shape [P, 3*S, 2] (S cubic segments per path), got {tuple(points.shape)}")
    if points.shape[0] > 0 and points.shape[1] // 3 < 2:
        raise ValueError(
            f"a closed path needs at least 2 cubic segments (6 control points), got {points.shape[1] // 3} "
            f"segment(s) ({points.shape[1]} control points)"
        )
    n = points.shape[0]
    if colors.shape != (n, 3) or opacity.shape != (n,) or background.shape != (3,):
        raise ValueError(
            f"expected colors [{n}, 3], opacity [{n}], background [3]; got {tuple(colors.shape)}, "
            f"{tuple(opacity.shape)}, {tuple(background.shape)}"
        )
    for name, t in (("points", points), ("colors", colors), ("opacity", opacity), ("background", background)):
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            raise ValueError(f"{name} holds a non-finite value (first at index {bad})")


def render(
    points: Tensor,
    colors: Tensor,
    opacity: Tensor,
    background: Tensor,
    height: int,
    width: int,
    *,
    backend: str = "auto",
    tolerance: float = 0.05,
    aa_width: float = 1.0,
) -> Tensor:
    """Rasterize the scene (module docstring) to an ``[height, width, 3]`` image.

    ``backend``: ``auto`` (pydiffvg if it imports, else ``torch``), ``torch`` or ``diffvg``.
    ``tolerance`` (pixels) and ``aa_width`` (pixels) apply to the torch backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {BACKENDS}")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"canvas must be at least 1x1, got {height}x{width}")
    if not (tolerance > 0 and aa_width > 0):
        raise ValueError(f"tolerance and aa_width must be positive, got {tolerance}, {aa_width}")
    validate_scene(points, colors, opacity, background)
    if backend == "diffvg" and not diffvg_available():
        raise ImportError("rasterizer backend 'diffvg' needs pydiffvg, which does not import here; use 'torch' or 'auto'")
    if backend == "diffvg" or (backend == "auto" and diffvg_available()):
        return _render_diffvg(points, colors, opacity, background, int(height), int(width))
    with torch.autocast(points.device.type, enabled=False):  # pixel coordinates need full precision
        pix, path, cov = coverage_fragments(points, int(height), int(width), tolerance, aa_width)
        return composite(pix, path, cov, colors, opacity, background, int(height), int(width))


# ------------------------------------------------------------------------------- geometry
def segment_controls(points: Tensor) -> Tensor:
    """``[P, 3S, 2]`` -> ``[P, S, 4, 2]`` control points of each closed path's segments."""
    n = points.shape[1]
    idx = (torch.arange(0, n, 3, device=points.device)[:, None] + torch.arange(4, device=points.device)) % n
    return points[:, idx]


def samples_per_segment(points: Tensor, tolerance: float) -> Tensor:
    """Chords per segment for each path from Wang's bound (module docstring), ``[P]`` ints."""
    ctrl = segment_controls(points.detach())
    second = (ctrl[:, :, :-2] - 2 * ctrl[:, :, 1:-1] + ctrl[:, :, 2:]).norm(dim=-1)
    m = second.flatten(1).amax(1)
    return torch.ceil(torch.sqrt(0.75 * m / tolerance)).clamp(1, MAX_SAMPLES).long()


def flatten(points: Tensor, k: int) -> Tensor:
    """Polyline vertices ``[P, S*k, 2]`` at parameters ``j / k`` of every segment (on the curve)."""
    t = torch.arange(k, dtype=points.dtype, device=points.device) / k
    u = 1 - t
    basis = torch.stack([u**3, 3 * u**2 * t, 3 * u * t**2, t**3], dim=-1)  # [k, 4]
    verts = torch.einsum("kc,pscd->pskd", basis, segment_controls(points))
    return verts.reshape(points.shape[0], -1, 2)


def _point_segment_d2(px: Tensor, py: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Squared distance from points ``(px, py)`` to segments ``a -> b`` (broadcasting, ``[..., 2]`` ends)."""
    ex, ey = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    dx, dy = px - a[..., 0], py - a[..., 1]
    t = ((dx * ex + dy * ey) / (ex * ex + ey * ey).clamp_min(1e-20)).clamp(0, 1)
    qx, qy = dx - t * ex, dy - t * ey
    return qx * qx + qy * qy


def _smoothstep(u: Tensor) -> Tensor:
    u = u.clamp(0, 1)
    return u * u * (3 - 2 * u)


# ------------------------------------------------------------------------------- coverage
def _windows(verts: Tensor, height: int, width: int, margin: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel window per path, ``x0, y0, w, h`` (ints; empty windows have ``w * h == 0``)."""
    lo, hi = verts.amin(1), verts.amax(1)
    x0 = torch.ceil(lo[:, 0] - margin - 0.5).clamp(0, width).long()
    y0 = torch.ceil(lo[:, 1] - margin - 0.5).clamp(0, height).long()
    x1 = torch.floor(hi[:, 0] + margin - 0.5).clamp(-1, width - 1).long() + 1
    y1 = torch.floor(hi[:, 1] + margin - 0.5).clamp(-1, height - 1).long() + 1
    return x0, y0, (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)


def _groups(area: List[int]) -> List[List[int]]:
    """Paths with a non-empty window, largest first, in groups of bounded padded pixel count."""
    order = sorted((i for i in range(len(area)) if area[i] > 0), key=lambda i: -area[i])
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * area[cur[0]] > _GROUP_PIXELS:
            groups.append(cur)
            cur = []
        cur.append(i)
    return groups + ([cur] if cur else [])


def _winding(verts: Tensor, x0: Tensor, y0: Tensor, hm: int, wm: int) -> Tensor:
    """Non-zero winding numbers ``[n, hm, wm]`` at pixel centres of each path's window (scanlines)."""
    a, b = verts, verts.roll(-1, dims=1)  # [n, E, 2]
    py = (y0[:, None] + torch.arange(hm, device=verts.device) + 0.5).to(verts.dtype)[:, :, None]  # [n, hm, 1]
    ay, by = a[:, None, :, 1], b[:, None, :, 1]
    up = (ay <= py) & (by > py)
    down = (by <= py) & (ay > py)
    xi = a[:, None, :, 0] + (py - ay) * (b[:, None, :, 0] - a[:, None, :, 0]) / torch.where(by == ay, 1.0, by - ay)
    # pixel j lies left of the crossing iff j < ceil(xi - x0 - 1/2)
    col = torch.ceil(xi - x0[:, None, None] - 0.5).clamp(0, wm).long()
    buf = torch.zeros(a.shape[0], hm, wm + 1, dtype=torch.int32, device=verts.device)
    buf.scatter_add_(2, col, up.int() - down.int())
    return buf.flip(-1).cumsum(-1, dtype=torch.int32).flip(-1)[..., 1:]


def _nearest_chords(verts: Tensor, x0: Tensor, y0: Tensor, hm: int, wm: int, margin: float) -> Tuple[Tensor, Tensor]:
    """For the window pixels within ``margin`` of a chord: flat window index and nearest chord index."""
    n, e = verts.shape[:2]
    dev = verts.device
    a, b = verts, verts.roll(-1, dims=1)
    lo = torch.minimum(a, b) - margin  # [n, E, 2]
    hi = torch.maximum(a, b) + margin
    origin = torch.stack([x0, y0], -1).to(verts.dtype)[:, None, :]  # [n, 1, 2]
    # tile t covers pixel centres origin + t*TILE + [1/2, TILE - 1/2]
    t_lo = torch.ceil((lo - origin - TILE + 0.5) / TILE).long()
    t_hi = torch.floor((hi - origin - 0.5) / TILE).long()
    ty, tx = torch.arange(hm // TILE, device=dev), torch.arange(wm // TILE, device=dev)
    hit_y = (ty >= t_lo[..., 1:2]) & (ty <= t_hi[..., 1:2])  # [n, E, TY]
    hit_x = (tx >= t_lo[..., 0:1]) & (tx <= t_hi[..., 0:1])  # [n, E, TX]
    pi, ei, tyi, txi = (hit_y[..., :, None] & hit_x[..., None, :]).nonzero(as_tuple=True)
    if pi.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    off = torch.arange(TILE, device=dev)
    iy = tyi[:, None, None] * TILE + off[None, :, None]  # [M, TILE, 1]
    ix = txi[:, None, None] * TILE + off[None, None, :]  # [M, 1, TILE]
    px = (x0[pi][:, None, None] + ix).to(verts.dtype) + 0.5
    py = (y0[pi][:, None, None] + iy).to(verts.dtype) + 0.5
    d2 = _point_segment_d2(px, py, a[pi, ei][:, None, None], b[pi, ei][:, None, None]).flatten(1)  # [M, TILE^2]
    flat = ((pi[:, None, None] * hm + iy) * wm + ix).flatten(1)
    flat, d2 = flat.flatten(), d2.flatten()
    dmin = torch.full((n * hm * wm,), math.inf, dtype=verts.dtype, device=dev)
    dmin.scatter_reduce_(0, flat, d2, reduce="amin")
    win = (d2 == dmin[flat]) & (d2 < margin * margin)
    edge = torch.full((n * hm * wm,), -1, dtype=torch.long, device=dev)
    edge.scatter_reduce_(0, flat[win], ei[:, None].expand(-1, TILE * TILE).flatten()[win], reduce="amax")
    band = (edge >= 0).nonzero(as_tuple=True)[0]
    return band, edge[band]


def coverage_fragments(
    points: Tensor, height: int, width: int, tolerance: float = 0.05, aa_width: float = 1.0
) -> Tuple[Tensor, Tensor, Tensor]:
    """Pixels each path covers: flat pixel index, path index and coverage in (0, 1] (differentiable).

    Interior pixels farther than ``aa_width / 2`` from the outline have coverage 1 (constant); the
    others get ``smoothstep(1/2 - sd / w)`` from the distance to their nearest chord.
    """
    margin = 0.5 * aa_width
    ks = samples_per_segment(points, tolerance)
    with torch.no_grad():
        x0, y0, w, h = _windows(points.detach(), height, width, margin)
    pix_l, path_l, cov_l = [], [], []
    for g in _groups((w * h).tolist()):
        gi = torch.tensor(g, device=points.device)
        verts = flatten(points[gi], int(ks[gi].max()))
        gx0, gy0 = x0[gi], y0[gi]
        hm = -(-int(h[gi].max()) // TILE) * TILE
        wm = -(-int(w[gi].max()) // TILE) * TILE
        with torch.no_grad():
            rows = torch.arange(hm, device=points.device)[None, :, None] < h[gi][:, None, None]
            cols = torch.arange(wm, device=points.device)[None, None, :] < w[gi][:, None, None]
            own = (rows & cols).flatten()  # each path's own window (inside the canvas)
            inside = (_winding(verts.detach(), gx0, gy0, hm, wm) != 0).flatten() & own
            band, edge = _nearest_chords(verts.detach(), gx0, gy0, hm, wm, margin)
            band, edge = band[own[band]], edge[own[band]]
            interior = inside.clone()
            interior[band] = False
            interior = interior.nonzero(as_tuple=True)[0]
        flat = torch.cat([interior, band])
        p, rem = flat // (hm * wm), flat % (hm * wm)
        x, y = gx0[p] + rem % wm, gy0[p] + rem // wm
        # outline band: smoothstep of the signed distance to the nearest chord
        n_in = interior.shape[0]
        a, b = verts[p[n_in:], edge], verts[p[n_in:], (edge + 1) % verts.shape[1]]
        d = _point_segment_d2((x[n_in:] + 0.5).to(verts.dtype), (y[n_in:] + 0.5).to(verts.dtype), a, b)
        sign = 1.0 - 2.0 * inside[band].to(verts.dtype)
        cov = torch.cat([verts.new_ones(n_in), _smoothstep(0.5 - sign * d.clamp_min(1e-30).sqrt() / aa_width)])
        pix_l.append(y * width + x)
        path_l.append(gi[p])
        cov_l.append(cov)
    if not pix_l:
        empty = torch.zeros(0, dtype=torch.long, device=points.device)
        return empty, empty, points.new_zeros(0)
    return torch.cat(pix_l), torch.cat(path_l), torch.cat(cov_l)


# ------------------------------------------------------------------------------- compositing
def composite(
    pix: Tensor, path: Tensor, cov: Tensor, colors: Tensor, opacity: Tensor, background: Tensor, height: int, width: int
) -> Tensor:
    """Source-over compositing of the fragments in path order (module docstring), ``[H, W, 3]``."""
    n_pix = height * width
    image = background.to(colors.dtype).expand(n_pix, 3)
    if pix.numel() == 0:
        return image.reshape(height, width, 3).clone()
    n_paths = max(int(opacity.shape[0]), 1)
    key, order = torch.sort(pix * n_paths + path)
    pix, path, cov = key // n_paths, key % n_paths, cov[order]
    upix, u, counts = torch.unique_consecutive(pix, return_inverse=True, return_counts=True)
    rank = torch.arange(pix.shape[0], device=pix.device) - (counts.cumsum(0) - counts)[u]
    alpha = opacity[path] * cov
    depth = int(counts.max())
    keep = torch.ones(depth + 1, upix.shape[0], dtype=alpha.dtype, device=alpha.device)
    keep = keep.index_put((rank, u), 1 - alpha)
    above = keep.flip(0).cumprod(0).flip(0)  # above[k] = prod_{j >= k} (1 - a_j); row `depth` is 1
    weight = alpha * above[rank + 1, u]
    trans = torch.ones(n_pix, dtype=alpha.dtype, device=alpha.device).index_put((upix,), above[0])
    image = image * trans[:, None]
    image = image.index_add(0, pix, weight[:, None] * colors[path])
    return image.reshape(height, width, 3)


# ------------------------------------------------------------------------------- pydiffvg
def _render_diffvg(points, colors, opacity, background, height, width) -> Tensor:
    """The same scene through pydiffvg (closed paths, non-zero fill, 2x2 samples per pixel)."""
    import pydiffvg

    pydiffvg.set_use_gpu(points.is_cuda)
    n_seg = points.shape[1] // 3
    shapes, groups = [], []
    for i in range(points.shape[0]):
        shapes.append(
            pydiffvg.Path(
                num_control_points=torch.full((n_seg,), 2, dtype=torch.int32),
                points=points[i].float(),
                stroke_width=torch.tensor(0.0),
                is_closed=True,
            )
        )
        fill = torch.cat([colors[i], opacity[i : i + 1]]).float()
        groups.append(pydiffvg.ShapeGroup(shape_ids=torch.tensor([i]), fill_color=fill, use_even_odd_rule=False))
    args = pydiffvg.RenderFunction.serialize_scene(width, height, shapes, groups)
    rgba = pydiffvg.RenderFunction.apply(width, height, 2, 2, 0, None, *args).to(points.device)
    alpha = rgba[..., 3:4]
    return (alpha * rgba[..., :3] + (1 - alpha) * background.float()).to(points.dtype)
