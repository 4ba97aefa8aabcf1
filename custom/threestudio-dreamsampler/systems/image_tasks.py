"""The four tasks of ``dreamsampler-image-system``, one small unit each (the math is in ``dreamsampler.image``).

Every task answers the same questions for the system: what it checks in the config, what it
prepares (a measurement, an inverse problem), its initial latent z_T, its reverse step at index i
(z-bar and the noise carried to the next level) and its metrics. :data:`TASKS` maps
``system.task`` to its unit; the system looks the task up there once.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from omegaconf import OmegaConf
from torch import Tensor

from dreamsampler.diffusion.reverse import Step, ddim_invert, guided_step
from dreamsampler.image.editing import edit_gamma, edit_step
from dreamsampler.image.inpainting import InverseProblem, fresh_noise, initial_latent, inverse_step
from dreamsampler.image_io import read_image
from dreamsampler.inverse.operators import AdditiveNoise, Compose, Mask, build_operator
from dreamsampler.metrics import masked_psnr


class ImageTask:
    """Defaults shared by the tasks; ``system`` is the :class:`DreamSamplerImage` running it."""

    needs_prompt = True  # system.prompt must be set (without regions)
    regions = "forbidden"  # forbidden | optional | required
    reads_image = False  # system.image is its source / clean image
    inverts = False  # z_T is a DDIM inversion (else Gaussian noise)
    prompt_is = "a prompt"  # what system.prompt means, for the error when it is empty

    def __init__(self, cfg):
        self.cfg = cfg

    def validate(self) -> None:
        cfg, name = self.cfg, self.cfg.task
        if self.needs_prompt and not cfg.regions and not str(cfg.prompt).strip():
            raise ValueError(f"system.prompt is empty: task {name!r} needs {self.prompt_is}")
        if cfg.regions and self.regions == "forbidden":
            raise ValueError(f"system.regions is used by the edit and inpaint tasks only, not by {name!r}")
        if not cfg.regions and self.regions == "required":
            raise ValueError("system.regions is empty: inpainting needs at least one {prompt, mask | rect} region")

    def prepare(self, system, device) -> None:
        """Anything beyond the shared inputs (source, masks, embeddings)."""

    def initial_latent(self, system) -> Tensor:
        return torch.randn(system.psi.shape, generator=torch.Generator().manual_seed(self.cfg.seed))

    def step(self, system, z_t: Tensor, i: int) -> Step:
        raise NotImplementedError

    def metrics(self, system, result: Tensor) -> Dict[str, float]:
        return {}


class TextToImage(ImageTask):
    """CFG Tweedie with the CFG prediction carried: diffusers' DDIM sampling from the same z_T."""

    def step(self, system, z_t, i):
        s = system.schedule
        return guided_step(system.model.eps, z_t, s.t(i), s.alpha(i), system.null, system.targets[0], self.cfg.guidance_scale)


class Edit(ImageTask):
    """Alg. 3: null-prompt DDIM inversion, gamma_t = C abar_t, the null prediction carried (eq. 19 with regions)."""

    regions, reads_image, inverts = "optional", True, True
    prompt_is = "the target prompt (or system.regions)"

    def initial_latent(self, system):
        m = system.model
        return ddim_invert(m.eps, m.encode(system.source * 2 - 1), system.schedule, system.null)

    def step(self, system, z_t, i):
        s = system.schedule
        gamma = edit_gamma(s, i, self.cfg.edit_scale)
        return edit_step(system.model.eps, z_t, s.t(i), s.alpha(i), system.null, system.targets, system.latent_masks, gamma)

    def metrics(self, system, result):
        out = {"psnr_source": masked_psnr(result, system.source, torch.ones_like(result[:, :1]))}
        if system.masks is not None:
            outside = 1 - system.masks.sum(0, keepdim=True).clamp(max=1)
            out["psnr_source_outside_regions"] = masked_psnr(result, system.source, outside)
        return out


