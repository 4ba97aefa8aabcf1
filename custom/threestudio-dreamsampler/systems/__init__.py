from . import image_system, svg_system
