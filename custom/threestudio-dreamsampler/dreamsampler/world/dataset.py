"""Seeded, infinite streams of world images with disjoint training and held-out seed ranges.

Image ``i`` of a split is drawn from a generator seeded with ``SPLIT_OFFSETS[split] + i``:
training images use seeds [0, 10**9), held-out evaluation images seeds [10**9, 2 * 10**9). The first
draw of that generator picks the domain (icon or object, 1/2 each) unless it is forced, so any image is
regenerated from its split and index alone, whatever the batch size.
"""
from __future__ import annotations

import torch

from .icons import sample_icon
from .objects import sample_object

SPLIT_OFFSETS = {"train": 0, "eval": 10**9}
SPLIT_SIZE = 10**9
DOMAINS = ("icon", "object")


def world_image(split: str, index: int, domain: str | None = None):
    """(image [3,64,64], caption, Attributes) of image ``index`` of ``split``; ``domain`` forces icon
    or object (otherwise each is drawn with probability 1/2)."""
    if not 0 <= index < SPLIT_SIZE:
        raise IndexError(index)
    g = torch.Generator().manual_seed(SPLIT_OFFSETS[split] + index)
    coin = torch.rand((), generator=g).item()
    domain = domain or DOMAINS[int(coin >= 0.5)]
    return sample_icon(g) if domain == "icon" else sample_object(g)


class WorldDataset:
    """Batches of a split: ``batch(k)`` holds images [k*B, (k+1)*B); iterating yields k = 0, 1, ...

    Each batch is (images [B,3,64,64], captions, attributes).
    """

    def __init__(self, split: str = "train", batch_size: int = 32, domain: str | None = None, start: int = 0):
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {tuple(SPLIT_OFFSETS)}")
        self.split, self.batch_size, self.domain, self.start = split, batch_size, domain, start

    def batch(self, k: int):
        items = [
            world_image(self.split, self.start + k * self.batch_size + i, self.domain) for i in range(self.batch_size)
        ]
        images, captions, attrs = zip(*items)
        return torch.stack(images), list(captions), list(attrs)

    def __iter__(self):
        k = 0
        while True:
            yield self.batch(k)
            k += 1
