"""Vector graphics: the differentiable Bezier rasterizer and SVG scenes (init, losses, read / write)."""
