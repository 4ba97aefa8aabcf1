"""Multi-view data: cameras, view folders (NeRF-synthetic / ring layouts) and the procedural checker-box scene."""
