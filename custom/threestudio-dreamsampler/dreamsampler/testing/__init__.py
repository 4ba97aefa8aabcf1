"""Offline stand-ins for tests and smoke runs: the tiny random Stable Diffusion pipeline and a Gaussian mixture with exact scores."""
