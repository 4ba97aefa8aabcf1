"""``dreamsampler-image-system``: DreamSampler's 2D tasks in Stable Diffusion's latent space, one
reverse-sampling step per optimizer step of threestudio's Trainer (``trainer.max_steps = system.nfe``).

The generator is the latent itself, psi = z (main paper sec. 3.3: g = identity). At step i the
noisy latent is z_{t_i} = sqrt(abar_{t_i}) psi + sqrt(1 - abar_{t_i}) eps~ (eq. 12, eps~ carried from
step i - 1; at i = 0 the initial latent: noise or a DDIM inversion), the task's core step gives the
argmin z-bar of that timestep's latent problem and the noise to carry, and the optimizer solves
eq. 13 for the identity generator, ``0.5 ||psi - z-bar||^2``, exactly in one SGD step with lr 1.
After the last step the output is the DDIM update to level ``final_alpha`` (diffusers' convention).

Tasks (``system.task``; one unit each in ``image_tasks.py``, the math in ``dreamsampler.image``):
- ``text-to-image``: CFG Tweedie, the CFG prediction carried (:func:`dreamsampler.diffusion.reverse.guided_step`);
  equals diffusers' DDIM sampling from the same initial latent.
- ``edit``: Alg. 3 with gamma_t = C abar_t, the null prediction carried, one prompt or several
  (mask, prompt) regions (eq. 19) (:mod:`dreamsampler.image.editing`).
- ``inpaint``: supp. Alg. 4, y = M x with M zero on the regions, each region its own prompt
  (:mod:`dreamsampler.image.inpainting`; fresh noise seeded by (seed, step), as ``inpainting.solve``).
- ``restore``: the same step with a blur / down-sampling operator and one caption, no mask (eq. 15).

Outputs in ``<trial>/save/``: ``source.png`` (and ``measurement.png`` for inpaint / restore) at the
start; ``it<step>-val.png`` (current z-bar decoded | source) at validation; at test ``result.png``,
``strip.png`` (z-bar decoded at ``strip_frames`` steps, left to right), ``result.pt`` (initial and
final latents, result image as floats) and ``metrics.json``.
"""
from dataclasses import dataclass, field

import numpy as np
import threestudio
import torch
import torch.nn.functional as F
from threestudio.systems.base import BaseSystem
from threestudio.utils.misc import get_device
from threestudio.utils.typing import *
from torch import nn

from dreamsampler.diffusion.latent_model import LatentModel, is_pixel_space, load_text_encoder
from dreamsampler.diffusion.process import forward_noise
from dreamsampler.diffusion.schedules import ReverseSchedule
from dreamsampler.image_io import latent_mask, read_image, read_mask, rect_mask, square_resize, to_uint8

from ..guidance.diffusion_model import load_diffusion_components, weights_dtype
from .image_tasks import TASKS
from .run_fingerprint import RunFingerprintMixin

INITS = ("inversion", "noise")
STRIP_HEIGHT = 128  # pixels per strip frame at most


def _uint8(img: Float[Tensor, "1 3 H W"]) -> np.ndarray:
    return to_uint8(img[0])


