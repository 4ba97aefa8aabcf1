"""Multi-view scenes of world objects with exact ground truth, for the degraded-view NeRF.

One object (``sample_object_attrs``) seen from the world's evaluation ring (16 views at elevation 30,
``cameras.RING_*``), written as view folders the ``dreamsampler-multiview-datamodule`` reads:

- ``clean/``: the analytic renders (ground truth); ``degraded/``: the operator applied to them (y = A x);
- ``heldout/``: 8 clean views no data view sees: azimuths midway between every other pair of ring views
  (so not the training's novel cameras, which sit between every pair at the ring's elevation),
  elevations alternating 15 and 45 degrees.

Written as NeRF-synthetic folders (``multiview.views.write_views``), so the data module takes the world's
cameras from ``transforms.json`` rather than its own ring defaults.

With an :class:`Inconsistency`, the data views are not exactly one object, as views made by a multi-view
generator from one image are not (the paper's 16 SyncDreamer views, supp. sec. 5.1): each is rendered from a
slightly wrong camera (recorded at the nominal one) with its own colour gain, before the degradation. The
ground truth (``clean/``, ``heldout/``) stays the one consistent object.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..inverse.operators import build_operator
from ..multiview.views import Views, write_views
from .attributes import Attributes, Camera
from .cameras import (
    ORBIT_DISTANCE,
    ORBIT_ELEVATION,
    ORBIT_FOVY,
    RING_DISTANCE,
    RING_ELEVATION,
    RING_FOVY,
    RING_VIEWS,
    camera_to_world,
    orbit_azimuths,
    ring_azimuths,
)
from .captions import phrase
from .dataset import SPLIT_OFFSETS
from .objects import renderer_for, sample_object_attrs
from .palette import IMAGE_SIZE

HELDOUT_ELEVATIONS = (15.0, 45.0)


@dataclass(frozen=True)
class Inconsistency:
    """Per-view departures of generated views from one object: a pose error (elevation and azimuth, each
    normal with std ``pose_deg`` degrees) and a colour gain on the object (per channel, 1 + normal with std
    ``gain``), both drawn per view from the scene's seed."""

    pose_deg: float = 3.0
    gain: float = 0.05


def inconsistent_views(attrs: Attributes, cameras: list, size: int, inconsistency: Inconsistency,
                       g: torch.Generator) -> torch.Tensor:
    """Renders ``[N, 3, size, size]`` of ``attrs`` on white, each from its camera moved by the pose error and
    with its colour gain (the object's coverage from a render on black, so edges keep their anti-aliasing)."""
    n = len(cameras)
    pose = torch.randn(n, 2, generator=g) * inconsistency.pose_deg
    gain = 1 + torch.randn(n, 3, 1, 1, generator=g) * inconsistency.gain
    moved = [Camera(c.elevation + float(de), c.azimuth + float(da), c.distance, c.fovy) for c, (de, da) in zip(cameras, pose)]
    on_white, _ = render_cameras(attrs, moved, size)
    on_black, _ = render_cameras(attrs, moved, size, background=0.0)
    coverage = 1 - (on_white - on_black).mean(1, keepdim=True)
    return (on_black * gain).clamp(0, 1) + (1 - coverage)


def ring_cameras() -> list:
    return [Camera(RING_ELEVATION, azi, RING_DISTANCE, RING_FOVY) for azi in ring_azimuths(RING_VIEWS)]


def heldout_cameras(n: int = 8) -> list:
    step = 360.0 / RING_VIEWS
    azimuths = [-180.0 + step * (2 * k + 0.5) for k in range(n)]
    return [Camera(HELDOUT_ELEVATIONS[k % 2], azi, RING_DISTANCE, RING_FOVY) for k, azi in enumerate(azimuths)]


def render_cameras(attrs: Attributes, cameras: list, size: int, background=None) -> tuple:
    """Clean renders ``[N, 3, size, size]`` (on white unless ``background``: ``ObjectRenderer``) and their c2w
    ``[N, 4, 4]``."""
    render = renderer_for(attrs)
    c2w = torch.stack([camera_to_world(c) for c in cameras])
    return torch.stack([render(m, c.fovy, size, size, background) for m, c in zip(c2w, cameras)]), c2w