class InverseTask(ImageTask):
    """Supp. Alg. 4 on a measurement y = A(image): CG data consistency and closed forms on Gamma, DPS elsewhere."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.inverts = cfg.init == "inversion"

    def operator(self, system):
        raise NotImplementedError

    def prepare(self, system, device):
        cfg = self.cfg
        system.operator = self.operator(system).to(device)
        system.measurement, system.clean = self.measurement(system, device)
        system.problem = InverseProblem(
            system.model.eps, system.model.decode, system.model.encode, system.operator, system.measurement,
            system.null, system.targets, masks=self.latent_masks(system), lam=cfg.cg_lambda, cg_iters=cfg.cg_iters,
            dps_scale=cfg.dps_scale, guidance_scale=self.guidance_scale(), gamma_period=cfg.gamma_period,
            gamma_t_max=cfg.gamma_t_max, gamma_on_step_index=cfg.gamma_on_step_index,
        )

    def measurement(self, system, device):
        """(y in [-1, 1], the clean image in [0, 1] or None): A applied to system.image, with noise."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        op = system.operator
        noisy = Compose([op, AdditiveNoise(self.cfg.measurement_noise)]) if self.cfg.measurement_noise > 0 else op
        return noisy.measure((system.source * 2 - 1).cpu(), generator=gen).to(device), system.source

    def latent_masks(self, system) -> Optional[Tensor]:
        return None

    def guidance_scale(self) -> float:
        return 1.0

    def initial_latent(self, system):
        return initial_latent(system.problem, system.schedule) if self.inverts else super().initial_latent(system)

    def step(self, system, z_t, i):
        return inverse_step(system.problem, system.schedule, z_t, i, fresh_noise(self.cfg.seed, i, system.schedule, z_t))


class Inpaint(InverseTask):
    """y = M x with M zero on the regions, each region its own prompt."""

    needs_prompt, regions, reads_image = False, "required", True

    def operator(self, system):
        return Mask(1 - system.masks.sum(0).clamp(max=1.0))

    def latent_masks(self, system):
        return system.latent_masks

    def metrics(self, system, result):
        keep = system.operator.mask[None]
        return {"psnr_observed": masked_psnr(result, system.source, keep),
                "psnr_regions": masked_psnr(result, system.source, 1 - keep)}


class Restore(InverseTask):
    """Blur / down-sampling with one caption and no mask (eq. 15); y from system.image or system.measurement."""

    prompt_is = "a caption of the image"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.reads_image = not cfg.measurement

    def validate(self) -> None:
        super().validate()
        self.operator(None)  # a bad system.operator is named before any model is loaded

    def operator(self, system):
        spec = OmegaConf.to_container(self.cfg.operator) if OmegaConf.is_config(self.cfg.operator) else self.cfg.operator
        try:
            return build_operator({"type": "compose", "ops": spec} if isinstance(spec, list) else spec)
        except ValueError as exc:
            raise ValueError(f"system.operator={spec} is invalid: {exc}") from exc

    def measurement(self, system, device):
        cfg = self.cfg
        if not cfg.measurement:
            return super().measurement(system, device)
        y = read_image(cfg.measurement, "system.measurement")[None].to(device) * 2 - 1
        try:
            system.operator.check_measurement(y, cfg.image_size, cfg.image_size)
        except ValueError as exc:
            raise ValueError(f"system.measurement={cfg.measurement!r}: {exc}") from exc
        return y, None

    def guidance_scale(self):
        return self.cfg.guidance_scale

    def metrics(self, system, result):
        with torch.no_grad():
            a_result = system.operator(result * 2 - 1)
        ones = torch.ones_like(system.measurement[:, :1])
        to01 = lambda x: (x / 2 + 0.5).clamp(0, 1)
        out = {"psnr_measurement": masked_psnr(to01(a_result), to01(system.measurement), ones)}
        if system.clean is not None:
            full = torch.ones_like(result[:, :1])
            out["psnr_clean"] = masked_psnr(result, system.clean, full)
            out["psnr_clean_of_measurement"] = masked_psnr(system.show_measurement(), system.clean, full)
        return out


TASKS = {"text-to-image": TextToImage, "edit": Edit, "inpaint": Inpaint, "restore": Restore}
