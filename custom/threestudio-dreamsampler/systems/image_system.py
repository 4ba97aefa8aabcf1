"""``dreamsampler-image-system``: DreamSampler's 2D tasks in Stable Diffusion's latent space, one
reverse-sampling step per optimizer step of threestudio's Trainer (``trainer.max_steps = system.nfe``).

The generator is the latent itself, psi = z (main paper sec. 3.3: g = identity). At step i the
noisy latent is z_{t_i} = sqrt(abar_{t_i}) psi + sqrt(1 - abar_{t_i}) eps~ (eq. 12, eps~ carried from
step i - 1; at i = 0 the initial latent: noise or a DDIM inversion), the task's core step gives the
argmin z-bar of that timestep's latent problem and the noise to carry, and the optimizer solves
eq. 13 for the identity generator, ``0.5 ||psi - z-bar||^2``, exactly in one SGD step with lr 1.
After the last step the output is the DDIM update to level ``final_alpha`` (diffusers' convention).

Tasks (``system.task``; the math is in ``dreamsampler/``):
- ``text-to-image``: CFG Tweedie, the CFG prediction carried (:func:`dreamsampler.reverse.guided_step`);
  equals diffusers' DDIM sampling from the same initial latent.
- ``edit``: Alg. 3 with gamma_t = C abar_t, the null prediction carried, one prompt or several
  (mask, prompt) regions (eq. 19) (:mod:`dreamsampler.editing`).
- ``inpaint``: supp. Alg. 4, y = M x with M zero on the regions, each region its own prompt
  (:mod:`dreamsampler.inpainting`).
- ``restore``: the same step with a blur / down-sampling operator and one caption, no mask (eq. 15).

Outputs in ``<trial>/save/``: ``source.png`` (and ``measurement.png`` for inpaint / restore) at the
start; ``it<step>-val.png`` (current z-bar decoded | source) at validation; at test ``result.png``,
``strip.png`` (z-bar decoded at ``strip_frames`` steps, left to right), ``result.pt`` (initial and
final latents, result image as floats) and ``metrics.json``.
"""
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import threestudio
from threestudio.systems.base import BaseSystem
from threestudio.utils.misc import get_device
from threestudio.utils.typing import *

from ..dreamsampler.editing import edit_gamma, edit_step
from ..dreamsampler.image_io import latent_mask, read_image, read_mask, rect_mask, square_resize
from ..dreamsampler.inpainting import InverseProblem, initial_latent, inverse_step, masked_psnr
from ..dreamsampler.latent_model import LatentModel, load_text_encoder
from ..dreamsampler.operators import AdditiveNoise, Compose, Mask, build_operator
from ..dreamsampler.reverse import ReverseSchedule, Step, ddim_invert, guided_step, renoise
from ..guidance.sd_model import load_sd_components

TASKS = ("text-to-image", "edit", "inpaint", "restore")
INITS = ("inversion", "noise")
STRIP_HEIGHT = 128  # pixels per strip frame at most


