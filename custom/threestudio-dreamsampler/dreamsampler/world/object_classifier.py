"""A small CNN that names the shape and colour of a world object image (weights shipped beside it)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .palette import COLOUR_NAMES, OBJECT_SHAPES

WEIGHTS = Path(__file__).with_name("object_classifier.safetensors")


class ObjectClassifier(nn.Module):
    """Four conv-BN-ReLU-maxpool stages (16-32-64-64 channels), global average pooling, two linear heads.

    ``forward(images [B,3,64,64] in [0,1]) -> (shape logits [B,4], colour logits [B,5])``.
    """

    def __init__(self):
        super().__init__()
        layers, c_in = [], 3
        for c in (16, 32, 64, 64):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.shape_head = nn.Linear(c_in, len(OBJECT_SHAPES))
        self.colour_head = nn.Linear(c_in, len(COLOUR_NAMES))

    def forward(self, images: torch.Tensor):
        h = self.features(images * 2 - 1).mean((2, 3))
        return self.shape_head(h), self.colour_head(h)


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random Gaussian blur (sigma up to 1.2 px) and pixel noise (up to 0.03): generated images are
    softer and noisier than renders."""
    b = len(images)
    sigma = 1.2 * torch.rand(b, generator=g)
    x = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-x[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)  # [B,7]
    out = images.reshape(1, b * 3, *images.shape[2:])
    kk = k.repeat_interleave(3, 0)
    out = F.conv2d(F.pad(out, (3, 3, 0, 0), mode="replicate"), kk[:, None, None, :], groups=b * 3)
    out = F.conv2d(F.pad(out, (0, 0, 3, 3), mode="replicate"), kk[:, None, :, None], groups=b * 3)
    noise = 0.03 * torch.rand(b, 1, 1, 1, generator=g) * torch.randn(images.shape, generator=g)
    return (out.reshape(images.shape) + noise).clamp(0, 1)


def load_object_classifier(path: Path | str = WEIGHTS) -> ObjectClassifier:
    """The trained classifier in eval mode (``scripts/train_world_classifier.py`` writes the weights)."""
    from safetensors.torch import load_file

    model = ObjectClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@torch.no_grad()
def classify_objects(model: ObjectClassifier, images: torch.Tensor):
    """(shape names, colour names) of images [B,3,64,64] in [0,1]."""
    s, c = model(images.float().clamp(0, 1))
    return [OBJECT_SHAPES[i] for i in s.argmax(1)], [COLOUR_NAMES[i] for i in c.argmax(1)]
