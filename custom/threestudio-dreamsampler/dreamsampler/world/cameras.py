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


def ring_azimuths(n: int = RING_VIEWS) -> list:
    """Azimuths of the ring, -180 first, in degrees."""
    return [-180.0 + 360.0 * k / n for k in range(n)]


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