def eval_orbit_cameras(n: int = 8, split: str = "test") -> list:
    """threestudio's ``n`` val or test cameras of the text-to-NeRF runs (``cameras.ORBIT_*``): the world's
    ``camera_to_world`` of each is threestudio's ``RandomCameraDataset`` c2w."""
    return [Camera(ORBIT_ELEVATION, azi, ORBIT_DISTANCE, ORBIT_FOVY) for azi in orbit_azimuths(n, split)]


def resize_saved(images: torch.Tensor, out_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` rounded to 8 bits (a saved PNG) and resized to ``out_size`` bilinearly
    (``align_corners=False``): the path of threestudio's saved views to the reader's 64 px in the quality
    benchmark (``render_views``)."""
    images = (images.clamp(0, 1) * 255).round() / 255
    if images.shape[-1] == out_size and images.shape[-2] == out_size:
        return images
    return F.interpolate(images, size=out_size, mode="bilinear", align_corners=False).clamp(0, 1)


def render_resized(attrs: Attributes, cameras: list, size: int, out_size: int = IMAGE_SIZE, background=None) -> torch.Tensor:
    """Renders ``[N, 3, out_size, out_size]`` made at ``size`` px and brought to ``out_size`` as the quality
    benchmark brings saved views (``resize_saved``)."""
    return resize_saved(render_cameras(attrs, cameras, size, background)[0], out_size)


def object_attrs(seed: int) -> Attributes:
    """The world object drawn with ``seed`` (one object, placed for the ring's first camera)."""
    return sample_object_attrs(torch.Generator().manual_seed(seed), camera=ring_cameras()[0])


def scene_caption(seed: int) -> str:
    """The caption of :func:`object_attrs` (``a red sphere``: threestudio's prompt processor adds the view)."""
    attrs = object_attrs(seed)
    return phrase(attrs.colours[0], attrs.shapes[0])


def object_scene_views(index: int, size: int, heldout: int = 8) -> tuple:
    """(ring views, held-out views, caption) of held-out world object ``index`` (seed: the eval split's
    offset + ``index``), in memory: what ``data.dataroot=world:<index>`` reads."""
    seed = SPLIT_OFFSETS["eval"] + index
    attrs = object_attrs(seed)
    focal = 0.5 * size / math.tan(0.5 * math.radians(RING_FOVY))
    views = [Views(*render_cameras(attrs, cams, size), focal, []) for cams in (ring_cameras(), heldout_cameras(heldout))]
    return views[0], views[1], scene_caption(seed)


def make_object_scene(out_dir: str, seed: int, size: int, operator: dict, heldout: int = 8,
                      inconsistency: Inconsistency | None = None) -> dict:
    """Write ``clean/``, ``degraded/`` and ``heldout/`` for the object drawn with ``seed`` (the degraded views
    made from inconsistent ones with ``inconsistency``); returns the folders, the caption (``a red sphere``:
    threestudio's prompt processor adds the view), the operator and the attributes."""
    attrs = object_attrs(seed)
    fov = math.radians(RING_FOVY)
    clean, c2w = render_cameras(attrs, ring_cameras(), size)
    g = torch.Generator().manual_seed(seed)
    source = clean if inconsistency is None else inconsistent_views(attrs, ring_cameras(), size, inconsistency, g)
    with torch.no_grad():
        y = build_operator(operator).measure(source, g)
    held, held_c2w = render_cameras(attrs, heldout_cameras(heldout), size)
    folders = {name: os.path.join(out_dir, name) for name in ("clean", "degraded", "heldout")}
    write_views(folders["clean"], clean, c2w, fov)
    write_views(folders["degraded"], y.clamp(0, 1), c2w, fov)
    write_views(folders["heldout"], held, held_c2w, fov)
    info = {**folders, "caption": phrase(attrs.colours[0], attrs.shapes[0]), "operator": operator,
            "shape": attrs.shapes[0], "colour": attrs.colours[0], "size": attrs.sizes[0],
            "inconsistency": None if inconsistency is None else vars(inconsistency)}
    with open(os.path.join(out_dir, "scene.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info
