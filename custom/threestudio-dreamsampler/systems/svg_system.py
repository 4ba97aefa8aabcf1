"""``dreamsampler-svg-system``: image restoration through vectorization (main paper sec. 4.1, eq. 21;
supplementary sec. 2.1 and 4.2).

psi = closed cubic Bezier paths (control points, fill colours, opacities) over a solid background,
rendered by :mod:`dreamsampler.vector.rasterizer` on a ``canvas_size`` square. Each step, with t the
``dreamsampler-guidance`` decreasing timestep and gamma = abar_t,

    loss = (1 - gamma) l_SDS ||E(g) - z0^_t(c_y)||^2 + gamma l_DC ||y - A g||^2 + l_xing L_xing(psi)

with both squared norms as in the paper, sums over their entries, halved alike: the first is the
guidance's ``loss_sds`` with ``weighting_strategy=tweedie`` (0.5 ||E(g) - z0^||^2 summed over the
latent), the second :func:`dreamsampler.inverse.data_consistency` (0.5 ||y - A g||^2), as in the
degraded-view NeRF system. With ``l_SDS = 0`` the UNet is not called (the supplementary Fig. S6
ablation). Adam with betas (0.9, 0.9) and the paper's learning-rate schedules; colours, opacities and
the background are clamped to [0, 1] after every step.

The measurement y is an image file (``measurement``, checked against A's output size) or A applied to
a clean image (``target``: ``shapes``, ``skimage:<name>`` or a file). The prompt gets the icon suffix.
Outputs (``<trial>/save/``): ``final.svg``; ``final.png`` (the SVG rendered);
``final-measurement.png`` (y | A(g) | g | clean target when known, each at canvas size; y and A(g)
upsampled by nearest neighbour when A shrinks); ``progress.mp4`` and ``progress-strip.png`` (renders
every ``snapshot_every`` steps); ``metrics.json`` (PSNR of A(g) against y and of g against the clean
target);
``it<step>-val.png`` at validation.
"""
import glob
import os
from dataclasses import dataclass, field

import numpy as np
import threestudio
import torch
import torch.nn.functional as F
from threestudio.systems.base import BaseSystem
from threestudio.utils.typing import *
from torch import nn

from dreamsampler.diffusion.latent_model import model_resolution
from dreamsampler.diffusion.schedules import gamma_schedule
from dreamsampler.image_io import bchw, bhwc, to_uint8
from dreamsampler.inverse.data_consistency import data_consistency, eq18_weights
from dreamsampler.inverse.operators import build_operator
from dreamsampler.metrics import psnr
from dreamsampler.vector.rasterizer import render
from dreamsampler.vector.svg import ICON_SUFFIX, VectorScene, init_scene, load_image, point_lr, save_svg, xing_loss

from .guidance_state import GuidanceStateMixin
from .run_fingerprint import RunFingerprintMixin

STRIP_FRAMES = 8
STRIP_HEIGHT = 128  # pixels per strip frame (nearest-neighbour subsampling)


