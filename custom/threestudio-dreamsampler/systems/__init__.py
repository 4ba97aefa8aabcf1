from . import svg_system
