"""Inputs of the 2D tasks: images (PNG / JPEG files, or ``skimage:<name>`` for scikit-image's bundled
photographs such as ``skimage:chelsea``), masks (image files, white = region, or rectangles given as
fractions ``[x0, y0, x1, y1]`` of the image) and their latent-resolution versions. Errors name the
config field and the file.

Also the image-layout conversions, defined once: the core works on ``[B, 3, H, W]`` (``[3, H, W]`` for
one image), threestudio on ``[B, H, W, 3]``; :func:`bchw` / :func:`bhwc` convert, :func:`to_uint8`
makes a saveable ``H x W x 3`` array.
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

SKIMAGE_PREFIX = "skimage:"
WORLD_PREFIX = "world:"  # world:<index>: icon <index> of the world's held-out (eval) split, 64x64


def bchw(x: Float[Tensor, "B H W C"]) -> Float[Tensor, "B C H W"]:
    """threestudio's ``[B, H, W, C]`` -> the core's ``[B, C, H, W]``."""
    return x.permute(0, 3, 1, 2)


def bhwc(x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B H W C"]:
    """The core's ``[B, C, H, W]`` -> threestudio's ``[B, H, W, C]``."""
    return x.permute(0, 2, 3, 1)


def to_uint8(img: Float[Tensor, "3 H W"]) -> np.ndarray:
    """One image in [0, 1] as an ``H x W x 3`` uint8 array (rounded), for PNG writers."""
    return (img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _to_tensor(arr: np.ndarray) -> Tensor:
    """HxW or HxWxC uint8 / float array -> [3, H, W] float in [0, 1]."""
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1)


def read_image(source: str, field: str) -> Tensor:
    """The image ``source`` as ``[3, H, W]`` in [0, 1] (its own size)."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"{field} is empty: give an image file (PNG / JPEG) or {SKIMAGE_PREFIX}<name>, e.g. {SKIMAGE_PREFIX}chelsea")
    if source.startswith(SKIMAGE_PREFIX):
        import skimage.data

        name = source[len(SKIMAGE_PREFIX):]
        loader = getattr(skimage.data, name, None)
        if not callable(loader):
            raise ValueError(f"{field}={source!r}: scikit-image has no image {name!r} (try chelsea, astronaut, coffee, rocket)")
        return _to_tensor(loader())
    if source.startswith(WORLD_PREFIX):
        return world_icon(source, field)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{field}: image file {source!r} does not exist")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            return _to_tensor(np.asarray(im.convert("RGB")))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{field}: cannot read image file {source!r} ({exc})") from exc


def world_icon(source: str, field: str) -> Tensor:
    """``world:<index>``: the held-out world icon ``<index>`` as ``[3, 64, 64]`` (the mini model's domain)."""
    index = source[len(WORLD_PREFIX):]
    if not index.isdigit():
        raise ValueError(f"{field}={source!r}: a world icon is {WORLD_PREFIX}<index>, e.g. {WORLD_PREFIX}124 (a red circle)")
    from .world import world_image

    return world_image("eval", int(index), "icon")[0]


def square_resize(img: Tensor, size: int) -> Tensor:
    """Center-crop ``[C, H, W]`` to a square and resize it to ``size`` x ``size`` (anti-aliased bicubic)."""
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = img[..., top : top + s, left : left + s]
    if s == size:
        return crop.clone()
    out = F.interpolate(crop[None].float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def read_mask(source: str, field: str, image_hw: Tuple[int, int], image_field: str) -> Tensor:
    """A mask file as ``[1, H, W]`` in {0, 1} (bright = 1); its size must equal the image's."""
    img = read_image(source, field)
    if tuple(img.shape[-2:]) != tuple(image_hw):
        raise ValueError(
            f"{field}: mask file {source!r} is {img.shape[-2]}x{img.shape[-1]} but the image ({image_field}) is "
            f"{image_hw[0]}x{image_hw[1]}; masks must have the image's size"
        )
    return (img.mean(0, keepdim=True) > 0.5).float()


def rect_mask(rect: Sequence[float], height: int, width: int, field: str) -> Tensor:
    """``[1, H, W]`` with ones inside ``rect = [x0, y0, x1, y1]`` (fractions of width / height)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in rect)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: a rectangle is [x0, y0, x1, y1] as fractions of the image, got {rect!r}") from exc
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(f"{field}: rectangle {list(rect)} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    mask = torch.zeros(1, height, width)
    r0, r1 = int(round(y0 * height)), max(int(round(y1 * height)), int(round(y0 * height)) + 1)
    c0, c1 = int(round(x0 * width)), max(int(round(x1 * width)), int(round(x0 * width)) + 1)
    mask[:, r0:r1, c0:c1] = 1.0
    return mask


def latent_mask(mask: Tensor, factor: int) -> Tensor:
    """``[..., H, W]`` image mask -> latent resolution; a latent pixel is in the mask when any of its
    ``factor`` x ``factor`` image pixels is (so the latent region covers the image region)."""
    lead = mask.shape[:-2]
    m = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    return F.max_pool2d(m, factor).reshape(*lead, mask.shape[-2] // factor, mask.shape[-1] // factor)
