"""Read colour, shape, count, position and size back from (generated) world images, and score the reader.

Icons are read analytically (``icon_reader``). Objects: shape and colour come from the small CNN
(``object_classifier``; shading makes analytic rules unreliable there), count, position and size from
the silhouette (non-white connected regions), as fractions of the image width.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter

import torch
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import elastic_transform2d

from .dataset import SPLIT_OFFSETS, world_image
from .icon_reader import MIN_AREA, _components, read_icon
from .object_classifier import classify_objects, load_object_classifier
from .objects import sample_object_attrs
from .palette import COLOUR_NAMES, OBJECT_SHAPES
from .scenes import eval_orbit_cameras, render_resized

POSITION_TOL = 0.03  # fraction of the width (2 px at 64)
SIZE_TOL = 0.25  # relative: blur takes the thin tips off small stars (up to about 20% of the radius)
NON_WHITE = 0.1  # a pixel belongs to an object when some channel is this far below 1
ATTRIBUTES = ("colour", "shape", "count", "position", "size")
WARP_SMOOTH = 3.0  # pixels: the scale of the wobble ``warp`` puts on a shape's outline


def _silhouettes(image: torch.Tensor):
    """(centroid (x, y), circumradius) of each non-white region of one image, as width fractions."""
    _, h, w = image.shape
    mask = (1 - image.clamp(0, 1)).amax(0) > NON_WHITE
    comps = _components(mask)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    out = []
    for k in comps.unique()[1:]:
        m = comps == k
        if m.sum() < MIN_AREA:
            continue
        cx, cy = xs[m].mean().item(), ys[m].mean().item()
        r = torch.sqrt((xs[m] - cx) ** 2 + (ys[m] - cy) ** 2).max().item() + 0.5
        out.append(((cx / w, cy / h), r / w))
    return out


class Reader:
    """``reader(images [B,3,64,64] in [0,1], domain)`` -> one dict per image with lists ``colours``,
    ``shapes``, ``positions``, ``sizes`` and ``count``."""

    def __init__(self, classifier=None):
        self._classifier = classifier

    @property
    def classifier(self):
        if self._classifier is None:
            self._classifier = load_object_classifier()
        return self._classifier

    def __call__(self, images: torch.Tensor, domain: str) -> list:
        if images.dim() == 3:
            images = images[None]
        if domain == "icon":
            return [read_icon(img) for img in images]
        if domain != "object":
            raise ValueError(domain)
        shapes, colours = classify_objects(self.classifier, images)
        out = []
        for img, s, c in zip(images, shapes, colours):
            sil = _silhouettes(img)
            out.append(dict(shapes=[s], colours=[c], positions=[p for p, _ in sil], sizes=[r for _, r in sil], count=len(sil)))
        return out


def _matched(read: dict, attrs) -> tuple:
    """(position ok, size ok) after matching read shapes to true ones by nearest positions."""
    if read["count"] != attrs.count:
        return False, False
    best = min(
        itertools.permutations(range(attrs.count)),
        key=lambda p: sum(math.dist(read["positions"][i], attrs.positions[j]) for i, j in zip(p, range(attrs.count))),
    )
    pos_ok = all(math.dist(read["positions"][i], attrs.positions[j]) <= POSITION_TOL for j, i in enumerate(best))
    size_ok = all(abs(read["sizes"][i] / attrs.sizes[j] - 1) <= SIZE_TOL for j, i in enumerate(best))
    return pos_ok, size_ok


def warp(images: torch.Tensor, rms_px: float, g: torch.Generator) -> torch.Tensor:
    """Images [B,3,H,W] under a smooth random displacement field (Gaussian noise smoothed over
    ``WARP_SMOOTH`` pixels, scaled to ``rms_px`` pixels RMS per axis): world shapes with the small
    irregular wobble a generator draws, their true attributes kept."""
    b, _, h, w = images.shape
    noise = torch.randn(b, 2, h, w, generator=g)
    k = 2 * math.ceil(3 * WARP_SMOOTH) + 1
    rms = gaussian_blur2d(noise, (k, k), (WARP_SMOOTH, WARP_SMOOTH)).pow(2).mean().sqrt().item()
    alpha = rms_px / rms * 2 / w  # grid units: 2 / w per pixel
    out = elastic_transform2d(images, noise, (k, k), (WARP_SMOOTH, WARP_SMOOTH), (alpha, alpha), padding_mode="border")
    return out.clamp(0, 1)


def reader_accuracy(domain: str, n: int = 500, start: int = 0, reader: Reader | None = None, warp_px: float = 0.0) -> dict:
    """Per-attribute accuracy of the reader on ``n`` held-out world images of ``domain`` (eval split
    from index ``start``), each ``warp``ed by ``warp_px`` pixels RMS when that is not 0. An image counts
    as right for an attribute when all its shapes are: colours and shapes as multisets, count exactly,
    positions within POSITION_TOL and sizes within SIZE_TOL. Objects are scored on colour, shape and
    count (their true position and size are in world units)."""
    reader = reader or Reader()
    g = torch.Generator().manual_seed(start)
    hits, batch = Counter(), []
    for i in range(start, start + n):
        img, _, attrs = world_image("eval", i, domain)
        batch.append((img, attrs))
    for k in range(0, n, 64):
        chunk = batch[k : k + 64]
        images = torch.stack([b[0] for b in chunk])
        reads = reader(warp(images, warp_px, g) if warp_px else images, domain)
        for read, (_, attrs) in zip(reads, chunk):
            hits["colour"] += Counter(read["colours"]) == Counter(attrs.colours)
            hits["shape"] += Counter(read["shapes"]) == Counter(attrs.shapes)
            hits["count"] += read["count"] == attrs.count
            if domain == "icon":
                pos_ok, size_ok = _matched(read, attrs)
                hits["position"] += pos_ok
                hits["size"] += size_ok
    keys = ATTRIBUTES if domain == "icon" else ("colour", "shape", "count")
    return {key: hits[key] / n for key in keys} | {"images": n}


def orbit_objects(draws: int, start: int = 0, split: str = "eval") -> list:
    """``draws`` objects of every shape in every colour (shape fastest), sizes drawn from the seeds of ``split``
    from index ``start`` (one seed per object)."""
    out = []
    for k in range(draws * len(OBJECT_SHAPES) * len(COLOUR_NAMES)):
        attrs = sample_object_attrs(torch.Generator().manual_seed(SPLIT_OFFSETS[split] + start + k))
        attrs.shapes = [OBJECT_SHAPES[k % len(OBJECT_SHAPES)]]
        attrs.colours = [COLOUR_NAMES[k // len(OBJECT_SHAPES) % len(COLOUR_NAMES)]]
        out.append(attrs)
    return out


def orbit_reader_accuracy(draws: int = 2, start: int = 0, reader: Reader | None = None, size: int = 32,
                          views: int = 8, split: str = "eval", background=None) -> dict:
    """Accuracy of the object reader on world objects seen as the quality benchmark sees a text-to-NeRF run:
    threestudio's ``views`` test cameras (``scenes.eval_orbit_cameras``), rendered at ``size`` px and brought to
    the reader's 64 px as the benchmark brings the runs' saved views (``scenes.render_resized``); every shape in
    every colour, ``draws`` objects each (``orbit_objects``: held-out seeds of ``split`` from ``start``), on white
    or on ``background`` (a grey level or RGB: the text-to-NeRF renders' learned background is light grey).
    Returns colour and shape accuracy over all renders, each per true shape (``by_shape``) and per true colour
    (``by_colour``), the shape confusion counts (``shape_confusion[true][read]``) and the number of images."""
    reader = reader or Reader()
    cameras = eval_orbit_cameras(views, "test")
    hits, confusion = Counter(), {s: Counter() for s in OBJECT_SHAPES}
    n = 0
    for attrs in orbit_objects(draws, start, split):
        shape, colour = attrs.shapes[0], attrs.colours[0]
        shapes, colours = classify_objects(reader.classifier, render_resized(attrs, cameras, size, background=background))
        for s, c in zip(shapes, colours):
            confusion[shape][s] += 1
            for key, ok in (("colour", c == colour), ("shape", s == shape)):
                hits[key] += ok
                hits[key, "shape", shape] += ok
                hits[key, "colour", colour] += ok
                hits["n", "shape", shape] += key == "colour"
                hits["n", "colour", colour] += key == "colour"
        n += len(shapes)
    per = lambda kind, names: {v: {key: hits[key, kind, v] / hits["n", kind, v] for key in ("colour", "shape")} for v in names}
    return {"colour": hits["colour"] / n, "shape": hits["shape"] / n, "images": n,
            "by_shape": per("shape", OBJECT_SHAPES), "by_colour": per("colour", COLOUR_NAMES),
            "shape_confusion": {s: dict(confusion[s]) for s in OBJECT_SHAPES}}
