"""Region weights of localized distillation (main paper eq. 19), shared by editing and inpainting.

Eq. 19 sums over (mask M_i, prompt c_i) pairs covering the image. Overlapping masks share their
pixels: each M_i is divided by max(1, sum_j M_j), so the weights never exceed 1 and the rest of the
image (1 - sum_i w_i) keeps the background term.
"""
from __future__ import annotations

from typing import Optional

from jaxtyping import Float
from torch import Tensor


def region_weights(masks: Optional[Float[Tensor, "K 1 h w"]], n_targets: int) -> Optional[Float[Tensor, "K 1 h w"]]:
    """w_i = M_i / max(1, sum_j M_j), one per target prompt; None (one prompt everywhere) when ``masks`` is None."""
    if masks is None:
        if n_targets != 1:
            raise ValueError(f"{n_targets} target prompts need one mask each, got no masks")
        return None
    if masks.shape[0] != n_targets:
        raise ValueError(f"got {masks.shape[0]} masks for {n_targets} target prompts")
    return masks / masks.sum(0, keepdim=True).clamp_min(1.0)