@threestudio.register("dreamsampler-svg-system")
class DreamSamplerSVG(RunFingerprintMixin, GuidanceStateMixin, BaseSystem):
    @dataclass
    class Config(BaseSystem.Config):
        seed: int = 0  # set to ${seed}
        # psi: paths and background
        canvas_size: Optional[int] = None  # None: the guidance model's native resolution (512 for SD 1.5)
        num_paths: int = 128
        num_segments: int = 4
        init_radius: float = 20.0
        background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
        rasterizer: str = "auto"  # auto (pydiffvg if it imports) | torch | diffvg
        # measurement y
        target: str = "shapes"  # clean image y is made from: shapes | skimage:<name> | image file
        measurement: Optional[str] = None  # or an image file holding y itself (then target is not used)
        operator: dict = field(default_factory=lambda: {"type": "blur", "kernel_size": 61, "sigma": 5.0})
        # eq. 21
        gamma_schedule: str = "alpha"
        prompt_suffix: str = ICON_SUFFIX
        # optimizer (supp. sec. 2.1)
        lr_points: float = 0.02
        lr_points_peak: float = 0.2
        lr_points_final: float = 0.05
        lr_warmup_steps: int = 500
        lr_color_ratio: float = 0.05  # colours and opacities: 20x lower
        lr_background_ratio: float = 0.005  # background: 200x lower
        adam_betas: Tuple[float, float] = (0.9, 0.9)
        # outputs
        snapshot_every: int = 50

        guidance_type: str = "dreamsampler-guidance"
        guidance: dict = field(default_factory=dict)
        prompt_processor_type: str = "stable-diffusion-prompt-processor"
        prompt_processor: dict = field(default_factory=dict)

    cfg: Config
    RUN_SHAPING = ("canvas_size", "num_paths", "num_segments", "guidance_type", "guidance.mode")

    @staticmethod
    def check_config(cfg: "DreamSamplerSVG.Config"):
        """The fields' values, checked before any model is loaded (also by the launcher); returns the operator A."""
        try:
            return build_operator(dict(cfg.operator))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"system.operator={dict(cfg.operator)} is invalid: {exc}") from exc

    def configure(self) -> None:
        cfg = self.cfg
        self.operator = self.check_config(cfg)
        if cfg.canvas_size is None:
            model = self.cfg.guidance.get("pretrained_model_name_or_path")
            if not model:
                raise ValueError("system.canvas_size is null and there is no system.guidance.pretrained_model_name_or_path to take it from")
            cfg.canvas_size = model_resolution(model, "system.guidance.pretrained_model_name_or_path")
            threestudio.info(f"system.canvas_size: the guidance model's native resolution, {cfg.canvas_size}")
        size = cfg.canvas_size
        scene = init_scene(
            cfg.num_paths, size, size, cfg.num_segments, cfg.init_radius, tuple(cfg.background_color),
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.points = nn.Parameter(scene.points)
        self.colors = nn.Parameter(scene.colors)
        self.opacity = nn.Parameter(scene.opacity)
        self.background_rgb = nn.Parameter(scene.background)
        if cfg.measurement is not None:
            clean, y = None, load_image(cfg.measurement)[None]
            self.operator.check_measurement(y, size, size)
        else:
            clean = load_image(cfg.target, size, size)[None]
            y = self.operator.measure(clean, torch.Generator().manual_seed(cfg.seed)).clamp(0, 1)
        self.register_buffer("clean", clean, persistent=False)
        self.register_buffer("measurement", y, persistent=False)

    # ------------------------------------------------------------------ model
    def scene(self) -> VectorScene:
        return VectorScene(self.points, self.colors, self.opacity, self.background_rgb)

    def forward(self, batch: Optional[Dict[str, Any]] = None) -> Float[Tensor, "1 3 H W"]:
        size = self.cfg.canvas_size
        img = render(self.points, self.colors, self.opacity, self.background_rgb, size, size, backend=self.cfg.rasterizer)
        return bchw(img[None])

    def on_fit_start(self) -> None:
        prompt = self.cfg.prompt_processor.get("prompt", "")
        if not prompt.endswith(self.cfg.prompt_suffix):
            prompt = prompt + self.cfg.prompt_suffix
        self.prompt_processor = threestudio.find(self.cfg.prompt_processor_type)({**self.cfg.prompt_processor, "prompt": prompt})
        self.prompt_utils = self.prompt_processor()
        self.guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)
        if self.guidance.cfg.weighting_strategy != "tweedie":
            raise ValueError(
                "dreamsampler-svg-system implements eq. 21 with system.guidance.weighting_strategy=tweedie "
                f"(loss_sds = 0.5 ||E(g) - z0^||^2), got {self.guidance.cfg.weighting_strategy!r}"
            )
        self.restore_guidance_state()

    # --------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        rgb = self()
        a_t = self.guidance.alphas[self.guidance.current_timestep]
        gamma = float(gamma_schedule(self.cfg.gamma_schedule, a_t))
        w_sds, w_dc = eq18_weights(gamma, self.C(self.cfg.loss.lambda_sds), self.C(self.cfg.loss.lambda_dc))
        loss_dc = data_consistency(self.measurement, self.operator, rgb)
        loss_xing = xing_loss(self.points)
        loss = w_dc * loss_dc + self.C(self.cfg.loss.lambda_xing) * loss_xing
        if w_sds > 0:
            zeros = torch.zeros(1, device=self.device)
            out = self.guidance(bhwc(rgb), self.prompt_utils, elevation=zeros, azimuth=zeros,
                                camera_distances=zeros + 1, **batch)
            loss = loss + w_sds * out["loss_sds"]
            self.log("train/loss_sds", out["loss_sds"])
            self.log("train/grad_norm", out["grad_norm"])
            self.log("train/unet_evals", out["unet_evals"])
            if "carried_rms" in out:
                self.log("train/carried_rms", out["carried_rms"])
        for name, value in (("loss_dc", loss_dc), ("loss_xing", loss_xing), ("gamma", gamma),
                            ("timestep", float(self.guidance.current_timestep))):
            self.log(f"train/{name}", value)
        if self.true_global_step % self.cfg.snapshot_every == 0:
            self.save_image(f"progress/{self.true_global_step:06d}.png", to_uint8(rgb[0]))
        return {"loss": loss}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        super().on_train_batch_end(outputs, batch, batch_idx)
        with torch.no_grad():
            for p in (self.colors, self.opacity, self.background_rgb):
                p.clamp_(0.0, 1.0)

    def configure_optimizers(self):
        cfg, lr0 = self.cfg, self.cfg.lr_points
        total = self.trainer.max_steps
        if total is None or total < 1:
            raise ValueError("dreamsampler-svg-system needs trainer.max_steps >= 1 for its learning-rate schedule")
        optimizer = torch.optim.Adam(
            [
                {"params": [self.points], "lr": lr0, "name": "points"},
                {"params": [self.colors, self.opacity], "lr": lr0 * cfg.lr_color_ratio, "name": "colors"},
                {"params": [self.background_rgb], "lr": lr0 * cfg.lr_background_ratio, "name": "background"},
            ],
            betas=tuple(cfg.adam_betas),
        )
        scale = lambda step: point_lr(step, total, lr0, cfg.lr_points_peak, cfg.lr_points_final, cfg.lr_warmup_steps) / lr0
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------- evaluation
    def _canvas(self, img: Float[Tensor, "1 3 h w"]) -> Float[Tensor, "1 3 H W"]:
        size = self.cfg.canvas_size
        return img if img.shape[-1] == size else F.interpolate(img, (size, size), mode="nearest")

    def _comparison(self, rgb: Float[Tensor, "1 3 H W"]) -> np.ndarray:
        """y | A(g) | g | clean target (when known), side by side at canvas size."""
        panels = [self._canvas(self.measurement), self._canvas(self.operator(rgb)), rgb]
        panels += [self.clean] if self.clean is not None else []
        return np.concatenate([to_uint8(p[0]) for p in panels], axis=1)

    def validation_step(self, batch, batch_idx):
        with torch.no_grad():
            self.save_image(f"it{self.true_global_step}-val.png", self._comparison(self()))

    def on_validation_epoch_end(self):
        pass

    def test_step(self, batch, batch_idx):
        with torch.no_grad():
            rgb = self()
            size = self.cfg.canvas_size
            save_svg(self.get_save_path("final.svg"), self.scene(), size, size)
            self.save_image("final.png", to_uint8(rgb[0]))
            self.save_image("final-measurement.png", self._comparison(rgb))
            metrics = {
                "step": self.true_global_step,
                "measurement": self.cfg.measurement or f"A({self.cfg.target})",
                "psnr_measurement": float(psnr(self.operator(rgb).clamp(0, 1), self.measurement)[0]),
            }
            if self.clean is not None:
                metrics["psnr_target"] = float(psnr(rgb, self.clean)[0])
            self.save_json("metrics.json", metrics)
            threestudio.info(f"SVG restoration: {metrics}")
        self._save_progress()

    def on_test_epoch_end(self):
        threestudio.info(f"outputs in {self.get_save_dir()}: final.svg (the output), final.png, final-measurement.png (y | A(g) | g | clean), metrics.json")

    def _save_progress(self) -> None:
        """An animation and a strip of the snapshots taken during training (if any)."""
        frames = sorted(glob.glob(os.path.join(self.get_save_dir(), "progress", "*.png")))
        if not frames:
            return
        self.save_img_sequence("progress", "progress", r"(\d+)\.png", save_format="mp4", fps=10)
        import imageio.v3 as iio

        picks = [frames[i] for i in np.linspace(0, len(frames) - 1, min(STRIP_FRAMES, len(frames))).round().astype(int)]
        stride = max(1, self.cfg.canvas_size // STRIP_HEIGHT)
        self.save_image("progress-strip.png", np.concatenate([iio.imread(f)[::stride, ::stride] for f in picks], axis=1))
