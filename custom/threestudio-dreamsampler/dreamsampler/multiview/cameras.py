"""Pinhole cameras in threestudio's (and NeRF-synthetic's) convention, pure PyTorch.

World: right-handed, z up; an orbit camera at elevation e and azimuth a (degrees, azimuth from +x
towards +y) sits at ``r (cos e cos a, cos e sin a, sin e)``. Camera: OpenGL/Blender axes (x right,
y up, looking down -z), so ``c2w = [right | up | -lookat | position]``, which is the
``transform_matrix`` of a NeRF-synthetic ``transforms.json``. Pixel (i, j) is sampled at its centre:

    d_cam = ((i + 0.5 - W/2) / f, -(j + 0.5 - H/2) / f, -1),   d_world = R d_cam,   o = t

exactly as threestudio's ``get_ray_directions`` / ``get_rays`` (checked in the host tests).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def focal_from_fov(fov_rad: float, size: int) -> float:
    """Focal length in pixels for a field of view spanning ``size`` pixels."""
    return 0.5 * size / math.tan(0.5 * fov_rad)


def look_at(positions: Tensor, center: Tensor | None = None, up=(0.0, 0.0, 1.0)) -> Tensor:
    """``[B, 4, 4]`` camera-to-world matrices of cameras at ``positions`` [B, 3] looking at ``center``."""
    positions = positions.float()
    center = torch.zeros_like(positions) if center is None else center.expand_as(positions)
    up = torch.as_tensor(up, dtype=positions.dtype).expand_as(positions)
    lookat = F.normalize(center - positions, dim=-1)
    right = F.normalize(torch.cross(lookat, up, dim=-1), dim=-1)
    up = F.normalize(torch.cross(right, lookat, dim=-1), dim=-1)
    c2w = torch.zeros(positions.shape[0], 4, 4, dtype=positions.dtype)
    c2w[:, :3, :3] = torch.stack([right, up, -lookat], dim=-1)
    c2w[:, :3, 3] = positions
    c2w[:, 3, 3] = 1.0
    return c2w


def orbit_positions(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """Cartesian camera centres of orbit cameras (see module docstring)."""
    e, a = torch.deg2rad(elevation_deg.float()), torch.deg2rad(azimuth_deg.float())
    r = distance.float()
    return torch.stack([r * e.cos() * a.cos(), r * e.cos() * a.sin(), r * e.sin()], dim=-1)


def ring_c2w(n_views: int = 16, elevation_deg: float = 30.0, distance: float = 1.5, azimuth0_deg: float = 0.0) -> Tensor:
    """The fixed ring of ``n_views`` cameras at one elevation, azimuths ``azimuth0 + 360 k / n``
    (the layout multi-view generators such as SyncDreamer produce: 16 views at 30 degrees)."""
    if n_views < 1:
        raise ValueError(f"a camera ring needs at least one view, got {n_views}")
    az = azimuth0_deg + torch.arange(n_views, dtype=torch.float32) * 360.0 / n_views
    el = torch.full_like(az, float(elevation_deg))
    return look_at(orbit_positions(el, az, torch.full_like(az, float(distance))))


def azimuth_bin(azimuth_deg: Tensor, bins: int) -> Tensor:
    """Index in ``0..bins-1`` of the azimuth sector each camera lies in: ``bins`` equal sectors, sector 0
    centred on azimuth 0 (threestudio's front view), counted towards positive azimuths; any azimuth in
    degrees (wrapped). With 4 bins these are threestudio's front / side / back / side directions."""
    if bins < 1:
        raise ValueError(f"azimuth bins must be >= 1, got {bins}")
    width = 360.0 / bins
    return torch.remainder(torch.floor((azimuth_deg.double() + width / 2) / width), bins).long()


def spherical(c2w: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(elevation_deg, azimuth_deg, distance) of camera centres, the inverse of ``orbit_positions``."""
    p = c2w[:, :3, 3]
    r = p.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((p[:, 2] / r.clamp_min(1e-8)).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(p[:, 1], p[:, 0]))
    return elevation, azimuth, r


def ray_directions(height: int, width: int, focal: float) -> Tensor:
    """``[H, W, 3]`` camera-space directions through pixel centres (module docstring)."""
    i, j = torch.meshgrid(
        torch.arange(width, dtype=torch.float32) + 0.5,
        torch.arange(height, dtype=torch.float32) + 0.5,
        indexing="xy",
    )
    return torch.stack([(i - width / 2) / focal, -(j - height / 2) / focal, -torch.ones_like(i)], -1)


def rays(c2w: Tensor, height: int, width: int, focal: float, normalize: bool = True) -> Tuple[Tensor, Tensor]:
    """World-space ``(rays_o, rays_d)``, each ``[B, H, W, 3]``, for cameras ``c2w`` [B, 4, 4]."""
    d = ray_directions(height, width, focal).to(c2w)
    rays_d = (d[None, :, :, None, :] * c2w[:, None, None, :3, :3]).sum(-1)
    if normalize:
        rays_d = F.normalize(rays_d, dim=-1)
    rays_o = c2w[:, None, None, :3, 3].expand(rays_d.shape)
    return rays_o, rays_d


def _axis_angle(R: Tensor) -> Tensor:
    """Rotation vector of a rotation matrix (angle in [0, pi])."""
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    angle = torch.acos(cos)
    w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = torch.sin(angle)
    if float(sin) < 1e-6:
        if float(angle) < 1e-3:  # (near) identity
            return 0.5 * w
        # angle near pi: axis from the symmetric part
        B = (R + torch.eye(3, dtype=R.dtype)) / 2
        axis = F.normalize(B[torch.argmax(B.diagonal())], dim=-1)
        return axis * angle
    return w * (angle / (2 * sin))


def _rotation(v: Tensor) -> Tensor:
    """Rodrigues' formula: the rotation matrix of a rotation vector."""
    angle = v.norm()
    K = torch.zeros(3, 3, dtype=v.dtype)
    if float(angle) < 1e-12:
        return torch.eye(3, dtype=v.dtype)
    k = v / angle
    K[0, 1], K[0, 2], K[1, 2] = -k[2], k[1], -k[0]
    K = K - K.T
    return torch.eye(3, dtype=v.dtype) + torch.sin(angle) * K + (1 - torch.cos(angle)) * K @ K


def interpolate_c2w(a: Tensor, b: Tensor, ratio: float) -> Tensor:
    """A camera between ``a`` and ``b`` [4, 4]: the geodesic rotation R = R_a exp(r log(R_a^T R_b)), and
    the world origin (the scene centre) seen from the camera, q = -R^T t, interpolated linearly; so
    cameras that orbit the origin stay on the orbit and keep looking at the origin."""
    Ra, Rb = a[:3, :3].double(), b[:3, :3].double()
    R = Ra @ _rotation(ratio * _axis_angle(Ra.T @ Rb))
    qa, qb = -Ra.T @ a[:3, 3].double(), -Rb.T @ b[:3, 3].double()
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3], out[:3, 3] = R, -R @ ((1 - ratio) * qa + ratio * qb)
    return out.to(a.dtype)


def neighbour_pairs(c2w: Tensor, k: int = 2) -> list:
    """Unordered pairs (i, j) of each camera with its ``k`` angularly nearest cameras (seen from the origin)."""
    p = F.normalize(c2w[:, :3, 3], dim=-1)
    n = p.shape[0]
    if n < 2:
        return []
    cos = p @ p.T
    cos.fill_diagonal_(-2.0)
    near = cos.topk(min(k, n - 1), dim=-1).indices
    return sorted({tuple(sorted((i, int(j)))) for i in range(n) for j in near[i]})


def novel_c2w(c2w: Tensor, per_pair: int = 1, k: int = 2) -> Tensor:
    """Fixed novel cameras between data cameras: ``per_pair`` cameras at ratios m / (per_pair + 1) on
    each pair of neighbouring views (see ``neighbour_pairs``). ``[M, 4, 4]``."""
    out = [
        interpolate_c2w(c2w[i], c2w[j], m / (per_pair + 1))
        for i, j in neighbour_pairs(c2w, k)
        for m in range(1, per_pair + 1)
    ]
    return torch.stack(out) if out else torch.zeros(0, 4, 4, dtype=c2w.dtype)
