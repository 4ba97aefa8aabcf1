"""Multi-view image folders: reading (with input checks that name the file or field) and writing.

A folder holds either
- a ``transforms.json`` in the NeRF-synthetic convention: ``camera_angle_x`` (horizontal field of
  view, radians) and ``frames``, each with ``file_path`` (relative to the folder; ``.png`` is
  appended when the path has no extension, as in the Blender scenes) and ``transform_matrix``
  (the 4x4 camera-to-world matrix, OpenGL axes; see ``cameras.py``); or
- only images, taken as the fixed ring of views multi-view generators produce (SyncDreamer: 16
  views at elevation 30 degrees, azimuths 360 k / 16 in file-name order).
RGBA images are composited over ``background``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..image_io import to_uint8
from .cameras import focal_from_fov, ring_c2w

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CAMERA_SOURCES = ("auto", "transforms", "ring")


@dataclass
class Views:
    """N views of one scene: ``images`` [N, 3, H, W] in [0, 1], ``c2w`` [N, 4, 4], ``focal`` in pixels."""

    images: Tensor
    c2w: Tensor
    focal: float
    files: List[str]

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[2])

    @property
    def width(self) -> int:
        return int(self.images.shape[3])


@dataclass
class RingSpec:
    """The camera ring assumed for a folder holding only images."""

    n_views: int = 16
    elevation_deg: float = 30.0
    distance: float = 1.5
    fovy_deg: float = 49.1
    azimuth0_deg: float = 0.0


def read_image(path: str, background: Sequence[float] = (1.0, 1.0, 1.0)) -> Tensor:
    """An RGB(A) image file as ``[3, H, W]`` float in [0, 1] (alpha composited over ``background``, 8 or 16 bits)."""
    import imageio.v3 as iio

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        arr = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises several types for unreadable files
        raise ValueError(f"image file {path} could not be read: {exc}") from exc
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    img = torch.from_numpy(arr.astype(np.float32) / scale)
    if img.shape[-1] == 4:
        a = img[..., 3:]
        img = img[..., :3] * a + torch.as_tensor(background, dtype=img.dtype) * (1 - a)
    return img[..., :3].permute(2, 0, 1).contiguous()


def write_image(path: str, img: Tensor) -> None:
    """Save ``[3, H, W]`` in [0, 1] as an 8-bit PNG."""
    import imageio.v3 as iio

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    iio.imwrite(path, to_uint8(img))


def _natural_key(name: str):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def list_images(root: str) -> List[str]:
    """Image files directly in ``root``, in natural file-name order (``2.png`` before ``10.png``)."""
    names = [n for n in os.listdir(root) if n.lower().endswith(IMAGE_EXTENSIONS)]
    return [os.path.join(root, n) for n in sorted(names, key=_natural_key)]


def _stack_same_size(images: List[Tensor], files: List[str]) -> Tensor:
    h, w = images[0].shape[-2:]
    for img, f in zip(images, files):
        if img.shape[-2:] != (h, w):
            raise ValueError(
                f"images must all have the same size: {f} is {img.shape[-1]}x{img.shape[-2]} "
                f"but {files[0]} is {w}x{h}"
            )
    return torch.stack(images)


def _frame_path(root: str, frame: dict, k: int, tf: str) -> str:
    if "file_path" not in frame:
        raise ValueError(f"{tf}: frames[{k}] has no 'file_path'")
    path = os.path.normpath(os.path.join(root, frame["file_path"]))
    if not os.path.splitext(path)[1] and not os.path.exists(path):
        path = path + ".png"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{tf}: frames[{k}].file_path points to {path}, which does not exist")
    return path


def _frame_pose(frame: dict, k: int, tf: str) -> Tensor:
    if "transform_matrix" not in frame:
        raise ValueError(f"{tf}: frames[{k}] has no 'transform_matrix' (the camera pose)")
    pose = torch.as_tensor(frame["transform_matrix"], dtype=torch.float32)
    if pose.shape != (4, 4) or not torch.isfinite(pose).all():
        raise ValueError(f"{tf}: frames[{k}].transform_matrix must be a finite 4x4 matrix, got shape {tuple(pose.shape)}")
    return pose


def load_transforms(root: str, background=(1.0, 1.0, 1.0)) -> Views:
    """Views from ``root/transforms.json`` (NeRF-synthetic convention, see module docstring)."""
    tf = os.path.join(root, "transforms.json")
    try:
        with open(tf) as f:
            meta = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{tf} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise ValueError(f"{tf}: 'frames' (a non-empty list of views with camera poses) is missing")
    if "camera_angle_x" not in meta:
        raise ValueError(f"{tf}: 'camera_angle_x' (the horizontal field of view in radians) is missing")
    files = [_frame_path(root, fr, k, tf) for k, fr in enumerate(meta["frames"])]
    poses = torch.stack([_frame_pose(fr, k, tf) for k, fr in enumerate(meta["frames"])])
    images = _stack_same_size([read_image(p, background) for p in files], files)
    focal = focal_from_fov(float(meta["camera_angle_x"]), images.shape[-1])
    return Views(images, poses, focal, files)


def load_ring(root: str, ring: RingSpec, background=(1.0, 1.0, 1.0)) -> Views:
    """Views from a folder of images only, on the camera ring ``ring``."""
    files = list_images(root)
    if not files:
        raise FileNotFoundError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) and no transforms.json")
    if len(files) != ring.n_views:
        raise ValueError(
            f"{root} holds {len(files)} images but the camera ring has {ring.n_views} cameras "
            f"(data.ring_views); add a transforms.json with the poses or set data.ring_views={len(files)}"
        )
    images = _stack_same_size([read_image(p, background) for p in files], files)
    c2w = ring_c2w(ring.n_views, ring.elevation_deg, ring.distance, ring.azimuth0_deg)
    return Views(images, c2w, focal_from_fov(np.deg2rad(ring.fovy_deg), images.shape[-2]), files)


def load_views(root: str, cameras: str = "auto", ring: Optional[RingSpec] = None, background=(1.0, 1.0, 1.0)) -> Views:
    """Views of a folder: ``cameras`` = ``transforms`` (needs transforms.json), ``ring`` (images only)
    or ``auto`` (transforms.json when present, else the ring)."""
    if cameras not in CAMERA_SOURCES:
        raise ValueError(f"data.cameras={cameras!r} is unknown; choose one of {CAMERA_SOURCES}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"view folder {root} does not exist")
    has_tf = os.path.isfile(os.path.join(root, "transforms.json"))
    if cameras == "transforms" and not has_tf:
        raise FileNotFoundError(f"missing camera poses: {os.path.join(root, 'transforms.json')} does not exist")
    if cameras == "transforms" or (cameras == "auto" and has_tf):
        return load_transforms(root, background)
    return load_ring(root, ring or RingSpec(), background)


def check_ground_truth(views: Views, gt: Views, size) -> None:
    """Ground-truth views must match the data views one to one and have the render size ``(H, W)``."""
    if gt.n != views.n:
        raise ValueError(
            f"the ground-truth folder has {gt.n} images but the data folder has {views.n} cameras "
            f"({os.path.dirname(gt.files[0])} vs {os.path.dirname(views.files[0])})"
        )
    if (gt.height, gt.width) != tuple(size):
        raise ValueError(
            f"ground-truth images are {gt.width}x{gt.height} but renders are {size[1]}x{size[0]} "
            f"(the operator's input size for {views.width}x{views.height} measurements); see {gt.files[0]}"
        )
    if not torch.allclose(gt.c2w, views.c2w, atol=1e-4):
        raise ValueError("the ground-truth transforms.json has camera poses different from the data's")


def write_views(root: str, images: Tensor, c2w: Tensor, camera_angle_x: float, prefix: str = "r_") -> List[str]:
    """Write ``images`` [N, 3, H, W] as PNGs plus a NeRF-synthetic ``transforms.json`` under ``root``."""
    os.makedirs(root, exist_ok=True)
    frames, files = [], []
    for k in range(images.shape[0]):
        name = f"{prefix}{k}.png"
        write_image(os.path.join(root, name), images[k])
        frames.append({"file_path": f"./{name}", "transform_matrix": c2w[k].tolist()})
        files.append(os.path.join(root, name))
    with open(os.path.join(root, "transforms.json"), "w") as f:
        json.dump({"camera_angle_x": float(camera_angle_x), "frames": frames}, f, indent=2)
    return files
