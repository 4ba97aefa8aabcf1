"""A seeded procedural world of captioned 64x64 images: flat icons and shaded 3D primitives.

Pure PyTorch; every image comes with its ground truth (``Attributes``) and, for objects, an analytic
renderer for any threestudio camera. ``evaluator`` reads the same attributes back from generated images.
"""
from pathlib import Path

from .attributes import Attributes, Camera
from .cameras import camera_to_world, ring_azimuths, sample_camera
from .captions import WORDS, icon_caption, object_caption, view_name
from .dataset import SPLIT_OFFSETS, SPLIT_SIZE, WorldDataset, world_image
from .icons import render_icon, sample_icon, sample_icon_attrs
from .objects import ObjectRenderer, renderer_for, sample_object, sample_object_attrs
from .palette import COLOUR_NAMES, COLOURS, ICON_SHAPES, IMAGE_SIZE, OBJECT_SHAPES

MINI_SD = Path(__file__).resolve().parent / "mini-sd"  # the miniature Stable Diffusion trained on this world

__all__ = [
    "MINI_SD",
    "Attributes", "Camera", "COLOUR_NAMES", "COLOURS", "ICON_SHAPES", "IMAGE_SIZE", "OBJECT_SHAPES",
    "ObjectRenderer", "SPLIT_OFFSETS", "SPLIT_SIZE", "WORDS", "WorldDataset", "camera_to_world",
    "icon_caption", "object_caption", "render_icon", "renderer_for", "ring_azimuths", "sample_camera",
    "sample_icon", "sample_icon_attrs", "sample_object", "sample_object_attrs", "view_name", "world_image",
]