def _uint8(img: Float[Tensor, "1 3 H W"]) -> np.ndarray:
    return (img[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


@threestudio.register("dreamsampler-image-system")
class DreamSamplerImage(BaseSystem):
    @dataclass
    class Config(BaseSystem.Config):
        task: str = "edit"  # text-to-image | edit | inpaint | restore
        pretrained_model_name_or_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
        half_precision_weights: bool = True  # fp16 UNet / VAE / text encoder on CUDA
        seed: int = 0  # set to ${seed}
        nfe: int = 200  # reverse steps = trainer.max_steps (and the inversion's steps)
        image_size: int = 512
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

    # ------------------------------------------------------------------ set-up
    def configure(self) -> None:
        cfg = self.cfg
        self._validate()
        device = get_device()
        dtype = torch.float16 if cfg.half_precision_weights and device.type == "cuda" else torch.float32
        field_name = "system.pretrained_model_name_or_path"
        vae, unet, scheduler = load_sd_components(cfg.pretrained_model_name_or_path, dtype, device, field_name=field_name)
        tokenizer, text_encoder = load_text_encoder(cfg.pretrained_model_name_or_path, dtype, device, field_name)
        self.model = LatentModel(vae, unet, tokenizer, text_encoder)
        f = self.model.latent_factor
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

    def _validate(self) -> None:
        cfg = self.cfg
        if cfg.task not in TASKS:
            raise ValueError(f"system.task={cfg.task!r} is unknown; choose one of {TASKS}")
        if int(cfg.nfe) < 1:
            raise ValueError(f"system.nfe (= trainer.max_steps) must be >= 1, got {cfg.nfe}")
        if cfg.init not in INITS:
            raise ValueError(f"system.init={cfg.init!r} is unknown; choose one of {INITS}")
        needs_prompt = cfg.task in ("text-to-image", "restore") or (cfg.task == "edit" and not cfg.regions)
        if needs_prompt and not str(cfg.prompt).strip():
            what = {"restore": "a caption of the image", "edit": "the target prompt (or system.regions)"}
            raise ValueError(f"system.prompt is empty: task {cfg.task!r} needs {what.get(cfg.task, 'a prompt')}")
        if cfg.regions and cfg.task not in ("edit", "inpaint"):
            raise ValueError(f"system.regions is used by the edit and inpaint tasks only, not by {cfg.task!r}")
        if cfg.task == "inpaint" and not cfg.regions:
            raise ValueError("system.regions is empty: inpainting needs at least one {prompt, mask | rect} region")
        for n, region in enumerate(cfg.regions):
            where = f"system.regions[{n}]"
            if not str(region.get("prompt", "")).strip():
                raise ValueError(f"{where}.prompt is empty: each region needs the text for its area")
            if ("mask" in region) == ("rect" in region):
                raise ValueError(f"{where} needs exactly one of 'mask' (an image file) or 'rect' ([x0, y0, x1, y1])")

    def _load_inputs(self, device) -> None:
        """Source image, masks, text embeddings and, for inpaint / restore, the inverse problem."""
        cfg, size = self.cfg, self.cfg.image_size
        self.source: Optional[Tensor] = None  # [0, 1]
        if cfg.task in ("edit", "inpaint") or (cfg.task == "restore" and not cfg.measurement):
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
        self.problem: Optional[InverseProblem] = None
        if cfg.task in ("inpaint", "restore"):
            self.operator, self.measurement, self.clean = self._measurement(device)
            self.problem = InverseProblem(
                self.model.eps, self.model.decode, self.model.encode, self.operator, self.measurement, self.null,
                self.targets, masks=self.latent_masks if cfg.task == "inpaint" else None, lam=cfg.cg_lambda,
                cg_iters=cfg.cg_iters, dps_scale=cfg.dps_scale,
                guidance_scale=cfg.guidance_scale if cfg.task == "restore" else 1.0, gamma_period=cfg.gamma_period,
                gamma_t_max=cfg.gamma_t_max, gamma_on_step_index=cfg.gamma_on_step_index,
            )

    def _measurement(self, device):
        """(A, y in [-1, 1], clean image in [0, 1] or None) for inpaint / restore."""
        cfg, size = self.cfg, self.cfg.image_size
        if cfg.task == "inpaint":
            op = Mask(1 - self.masks.sum(0).clamp(max=1.0))
        else:
            spec = OmegaConf.to_container(cfg.operator) if OmegaConf.is_config(cfg.operator) else cfg.operator
            try:
                op = build_operator({"type": "compose", "ops": spec} if isinstance(spec, list) else spec)
            except ValueError as exc:
                raise ValueError(f"system.operator={spec} is invalid: {exc}") from exc
        op = op.to(device)
        if cfg.task == "restore" and cfg.measurement:
            y = read_image(cfg.measurement, "system.measurement")[None].to(device) * 2 - 1
            try:
                op.check_measurement(y, size, size)
            except ValueError as exc:
                raise ValueError(f"system.measurement={cfg.measurement!r}: {exc}") from exc
            return op, y, None
        gen = torch.Generator().manual_seed(cfg.seed)
        noisy = Compose([op, AdditiveNoise(cfg.measurement_noise)]) if cfg.measurement_noise > 0 else op
        y = noisy.measure((self.source * 2 - 1).cpu(), generator=gen).to(device)
        return op, y, self.source

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.trainer.max_steps != self.cfg.nfe:
            raise ValueError(
                f"trainer.max_steps ({self.trainer.max_steps}) must equal system.nfe ({self.cfg.nfe}): "
                "one reverse step per optimizer step"
            )
        if self.source is not None:
            self.save_image("source.png", _uint8(self.source))
        if self.cfg.task in ("inpaint", "restore"):
            self.save_image("measurement.png", _uint8(self._show_measurement()))

    # --------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        i, s = self.true_global_step, self.schedule
        if i == 0:
            how = f"DDIM inversion with the null prompt, {len(s)} steps" if self._inverts() else "Gaussian noise"
            threestudio.info(f"{self.cfg.task}: initial latent from {how}")
            with torch.no_grad():
                self.z_T.copy_(self._initial_latent().to(self.z_T))
            z_t = self.z_T
        else:
            z_t = renoise(self.psi.detach(), self.eps_carry, s.alpha(i))
        step = self._reverse_step(z_t, i)
        self.eps_carry.copy_(step.eps.detach())
        if i in self.strip_steps:
            self.z0_strip[self.strip_steps.index(i)].copy_(step.z0.detach()[0])
        loss = 0.5 * ((self.psi - step.z0.detach()) ** 2).sum()  # eq. 13 for g = identity
        self.log("train/timestep", float(s.t(i)))
        self.log("train/loss", loss)
        return {"loss": loss}

    def _initial_latent(self) -> Tensor:
        """z_T: Gaussian noise, or the null-prompt DDIM inversion of the source / measurement."""
        m, s = self.model, self.schedule
        if self.cfg.task == "edit":
            return ddim_invert(m.eps, m.encode(self.source * 2 - 1), s, self.null)
        if self._inverts():
            return initial_latent(self.problem, s)
        return torch.randn(self.psi.shape, generator=torch.Generator().manual_seed(self.cfg.seed))

    def _reverse_step(self, z_t: Tensor, i: int) -> Step:
        """The task's step at index i: z-bar and the noise carried to the next level."""
        m, s, task = self.model, self.schedule, self.cfg.task
        if task == "text-to-image":
            return guided_step(m.eps, z_t, s.t(i), s.alpha(i), self.null, self.targets[0], self.cfg.guidance_scale)
        if task == "edit":
            gamma = edit_gamma(s, i, self.cfg.edit_scale)
            return edit_step(m.eps, z_t, s.t(i), s.alpha(i), self.null, self.targets, self.latent_masks, gamma)
        return inverse_step(self.problem, s, z_t, i, self._fresh_noise(i))

    def _inverts(self) -> bool:
        return self.cfg.task == "edit" or (self.cfg.task in ("inpaint", "restore") and self.cfg.init == "inversion")

    def _fresh_noise(self, i: int) -> Optional[Tensor]:
        """e ~ N(0, I) of Alg. 4, seeded per step (so a resumed run repeats it); None at the last step."""
        if i == len(self.schedule) - 1:
            return None
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + i + 1)
        return torch.randn(self.psi.shape, generator=gen).to(self.psi)

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return (self.model.decode(z) / 2 + 0.5).clamp(0, 1)

    def _show_measurement(self) -> Tensor:
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
            z = renoise(self.psi.detach(), self.eps_carry, self.schedule.final_alpha)
            result = self.decode(z)
        self.save_image("result.png", _uint8(result))
        self._save_strip()
        self.save_state_dict(
            "result.pt",
            {"initial_latent": self.z_T.cpu(), "latent": z.cpu(), "image": result.cpu(), "timesteps": self.schedule.timesteps},
        )
        metrics = {"task": self.cfg.task, "nfe": self.cfg.nfe, "step": self.true_global_step, **self._metrics(result)}
        self.save_json("metrics.json", metrics)
        threestudio.info(f"dreamsampler-image-system: {metrics}")

    def on_test_epoch_end(self):
        pass

    def _save_strip(self) -> None:
        frames = self.decode(self.z0_strip)
        stride = max(1, self.cfg.image_size // STRIP_HEIGHT)
        strip = torch.cat(list(frames[:, :, ::stride, ::stride]), dim=-1)[None]
        self.save_image("strip.png", _uint8(strip))

    def _metrics(self, result: Tensor) -> Dict[str, float]:
        """PSNR (dB) against the source / clean image and the measurement, as far as the task has them."""
        out: Dict[str, float] = {}
        if self.cfg.task == "edit":
            out["psnr_source"] = masked_psnr(result, self.source, torch.ones_like(result[:, :1]))
            if self.masks is not None:
                outside = 1 - self.masks.sum(0, keepdim=True).clamp(max=1)
                out["psnr_source_outside_regions"] = masked_psnr(result, self.source, outside)
        elif self.cfg.task == "inpaint":
            keep = self.operator.mask[None]
            out["psnr_observed"] = masked_psnr(result, self.source, keep)
            out["psnr_regions"] = masked_psnr(result, self.source, 1 - keep)
        elif self.cfg.task == "restore":
            with torch.no_grad():
                a_result = self.operator(result * 2 - 1)
            ones = torch.ones_like(self.measurement[:, :1])
            out["psnr_measurement"] = masked_psnr((a_result / 2 + 0.5).clamp(0, 1), (self.measurement / 2 + 0.5).clamp(0, 1), ones)
            if self.clean is not None:
                full = torch.ones_like(result[:, :1])
                out["psnr_clean"] = masked_psnr(result, self.clean, full)
                out["psnr_clean_of_measurement"] = masked_psnr(self._show_measurement(), self.clean, full)
        return out
