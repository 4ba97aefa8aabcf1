"""Shaded 3D primitives on white (or a given background), ray cast analytically (2x supersampled)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .attributes import Attributes, Camera
from .cameras import camera_rays, camera_to_world, sample_camera
from .captions import object_caption
from .palette import COLOUR_NAMES, IMAGE_SIZE, OBJECT_SHAPES, object_albedo

SIZE_RANGE = (0.3, 0.45)  # bounding radius in world units
AMBIENT, DIFFUSE = 0.3, 0.7
# light direction in camera axes (right, up, backward): from behind the camera, above and to the left
LIGHT_CAMERA = F.normalize(torch.tensor([-0.4, 0.6, 1.0]), dim=0)
SUPERSAMPLE = 2
INF = float("inf")


def _first(t_list, n_list):
    """Nearest positive hit among candidate (t [N], normal [N,3]) pairs."""
    t = torch.stack(t_list)
    t = torch.where(t > 1e-6, t, torch.full_like(t, INF))
    best = t.argmin(0)
    normals = torch.stack(n_list)[best, torch.arange(t.shape[1])]
    return t.gather(0, best[None])[0], normals


def _quadratic_roots(a, b, c):
    """Roots of a t^2 + 2 b t + c = 0 (inf where none)."""
    disc = b * b - a * c
    ok = (disc >= 0) & (a.abs() > 1e-9)
    s = disc.clamp_min(0).sqrt()
    a_safe = torch.where(ok, a, torch.ones_like(a))
    t0, t1 = (-b - s) / a_safe, (-b + s) / a_safe
    inf = torch.full_like(a, INF)
    return torch.where(ok, torch.minimum(t0, t1), inf), torch.where(ok, torch.maximum(t0, t1), inf)


def _cap(o, d, z, radius, up):
    """Disk of ``radius`` at height z facing +z (up) or -z."""
    dz = torch.where(d[:, 2].abs() > 1e-9, d[:, 2], torch.full_like(d[:, 2], 1e-9))
    t = (z - o[:, 2]) / dz
    p = o + t[:, None] * d
    t = torch.where(p[:, 0] ** 2 + p[:, 1] ** 2 <= radius**2, t, torch.full_like(t, INF))
    return t, torch.tensor([0.0, 0.0, 1.0 if up else -1.0]).expand_as(o)


def intersect(shape: str, size: float, o: torch.Tensor, d: torch.Tensor):
    """Ray hits [N] (inf: miss) and unit normals [N,3] of a primitive of bounding radius ``size``
    centred at the origin, axis along z."""
    if shape == "sphere":
        t, _ = _quadratic_roots((d * d).sum(-1), (o * d).sum(-1), (o * o).sum(-1) - size**2)
        return t, F.normalize(o + t.clamp(max=1e3)[:, None] * d, dim=-1)
    if shape == "cube":
        a = size / 3**0.5
        dd = torch.where(d.abs() > 1e-9, d, torch.full_like(d, 1e-9))
        t1, t2 = (-a - o) / dd, (a - o) / dd
        near, far = torch.minimum(t1, t2), torch.maximum(t1, t2)
        tmin, axis = near.max(-1)
        t = torch.where(tmin <= far.min(-1).values, tmin, torch.full_like(tmin, INF))
        n = torch.zeros_like(o)
        n[torch.arange(len(o)), axis] = -torch.sign(d[torch.arange(len(o)), axis])
        return t, n
    if shape == "cylinder":
        r = h = size / 2**0.5
        t0, t1 = _quadratic_roots(
            d[:, 0] ** 2 + d[:, 1] ** 2, o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1], o[:, 0] ** 2 + o[:, 1] ** 2 - r**2
        )
        side = []
        for t in (t0, t1):
            z = o[:, 2] + t.clamp(max=1e3) * d[:, 2]
            side.append(torch.where(z.abs() <= h, t, torch.full_like(t, INF)))
        p = o + side[0].clamp(max=1e3)[:, None] * d
        n_side = F.normalize(p * torch.tensor([1.0, 1.0, 0.0]), dim=-1)
        top, bottom = _cap(o, d, h, r, True), _cap(o, d, -h, r, False)
        return _first([side[0], top[0], bottom[0]], [n_side, top[1], bottom[1]])
    if shape == "cone":  # apex at z = h, base radius r at z = -h
        r, h = size * 0.8, size * 0.6
        k2 = (r / (2 * h)) ** 2
        w = h - o[:, 2]
        t0, t1 = _quadratic_roots(
            d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2,
            o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] + k2 * w * d[:, 2],
            o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w**2,
        )
        ts, ns = [], []
        for t in (t0, t1):
            p = o + t.clamp(max=1e3)[:, None] * d
            ts.append(torch.where(p[:, 2].abs() <= h, t, torch.full_like(t, INF)))
            ns.append(F.normalize(torch.stack([p[:, 0], p[:, 1], k2 * (h - p[:, 2])], -1), dim=-1))
        base = _cap(o, d, -h, r, False)
        return _first(ts + [base[0]], ns + [base[1]])
    raise ValueError(shape)


class ObjectRenderer:
    """The analytic renderer of one object, callable for any camera: ``render(c2w, fovy, H, W)``."""

    def __init__(self, shape: str, colour: str, size: float):
        self.shape, self.colour, self.size = shape, colour, size

    def __call__(self, c2w: torch.Tensor, fovy_deg: float, height: int, width: int, background=None) -> torch.Tensor:
        """Image [3,H,W] in [0,1] seen through the threestudio camera ``c2w`` [4,4] (or [3,4]), on white or on
        ``background`` (a grey level or an RGB triple in [0,1])."""
        c2w = c2w.float().cpu()
        s = SUPERSAMPLE
        o, d = camera_rays(c2w, fovy_deg, height * s, width * s)
        t, n = intersect(self.shape, self.size, o.reshape(-1, 3), d.reshape(-1, 3))
        light = c2w[:3, :3] @ LIGHT_CAMERA
        shade = AMBIENT + DIFFUSE * (n @ light).clamp_min(0)
        rgb = object_albedo(self.colour)[None] * shade[:, None]
        bg = torch.ones_like(rgb) if background is None else torch.as_tensor(background, dtype=rgb.dtype).expand_as(rgb)
        rgb = torch.where(torch.isfinite(t)[:, None], rgb, bg)
        img = rgb.T.reshape(3, height * s, width * s)
        return F.avg_pool2d(img[None], s)[0]


def sample_object_attrs(g: torch.Generator, camera: Camera | None = None) -> Attributes:
    """Draw a shape, a colour, a size and (unless given) a camera."""
    shape = OBJECT_SHAPES[int(torch.randint(4, (), generator=g))]
    colour = COLOUR_NAMES[int(torch.randint(5, (), generator=g))]
    size = SIZE_RANGE[0] + (SIZE_RANGE[1] - SIZE_RANGE[0]) * torch.rand((), generator=g).item()
    cam = camera if camera is not None else sample_camera(g)
    return Attributes("object", [shape], [colour], [(0.0, 0.0, 0.0)], [size], camera=cam)


def renderer_for(attrs: Attributes) -> ObjectRenderer:
    """The analytic renderer of an object's ground truth."""
    return ObjectRenderer(attrs.shapes[0], attrs.colours[0], attrs.sizes[0])


def sample_object(g: torch.Generator, camera: Camera | None = None, size: int = IMAGE_SIZE):
    """One object: (image [3,64,64] in [0,1], caption, Attributes)."""
    attrs = sample_object_attrs(g, camera)
    cam = attrs.camera
    image = renderer_for(attrs)(camera_to_world(cam), cam.fovy, size, size)
    return image, object_caption(attrs.colours[0], attrs.shapes[0], cam.elevation, cam.azimuth), attrs
