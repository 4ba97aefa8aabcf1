"""Cameras in threestudio's conventions: z up, azimuth 0 on +x, OpenGL camera axes (looks along -z)."""
from __future__ import annotations

import math

import torch

from ..multiview.cameras import focal_from_fov, look_at, orbit_positions, rays
from .attributes import Camera

# threestudio's random-camera defaults for training (uncond / RandomCameraDataModule ranges)
ELEVATION_RANGE = (-10.0, 90.0)
AZIMUTH_RANGE = (-180.0, 180.0)
DISTANCE_RANGE = (1.5, 2.0)
FOVY_RANGE = (40.0, 70.0)
# the evaluation ring: 16 azimuths at elevation 30
RING_VIEWS, RING_ELEVATION, RING_DISTANCE, RING_FOVY = 16, 30.0, 1.75, 55.0
RING_PROB = 0.25  # share of object images drawn from the ring
# threestudio's evaluation orbit (RandomCameraDataset, the val / test views of random-camera-datamodule) as
# the text-to-NeRF config sets it: eval_camera_distance 2.0 and eval_fovy_deg 70 from the config, the
# elevation threestudio's eval_elevation_deg default (the config leaves it); azimuths from 0 over 360
ORBIT_ELEVATION, ORBIT_DISTANCE, ORBIT_FOVY = 15.0, 2.0, 70.0


def ring_azimuths(n: int = RING_VIEWS) -> list:
    """Azimuths of the ring, -180 first, in degrees."""
    return [-180.0 + 360.0 * k / n for k in range(n)]


def orbit_azimuths(n: int, split: str = "test") -> list:
    """Azimuths in degrees of threestudio's ``n`` evaluation views: ``linspace(0, 360, n)`` for test (the
    first and last views coincide), ``linspace(0, 360, n + 1)[:n]`` for val."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be val or test, got {split!r}")
    azimuths = torch.linspace(0.0, 360.0, n + 1 if split == "val" else n)[:n]
    return azimuths.tolist()


def sample_camera(g: torch.Generator) -> Camera:
    """A random camera (uniform in each range) or, with probability RING_PROB, a ring view."""
    u = lambda lo, hi: lo + (hi - lo) * torch.rand((), generator=g).item()
    if torch.rand((), generator=g).item() < RING_PROB:
        azi = ring_azimuths()[int(torch.randint(RING_VIEWS, (), generator=g))]
        return Camera(RING_ELEVATION, azi, RING_DISTANCE, RING_FOVY)
    return Camera(u(*ELEVATION_RANGE), u(*AZIMUTH_RANGE), u(*DISTANCE_RANGE), u(*FOVY_RANGE))


def camera_to_world(cam: Camera) -> torch.Tensor:
    """threestudio's c2w [4,4] of a camera looking at the origin with z up (``multiview.cameras``)."""
    el = torch.tensor([min(cam.elevation, 89.9)])  # straight overhead has no defined right vector
    return look_at(orbit_positions(el, torch.tensor([cam.azimuth]), torch.tensor([cam.distance])))[0]


def camera_rays(c2w: torch.Tensor, fovy_deg: float, height: int, width: int):
    """World-space ray origins and unit directions [H,W,3] through pixel centres (threestudio's
    get_ray_directions + get_rays, as ``multiview.cameras.rays``)."""
    o, d = rays(c2w[None], height, width, focal_from_fov(math.radians(fovy_deg), height))
    return o[0], d[0]
