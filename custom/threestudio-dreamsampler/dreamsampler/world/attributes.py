"""Ground truth of one world image."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class Camera:
    """A threestudio-style camera looking at the origin (degrees, world units)."""

    elevation: float
    azimuth: float
    distance: float
    fovy: float


@dataclass
class Attributes:
    """What an image shows. Icons: positions (x, y) and sizes (circumradius) as fractions of the image
    width, x to the right and y down. Objects: the world position of the object's centre and its size
    (bounding radius) in world units, plus the camera."""

    domain: str  # "icon" | "object"
    shapes: list
    colours: list
    positions: list
    sizes: list
    rotations: list = field(default_factory=list)  # degrees, icons only
    camera: Optional[Camera] = None  # objects only

    @property
    def count(self) -> int:
        return len(self.shapes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["count"] = self.count
        return d
