"""Cameras in threestudio's conventions: z up, azimuth 0 on +x, OpenGL camera axes (looks along -z)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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
    """threestudio's c2w [4,4] of a camera looking at the origin with z up."""
    el = math.radians(min(cam.elevation, 89.9))  # straight overhead has no defined right vector
    az = math.radians(cam.azimuth)
    pos = cam.distance * torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    lookat = F.normalize(-pos, dim=0)
    right = F.normalize(torch.linalg.cross(lookat, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    up = F.normalize(torch.linalg.cross(right, lookat), dim=0)
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.stack([right, up, -lookat], dim=1)
    c2w[:3, 3] = pos
    return c2w


def camera_rays(c2w: torch.Tensor, fovy_deg: float, height: int, width: int):
    """World-space ray origins and unit directions [H,W,3] through pixel centres (threestudio's
    get_ray_directions + get_rays)."""
    focal = 0.5 * height / math.tan(0.5 * math.radians(fovy_deg))
    j, i = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    d = torch.stack([(i - width / 2) / focal, -(j - height / 2) / focal, -torch.ones_like(i)], dim=-1)
    d = F.normalize(d @ c2w[:3, :3].T, dim=-1)
    return c2w[:3, 3].expand_as(d), d
