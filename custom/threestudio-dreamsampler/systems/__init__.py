from . import degraded_nerf, image_system, svg_system, text_to_nerf