@threestudio.register("dreamsampler-image-system")
class DreamSamplerImage(RunFingerprintMixin, BaseSystem):
    @dataclass
    class Config(BaseSystem.Config):
        task: str = "edit"  # text-to-image | edit | inpaint | restore
        pretrained_model_name_or_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
        half_precision_weights: bool = True  # fp16 UNet / VAE / text encoder on CUDA
        seed: int = 0  # set to ${seed}
        nfe: int = 200  # reverse steps = trainer.max_steps (and the inversion's steps)
        image_size: Optional[int] = None  # None: the model's native resolution (512 for SD 1.5)
        image: str = "skimage:chelsea"  # source (edit, inpaint) or clean image (restore): file | skimage:<name>
        measurement: Optional[str] = None  # restore: an image file holding y instead of A(image)
        prompt: str = ""  # text-to-image prompt; edit target without regions; restore caption
        null_prompt: str = ""  # c_null ("" for edit; "out of focus, depth of field" for inpaint)
        regions: List[dict] = field(default_factory=list)  # [{prompt: ..., mask: file | rect: [x0, y0, x1, y1]}]
        guidance_scale: float = 7.5  # text-to-image CFG; inpaint / restore: CFG inside z^(c) (1 = paper)
        edit_scale: float = 0.15  # C of gamma_t = C abar_t
        # restore: A as a list of operator specs applied in order (a list, so a command-line override
        # replaces it instead of merging keys), or one spec
        operator: Any = field(default_factory=lambda: [{"type": "blur", "kernel_size": 61, "sigma": 5.0}])
        measurement_noise: float = 0.0  # std of the noise added when y is made from system.image ([-1, 1] units)
        init: str = "inversion"  # inpaint / restore: inversion of the measurement | noise
        cg_lambda: float = 1e-4  # lambda of supp. eq. 13
        cg_iters: int = 10
        dps_scale: float = 1.0  # rho_t = dps_scale * sqrt(abar_{t-1})
        gamma_period: int = 3  # Gamma = {t : t mod 3 == 0, t <= 170}
        gamma_t_max: int = 170
        gamma_on_step_index: bool = False  # Gamma tested on the step index (the authors' code) instead of t
        strip_frames: int = 8
        optimizer: dict = field(default_factory=lambda: {"name": "SGD", "args": {"lr": 1.0}})

    cfg: Config
    RUN_SHAPING = ("task", "nfe", "image_size", "init")

    # ------------------------------------------------------------------ set-up
    def configure(self) -> None:
        cfg = self.cfg
        self.task = self.check_config(cfg)
        device = get_device()
        dtype = weights_dtype(cfg.half_precision_weights, device)
        field_name = "system.pretrained_model_name_or_path"
        if is_pixel_space(cfg.pretrained_model_name_or_path, field_name):  # before any weights are loaded
            raise ValueError(
                f"{field_name}={cfg.pretrained_model_name_or_path!r} is a pixel-space model (no VAE: DeepFloyd IF); "
                "the 2D tasks run in a latent model's space: pass a Stable Diffusion model"
            )
        vae, unet, scheduler = load_diffusion_components(cfg.pretrained_model_name_or_path, dtype, device, field_name=field_name)
        tokenizer, text_encoder = load_text_encoder(cfg.pretrained_model_name_or_path, dtype, device, field_name)
        self.model = LatentModel(vae, unet, tokenizer, text_encoder, scheduler)
        threestudio.info(f"{field_name}: {self.model.prediction_type} prediction, native {self.model.resolution} px")
        f = self.model.latent_factor
        if cfg.image_size is None:
            cfg.image_size = self.model.resolution
            threestudio.info(f"system.image_size: the model's native resolution, {cfg.image_size}")
        if cfg.image_size % f:
            raise ValueError(f"system.image_size={cfg.image_size} must be a multiple of the VAE factor {f}")
        self.schedule = ReverseSchedule.from_scheduler(scheduler, cfg.nfe)
        h = w = cfg.image_size // f
        self._load_inputs(device)
        self.psi = nn.Parameter(torch.zeros(1, unet.config.in_channels, h, w))
        self.register_buffer("eps_carry", torch.zeros_like(self.psi.data))
        self.register_buffer("z_T", torch.zeros_like(self.psi.data))
        k = max(1, min(cfg.strip_frames, cfg.nfe))
        self.strip_steps = [int(s) for s in np.linspace(0, cfg.nfe - 1, k).round()]
        self.register_buffer("z0_strip", torch.zeros(k, *self.psi.shape[1:]))

    @staticmethod
    def check_config(cfg: "DreamSamplerImage.Config"):
        """The fields' values, checked before any model is loaded (also by the launcher); returns the task."""
        if cfg.task not in TASKS:
            raise ValueError(f"system.task={cfg.task!r} is unknown; choose one of {tuple(TASKS)}")
        if int(cfg.nfe) < 1:
            raise ValueError(f"system.nfe (= trainer.max_steps) must be >= 1, got {cfg.nfe}")
        if cfg.init not in INITS:
            raise ValueError(f"system.init={cfg.init!r} is unknown; choose one of {INITS}")
        task = TASKS[cfg.task](cfg)
        task.validate()
        for n, region in enumerate(cfg.regions):
            where = f"system.regions[{n}]"
            if not str(region.get("prompt", "")).strip():
                raise ValueError(f"{where}.prompt is empty: each region needs the text for its area")
            if ("mask" in region) == ("rect" in region):
                raise ValueError(f"{where} needs exactly one of 'mask' (an image file) or 'rect' ([x0, y0, x1, y1])")
        return task

    def _load_inputs(self, device) -> None:
        """Source image, masks and text embeddings; then what the task itself prepares."""
        cfg, size = self.cfg, self.cfg.image_size
        self.source: Optional[Tensor] = None  # [0, 1]
        if self.task.reads_image:
            raw = read_image(cfg.image, "system.image")
            self.source = square_resize(raw, size)[None].to(device)
        masks = []
        for n, region in enumerate(cfg.regions):
            where = f"system.regions[{n}]"
            if "mask" in region:
                m = square_resize(read_mask(region["mask"], f"{where}.mask", tuple(raw.shape[-2:]), "system.image"), size)
                masks.append((m > 0.5).float())
            else:
                masks.append(rect_mask(region["rect"], size, size, f"{where}.rect"))
        self.masks = torch.stack(masks).to(device) if masks else None  # [K, 1, H, W] image resolution
        self.latent_masks = latent_mask(self.masks, self.model.latent_factor) if masks else None
        prompts = [r["prompt"] for r in cfg.regions] if cfg.regions else [cfg.prompt]
        emb = self.model.text([cfg.null_prompt, *prompts])
        self.null, self.targets = emb[:1], list(emb[1:].split(1))
        self.measurement: Optional[Tensor] = None
        self.task.prepare(self, device)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.trainer.max_steps != self.cfg.nfe:
            raise ValueError(
                f"trainer.max_steps ({self.trainer.max_steps}) must equal system.nfe ({self.cfg.nfe}): "
                "one reverse step per optimizer step"
            )
        if self.source is not None:
            self.save_image("source.png", _uint8(self.source))
        if self.measurement is not None:
            self.save_image("measurement.png", _uint8(self.show_measurement()))

    # --------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        i, s = self.true_global_step, self.schedule
        if i == 0:
            how = f"DDIM inversion with the null prompt, {len(s)} steps" if self.task.inverts else "Gaussian noise"
            threestudio.info(f"{self.cfg.task}: initial latent from {how}")
            with torch.no_grad():
                self.z_T.copy_(self.task.initial_latent(self).to(self.z_T))
            z_t = self.z_T
        else:
            z_t = forward_noise(self.psi.detach(), self.eps_carry, s.alpha(i))
        step = self.task.step(self, z_t, i)
        self.eps_carry.copy_(step.eps.detach())
        if i in self.strip_steps:
            self.z0_strip[self.strip_steps.index(i)].copy_(step.z0.detach()[0])
        loss = 0.5 * ((self.psi - step.z0.detach()) ** 2).sum()  # eq. 13 for g = identity
        self.log("train/timestep", float(s.t(i)))
        self.log("train/loss", loss)
        return {"loss": loss}

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return (self.model.decode(z) / 2 + 0.5).clamp(0, 1)

    def show_measurement(self) -> Tensor:
        """y in [0, 1] at the image size (nearest-neighbour up-sampling when A shrinks)."""
        y = (self.measurement / 2 + 0.5).clamp(0, 1)
        return F.interpolate(y, size=(self.cfg.image_size,) * 2, mode="nearest")

    def validation_step(self, batch, batch_idx):
        panels = [self.decode(self.psi.detach())]
        if self.source is not None:
            panels.append(self.source)
        self.save_image(f"it{self.true_global_step}-val.png", np.concatenate([_uint8(p) for p in panels], axis=1))

    def on_validation_epoch_end(self):
        pass

    def test_step(self, batch, batch_idx):
        with torch.no_grad():
            z = forward_noise(self.psi.detach(), self.eps_carry, self.schedule.final_alpha)
            result = self.decode(z)
        self.save_image("result.png", _uint8(result))
        self._save_strip()
        self.save_state_dict(
            "result.pt",
            {"initial_latent": self.z_T.cpu(), "latent": z.cpu(), "image": result.cpu(), "timesteps": self.schedule.timesteps},
        )
        metrics = {"task": self.cfg.task, "nfe": self.cfg.nfe, "step": self.true_global_step, **self.task.metrics(self, result)}
        self.save_json("metrics.json", metrics)
        threestudio.info(f"dreamsampler-image-system: {metrics}")

    def on_test_epoch_end(self):
        threestudio.info(f"outputs in {self.get_save_dir()}: result.png (the output), strip.png (z-bar over the run), metrics.json")

    def _save_strip(self) -> None:
        frames = self.decode(self.z0_strip)
        stride = max(1, self.cfg.image_size // STRIP_HEIGHT)
        strip = torch.cat(list(frames[:, :, ::stride, ::stride]), dim=-1)[None]
        self.save_image("strip.png", _uint8(strip))
