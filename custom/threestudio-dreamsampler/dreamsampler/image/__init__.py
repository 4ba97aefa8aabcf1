"""2D reverse samplers with an identity generator: editing (Alg. 3) and inpainting / restoration (Alg. 4)."""
