"""The caption grammar, threestudio's view-dependent suffixes, and the words it can produce.

    icon caption   := phrase (" and " phrase){0,2}      phrases ordered left to right in the image
    object caption := phrase ", " view " view"
    phrase         := ("a" | "an") colour shape
"""
from .palette import COLOUR_NAMES, ICON_SHAPES, OBJECT_SHAPES

VIEWS = ("front", "side", "back", "overhead")
# threestudio's PromptProcessor defaults (front_threshold, back_threshold, overhead_threshold)
FRONT_THRESHOLD, BACK_THRESHOLD, OVERHEAD_THRESHOLD = 45.0, 45.0, 60.0
WORDS = ("a", "an", "and", "view") + COLOUR_NAMES + ICON_SHAPES + OBJECT_SHAPES + VIEWS


def phrase(colour: str, shape: str) -> str:
    """``a red circle``."""
    return f"a {colour} {shape}"


def icon_caption(colours, shapes) -> str:
    """``a red circle and a blue square`` (phrases in the given order)."""
    return " and ".join(phrase(c, s) for c, s in zip(colours, shapes))


def view_name(elevation_deg: float, azimuth_deg: float) -> str:
    """threestudio's view of a camera: side by default, then front, back, overhead override in turn."""
    azi = (azimuth_deg + 180.0) % 360.0 - 180.0  # threestudio's shift_azimuth_deg
    name = "side"
    if -FRONT_THRESHOLD < azi < FRONT_THRESHOLD:
        name = "front"
    if azi > 180.0 - BACK_THRESHOLD or azi < -180.0 + BACK_THRESHOLD:
        name = "back"
    if elevation_deg > OVERHEAD_THRESHOLD:
        name = "overhead"
    return name


def object_caption(colour: str, shape: str, elevation_deg: float, azimuth_deg: float) -> str:
    """``a red sphere, front view`` (threestudio's ``f"{s}, {view} view"`` suffix)."""
    return f"{phrase(colour, shape)}, {view_name(elevation_deg, azimuth_deg)} view"
