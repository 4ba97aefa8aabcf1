"""Image-quality metrics of renders against clean views: PSNR, SSIM (kornia) and, when its weights
are on this machine, LPIPS (torchmetrics' AlexNet variant). Images are ``[B, 3, H, W]`` in [0, 1].

    PSNR = 10 log10(1 / MSE)                     (per image, then averaged)
    SSIM: Gaussian window 11, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2 (Wang et al. 2004)
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional

import torch
from jaxtyping import Float
from torch import Tensor

log = logging.getLogger(__name__)


Image = Float[Tensor, "B 3 H W"]


def _unit(x: Tensor) -> Tensor:
    return x.float().clamp(0, 1)


def _db(mse: Tensor) -> Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def psnr(pred: Image, gt: Image) -> Float[Tensor, "B"]:
    """Per-image PSNR in dB, ``[B]``."""
    return _db(((pred.float() - gt.float()) ** 2).flatten(1).mean(-1))


def masked_psnr(pred: Image, target: Image, weight: Float[Tensor, "B 1 H W"]) -> float:
    """PSNR (dB) over the pixels where ``weight`` is 1 (e.g. the observed region of an inpainting
    measurement), all images of the batch together."""
    w = weight.to(pred).expand_as(pred)
    return float(_db((((pred - target) ** 2) * w).sum() / w.sum().clamp_min(1)))


def ssim(pred: Image, gt: Image) -> Float[Tensor, "B"]:
    """Per-image SSIM, ``[B]`` (kornia's, window 11)."""
    import kornia

    return kornia.metrics.ssim(_unit(pred), _unit(gt), window_size=11).flatten(1).mean(-1)


def lpips_weights_available() -> bool:
    """Whether the AlexNet backbone LPIPS needs is in the torch hub cache (no download is tried)."""
    from torchvision.models import AlexNet_Weights

    name = os.path.basename(AlexNet_Weights.IMAGENET1K_V1.url)
    return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", name))


def load_lpips(device=None) -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """``lpips(pred, gt) -> [B]`` when its weights are available offline, else ``None`` (one warning)."""
    if not lpips_weights_available():
        log.warning("LPIPS skipped: its AlexNet weights are not in the torch hub cache (%s)", torch.hub.get_dir())
        return None
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    net = _NoTrainLpips(net="alex").eval().requires_grad_(False)
    if device is not None:
        net = net.to(device)

    def lpips(pred: Tensor, gt: Tensor) -> Tensor:
        return net(_unit(pred) * 2 - 1, _unit(gt) * 2 - 1).flatten()

    return lpips


def image_metrics(pred: Image, gt: Image, lpips: Optional[Callable] = None) -> Dict[str, Tensor]:
    """``{"psnr", "ssim"[, "lpips"]}``, each per image ``[B]``."""
    if pred.shape != gt.shape:
        raise ValueError(f"metrics need images of the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    with torch.no_grad():
        out = {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt)}
        if lpips is not None:
            out["lpips"] = lpips(pred, gt)
    return out
