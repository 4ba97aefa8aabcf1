"""The world's vocabulary: colours and shapes (the fixed lists every other module reads)."""
import torch

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "black": (0.0, 0.0, 0.0),
}
COLOUR_NAMES = tuple(COLOURS)
ICON_SHAPES = ("circle", "square", "triangle", "star")
OBJECT_SHAPES = ("sphere", "cube", "cylinder", "cone")
# a pure-black surface would show no shading at all (its silhouette alone cannot tell a sphere from a
# cylinder seen from above), so black objects are rendered with this dark-grey albedo
OBJECT_BLACK_ALBEDO = 0.15
IMAGE_SIZE = 64


def colour_rgb(name: str) -> torch.Tensor:
    """The palette colour ``name`` as a [3] tensor in [0,1]."""
    return torch.tensor(COLOURS[name])


def object_albedo(name: str) -> torch.Tensor:
    """Surface albedo [3] of an object of colour ``name``."""
    if name == "black":
        return torch.full((3,), OBJECT_BLACK_ALBEDO)
    return colour_rgb(name)
