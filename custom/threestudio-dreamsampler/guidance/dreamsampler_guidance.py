"""``dreamsampler-guidance``: a drop-in for threestudio's ``stable-diffusion-guidance`` and ``deep-floyd-guidance``.

Same call signature, output keys and config fields where they mean the same thing; what changes is
where the timestep and the noise come from (main paper Alg. 2): the timestep follows a decreasing
schedule over the run (advanced by ``update_step``) and the noise added to the render is the noise
the UNet predicted at the previous step (carried by :class:`dreamsampler.DreamSampler`, optionally
one memory per camera index or per azimuth sector). The math lives in the core; this file translates threestudio's
config, prompt embeddings and batches into core calls.

One guidance serves both model families, chosen by the model (no VAE: a pixel-space model;
``latent_model.is_pixel_space``): latent Stable Diffusion (epsilon or v prediction; renders encoded by the VAE)
and DeepFloyd IF stage I (pixels at 64x64; the UNet's learned variance dropped, as threestudio does).
One name because the guidance fields of both threestudio guidances mean the same here, so
``system.guidance_type=dreamsampler-guidance`` swaps into an SD config and into an IF config alike
(with the IF config's ``deep-floyd-prompt-processor`` left as it is).

CFG follows the paper (eq. 6): ``eps(null) + w * (eps(c) - eps(null))``; threestudio's guidance uses
``eps(c) + w * (eps(c) - eps(null))``, i.e. our ``w`` is its ``w + 1``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import threestudio
import torch
import torch.nn.functional as F
from threestudio.utils.base import BaseObject
from threestudio.utils.misc import C, cleanup
from threestudio.utils.typing import *

from dreamsampler import distill
from dreamsampler.diffusion import DreamSampler, decreasing_timesteps, index_for_step
from dreamsampler.diffusion.process import check_prediction_type, cfg, forward_noise, perp_neg_cfg, to_epsilon, tweedie
from dreamsampler.diffusion.latent_model import native_resolution
from dreamsampler.diffusion.reverse import ddim_invert_noise
from dreamsampler.diffusion.schedules import TIMESTEP_SCHEDULES, inversion_timesteps
from dreamsampler.distill.lmc import FixedNoise, load_corrective
from dreamsampler.distill.modes import ARTIFACT_DESCRIPTORS, MODES, source_prompt
from dreamsampler.image_io import bchw, bhwc
from dreamsampler.inverse.view_targets import one_step_estimates
from dreamsampler.multiview.cameras import azimuth_bin

from .diffusion_model import load_diffusion_components, weights_dtype, without_autocast


def carrying_target(pair):
    """(gradient, target eps) of a mode without carried noise, with the target eps as the eps to carry."""
    grad, eps = pair
    return grad, eps, eps


@threestudio.register("dreamsampler-guidance")
class DreamSamplerGuidance(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        # fields shared with stable-diffusion-guidance
        pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"
        enable_memory_efficient_attention: bool = False
        enable_sequential_cpu_offload: bool = False
        enable_attention_slicing: bool = False
        enable_channels_last_format: bool = False
        guidance_scale: float = 100.0
        grad_clip: Optional[Any] = None
        half_precision_weights: bool = True
        min_step_percent: Any = 0.02
        max_step_percent: Any = 0.98
        trainer_max_steps: int = 10000  # length of the decreasing schedule; set to ${trainer.max_steps}
        schedule_start_step: int = 0  # the optimizer step the schedule starts at (e.g. after a warm-up)
        weighting_strategy: str = "sds"
        view_dependent_prompting: bool = True
        max_items_eval: int = 4
        # DreamSampler
        mode: str = "dreamsampler"  # dreamsampler | sds | bridge | dds | lmc | sdi (see dreamsampler.distill.modes)
        # linear | sqrt | cosine. The default's rule: HiFA's sqrt annealing, the schedule of the work whose pixel
        # regularizer the paper adopts (supp. sec. 5.3); it leaves high t soonest (3.5% of the run above t = 0.8 T)
        timestep_schedule: str = "sqrt"
        steps_per_timestep: int = 1
        eta: float = 0.0
        per_view_noise: bool = False  # one noise memory per batch["index"] (fixed multi-view data)
        camera_bins: int = 0  # random cameras: one noise memory per azimuth sector of 360 / camera_bins degrees (0: one shared)
        # the noise carried to the next step: unconditional (Alg. 3, 4) | guided (Alg. 2). The rule for the default:
        # carry an estimate of unit-variance noise, as the forward process assumes (train/carried_rms near 1);
        # eps(z_t, null) is one, the CFG prediction's RMS grows with the scale (about 2 at CFG 7.5, 6 at 100)
        carry: str = "unconditional"
        pixel_loss: bool = False  # also return loss_pixel = ||x - D(z0^)||^2 (supp. eq. 19)
        return_target: bool = False  # also return the decoded target D(z0^) as "target_rgb"
        on_nonfinite: str = "raise"  # raise | skip
        # bridge / dds: the source prompt y_src, encoded by a prompt processor built like the system's
        source_prompt: Optional[str] = None  # bridge default (None): the target prompt + source_suffix; "": the null prompt
        source_suffix: str = ARTIFACT_DESCRIPTORS  # bridge: artifact (or domain, e.g. ", painting") descriptors
        bridge_scale: float = 1.0  # w of w * (eps(y_tgt) - eps(y_src))
        bridge_start_step: int = 0  # plain SDS before this step (the paper's stage 1), bridge after
        prompt_processor_type: Optional[str] = None  # None: the model family's (stable-diffusion- / deep-floyd-prompt-processor)
        prompt_processor: dict = field(default_factory=dict)  # e.g. ${system.prompt_processor}
        # lmc: the learned manifold corrective k_psi (train with scripts/train_lmc.py)
        lmc_checkpoint: Optional[str] = None
        lmc_fixed_noise: bool = False  # one eps for the whole run inside L_lmc only (diversity)
        lmc_seed: int = 0
        lmc_manifold_weight: Optional[float] = None  # c(t) of L_lmc; None: w(t) sqrt(a / (1 - a))
        # sdi (Score Distillation via Inversion), fields as threestudio's stable-diffusion-sdi-guidance; the CFG
        # scales are eq. 6's like guidance_scale: threestudio's w + 1 without Perp-Neg, its w with Perp-Neg
        inversion_guidance_scale: float = -7.5  # CFG scale of the DDIM inversion's predictions
        inversion_n_steps: int = 10  # DDIM grid of the inversion (the steps below t, plus one to t + delta)
        inversion_eta: float = 0.3  # stochastic term of each inversion step
        t_anneal: bool = True  # t = max_step_percent -> min_step_percent linearly over trainer_max_steps (else random)
        enable_sdi: bool = True  # false: fresh noise instead of the inversion's (as threestudio's; sdi.yaml sets it)

    cfg: Config

    # ------------------------------------------------------------------ set-up
    def configure(self) -> None:
        self.check_config(self.cfg)
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        if self.device.type != "cuda" and self.cfg.half_precision_weights:
            threestudio.info(f"dreamsampler-guidance: no CUDA device, using {str(self.weights_dtype)[6:]} weights")
        threestudio.info(f"Loading the diffusion model {self.cfg.pretrained_model_name_or_path} ...")
        self.vae, self.unet, scheduler = load_diffusion_components(
            self.cfg.pretrained_model_name_or_path,
            self.weights_dtype,
            self.device,
            field_name="guidance.pretrained_model_name_or_path",
            memory_efficient_attention=self.cfg.enable_memory_efficient_attention,
            attention_slicing=self.cfg.enable_attention_slicing,
            channels_last=self.cfg.enable_channels_last_format,
            sequential_cpu_offload=self.cfg.enable_sequential_cpu_offload,
        )
        cleanup()
        self.pixel_space = self.vae is None  # DeepFloyd IF: the diffusion runs on the render's pixels
        # renders are resized to the model's native resolution (512 for SD 1.5 / 2.1-base, 768 for 2.1, 64 for IF)
        self.resolution = native_resolution(self.unet.config, None if self.pixel_space else self.vae.config)
        self.scheduler = scheduler
        model = f"guidance.pretrained_model_name_or_path={self.cfg.pretrained_model_name_or_path!r}"
        self.prediction_type = check_prediction_type(scheduler.config.prediction_type, model)
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.alphas: Float[Tensor, "T"] = scheduler.alphas_cumprod.to(self.device)
        self.grad_clip_val: Optional[float] = None
        self.set_min_max_steps(C(self.cfg.min_step_percent, 0, 0), C(self.cfg.max_step_percent, 0, 0))
        self.start_override: Optional[int] = None  # a start timestep set at run time (start_schedule_at)
        self.sampler = self._sampler()
        self.index = 0
        self.global_step = 0
        self.unet_evals = 0  # UNet evaluations (images through the UNet) of the last call
        self._warned_schedule_end = False
        self.source_prompt_utils = self._source_prompt_utils() if self.cfg.mode in ("bridge", "dds") else None
        self.corrective = self._corrective() if self.cfg.mode == "lmc" else None
        self.fixed_noise = FixedNoise(self.cfg.lmc_seed) if self.cfg.lmc_fixed_noise else None
        space = "pixel space" if self.pixel_space else "latent"
        threestudio.info(f"Loaded the diffusion model ({space}, {self.prediction_type} prediction, {self.resolution} px)")

    def _sampler(self) -> DreamSampler:
        """The decreasing schedule from max_step to min_step over trainer_max_steps, nothing carried yet."""
        timesteps = decreasing_timesteps(self.cfg.trainer_max_steps, self.min_step, self.max_step,
                                         self.cfg.timestep_schedule, self.cfg.steps_per_timestep)
        return DreamSampler(self.alphas.cpu(), timesteps, eta=self.cfg.eta)

    def start_schedule_at(self, max_step: int) -> None:
        """Start the schedule at timestep ``max_step`` instead of the configured one (a system's run-time rule,
        before the schedule's first step): the sampler's timesteps are rebuilt; random-t modes draw up to it."""
        self.start_override = self.max_step = int(max_step)
        self.sampler = self._sampler()

    def _corrective(self):
        k = load_corrective(self.cfg.lmc_checkpoint, device=self.device).eval().requires_grad_(False)
        if k.config["in_channels"] != self.unet.config.in_channels:
            raise ValueError(
                f"guidance.lmc_checkpoint={self.cfg.lmc_checkpoint!r} was trained on {k.config['in_channels']}-channel "
                f"samples, but guidance.pretrained_model_name_or_path={self.cfg.pretrained_model_name_or_path!r} "
                f"diffuses {self.unet.config.in_channels} channels: train a corrective for this model (scripts/train_lmc.py)"
            )
        return k

    def _source_prompt_utils(self):
        """Embeddings of y_src from a prompt processor configured like the system's (view-dependent too)."""
        pp = dict(self.cfg.prompt_processor)
        pp["prompt"] = source_prompt(pp.get("prompt", ""), self.cfg.source_prompt, self.cfg.source_suffix)
        pp.setdefault("pretrained_model_name_or_path", self.cfg.pretrained_model_name_or_path)
        threestudio.info(f"guidance source prompt y_src: {pp['prompt']!r}")
        processor = self.cfg.prompt_processor_type or (
            "deep-floyd-prompt-processor" if self.pixel_space else "stable-diffusion-prompt-processor"
        )
        if processor == "stable-diffusion-prompt-processor":  # threestudio's IF processor truncates instead
            self._check_fits_context(pp["prompt"], pp["pretrained_model_name_or_path"])
        return threestudio.find(processor)(pp)()

    @staticmethod
    def _check_fits_context(prompt: str, model: str) -> None:
        """y_src (with threestudio's longest view suffix) must fit the text encoder's context: the prompt
        processor pads without truncating, and a longer prompt fails inside the tokenizer."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer")
        n = len(tokenizer(f"{prompt}, overhead view").input_ids)
        if n > tokenizer.model_max_length:
            raise ValueError(
                f"guidance source prompt y_src {prompt!r} is {n} tokens with its view suffix, longer than the text "
                f"encoder's {tokenizer.model_max_length} ({model}): shorten guidance.source_suffix or set guidance.source_prompt"
            )

    @staticmethod
    def check_config(cfg: "DreamSamplerGuidance.Config") -> None:
        """The fields' values, checked before any model is loaded (also by the launcher, ``check_config.py``)."""
        if cfg.mode not in MODES:
            raise ValueError(f"guidance.mode={cfg.mode!r} is unknown; choose one of {MODES}")
        if cfg.mode == "lmc" and not cfg.lmc_checkpoint:
            raise ValueError("guidance.mode=lmc needs guidance.lmc_checkpoint: a corrective trained with scripts/train_lmc.py")
        if cfg.mode == "dds" and not (cfg.source_prompt or "").strip():
            raise ValueError("guidance.mode=dds needs guidance.source_prompt (a description of the source image)")
        if cfg.mode in ("bridge", "dds") and not cfg.prompt_processor:
            raise ValueError(f"guidance.mode={cfg.mode} needs guidance.prompt_processor (set it to ${{system.prompt_processor}})")
        lo, hi = C(cfg.min_step_percent, 0, 0), C(cfg.max_step_percent, 0, 0)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(
                f"guidance.min_step_percent ({lo}) must be smaller than guidance.max_step_percent ({hi}), both in [0, 1]"
            )
        if not 0.0 <= cfg.eta <= 1.0:
            raise ValueError(f"guidance.eta must lie in [0, 1], got {cfg.eta}")
        if cfg.timestep_schedule not in TIMESTEP_SCHEDULES:
            raise ValueError(
                f"guidance.timestep_schedule={cfg.timestep_schedule!r} is unknown; choose one of {TIMESTEP_SCHEDULES}"
            )
        if cfg.weighting_strategy not in distill.WEIGHTING_STRATEGIES:
            raise ValueError(
                f"guidance.weighting_strategy={cfg.weighting_strategy!r} is unknown; "
                f"choose one of {distill.WEIGHTING_STRATEGIES}"
            )
        if cfg.carry not in ("guided", "unconditional"):
            raise ValueError(f"guidance.carry={cfg.carry!r} must be 'guided' or 'unconditional'")
        if cfg.on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"guidance.on_nonfinite={cfg.on_nonfinite!r} must be 'raise' or 'skip'")
        if cfg.steps_per_timestep < 1 or cfg.trainer_max_steps < 1:
            raise ValueError(
                f"guidance.steps_per_timestep ({cfg.steps_per_timestep}) and guidance.trainer_max_steps "
                f"({cfg.trainer_max_steps}) must be >= 1; trainer_max_steps follows trainer.max_steps (minus "
                "system.warmup_steps for the degraded-view config), so check those"
            )
        if cfg.camera_bins < 0 or cfg.camera_bins and cfg.per_view_noise:
            raise ValueError(
                f"guidance.camera_bins={cfg.camera_bins} must be >= 0, and 0 when guidance.per_view_noise is set "
                "(noise memories are keyed by the camera index or by the azimuth sector, not both)"
            )
        if cfg.schedule_start_step < 0:
            raise ValueError(f"guidance.schedule_start_step must be >= 0, got {cfg.schedule_start_step}")
        if not 1 <= cfg.inversion_n_steps <= 1000:
            raise ValueError(f"guidance.inversion_n_steps must lie in [1, 1000], got {cfg.inversion_n_steps}")
        if not 0.0 <= cfg.inversion_eta <= 1.0:
            raise ValueError(f"guidance.inversion_eta must lie in [0, 1], got {cfg.inversion_eta}")

    def set_min_max_steps(self, min_step_percent=0.02, max_step_percent=0.98):
        self.min_step = int(self.num_train_timesteps * min_step_percent)
        self.max_step = int(self.num_train_timesteps * max_step_percent)

    # ------------------------------------------------------------ model calls
    @without_autocast
    def forward_unet(self, latents, t, encoder_hidden_states):
        """eps(z_t, t, c) whatever the model predicts (epsilon, or v for SD 2.x at 768: ``process.to_epsilon``)."""
        input_dtype = latents.dtype
        self.unet_evals += latents.shape[0]  # one evaluation per image the UNet sees (CFG's 2, Perp-Neg's 4)
        out = self.unet(
            latents.to(self.weights_dtype),
            t.to(self.weights_dtype),
            encoder_hidden_states=encoder_hidden_states.to(self.weights_dtype),
        ).sample.to(input_dtype)
        return to_epsilon(out, latents, self._alpha(t.clamp(min=0), latents), self.prediction_type)

    @without_autocast
    def encode_images(self, imgs: Float[Tensor, "B 3 H W"], sample: bool = True) -> Float[Tensor, "B C h w"]:
        """The diffusion model's sample of images in [0, 1]: VAE latents (``sample=False``: the posterior mean),
        or the pixels in [-1, 1] (IF)."""
        if self.pixel_space:
            return imgs * 2.0 - 1.0
        input_dtype = imgs.dtype
        posterior = self.vae.encode((imgs * 2.0 - 1.0).to(self.weights_dtype)).latent_dist
        # posterior.sample() with its noise drawn in float32: the same draw whatever the weights' dtype
        mean, std = posterior.mean.float(), posterior.std.float()
        if not sample:
            return (mean * self.vae.config.scaling_factor).to(input_dtype)
        # torch.randn of the shape, as diffusers draws it: randn_like would keep a channels-last layout
        # (a permuted BHWC render's) and fill it in memory order, another noise for the same seed
        noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)
        return ((mean + std * noise) * self.vae.config.scaling_factor).to(input_dtype)

    @without_autocast
    def decode_latents(self, latents: Float[Tensor, "B C h w"]) -> Float[Tensor, "B 3 H W"]:
        """Images in [0, 1] of samples: decoded by the VAE, or the pixels themselves (IF)."""
        if self.pixel_space:
            return (latents * 0.5 + 0.5).clamp(0, 1)
        input_dtype = latents.dtype
        image = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.weights_dtype)).sample
        return (image * 0.5 + 0.5).clamp(0, 1).to(input_dtype)

    @torch.no_grad()
    def predict_noise(self, z_t, t, prompt_utils, elevation, azimuth, camera_distances, scale=None):
        """(CFG noise prediction eps^ (eq. 6, or Perp-Neg when the prompt processor asks for it) with
        ``scale`` (default guidance_scale), the unconditional prediction eps(z_t, null))."""
        b = z_t.shape[0]
        scale = self.cfg.guidance_scale if scale is None else scale
        if prompt_utils.use_perp_neg:
            emb, neg_w = prompt_utils.get_text_embeddings_perp_neg(
                elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
            )
            eps = self.forward_unet(torch.cat([z_t] * 4), torch.cat([t] * 4), emb)
            return perp_neg_cfg(eps[:b], eps[b : 2 * b], eps[2 * b :], neg_w, scale), eps[b : 2 * b]
        emb = prompt_utils.get_text_embeddings(
            elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
        )
        eps_cond, eps_uncond = self.forward_unet(torch.cat([z_t] * 2), torch.cat([t] * 2), emb).chunk(2)
        return cfg(eps_uncond, eps_cond, scale), eps_uncond

    def one_step_estimates(self, rgb: Float[Tensor, "B 3 H W"], t: int, prompt_utils, elevation, azimuth,
                           camera_distances) -> Float[Tensor, "B 3 H W"]:
        """D(z0^_t) of renders in [0, 1], at their size: one CFG step at ``guidance_scale`` from fresh noise (torch's
        generator), as ``view_targets.one_step_estimates`` states it."""
        ts = torch.full((rgb.shape[0],), int(t), dtype=torch.long, device=self.device)
        eps = lambda z_t: self.predict_noise(z_t, ts, prompt_utils, elevation, azimuth, camera_distances)[0]
        return one_step_estimates(rgb.float(), float(self.alphas[int(t)]),
                                  lambda x: self.encode_images(x, sample=False).float(), eps,
                                  lambda z: self.decode_latents(z).float(), self.resolution)

    # ------------------------------------------------------------------ call
    @without_autocast
    def __call__(
        self,
        rgb: Float[Tensor, "B H W C"],
        prompt_utils,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
        rgb_as_latents: bool = False,
        guidance_eval: bool = False,
        **kwargs,
    ):
        if self.cfg.pixel_loss and rgb_as_latents:
            raise ValueError("guidance.pixel_loss needs RGB renders; it cannot be used with rgb_as_latents")
        if self.pixel_space and rgb_as_latents:
            raise ValueError(
                f"guidance.pretrained_model_name_or_path={self.cfg.pretrained_model_name_or_path!r} is a pixel-space "
                "model (DeepFloyd IF): it has no latents, so renders cannot be passed as latents (rgb_as_latents)"
            )
        batch_size = rgb.shape[0]
        self.unet_evals = 0
        rgb_BCHW = bchw(rgb).float()  # float16 renders (tinycudann's) too: the guidance's arithmetic is float32
        if rgb_as_latents:
            h = self.unet.config.sample_size
            latents = F.interpolate(rgb_BCHW, (h, h), mode="bilinear", align_corners=False)
        else:
            rgb_native = self._native(rgb_BCHW)  # also the pixel loss's render (RGB renders only)
            latents = self.encode_images(rgb_native)

        keys = self._noise_keys(kwargs.get("index"), azimuth)
        carried = self.cfg.mode == "dreamsampler"
        # threestudio's sdi-system also calls the guidance at validation (test_info): that call leaves no trace
        kept = self.sampler.state_dict() if carried and kwargs.get("test_info") else None
        with torch.no_grad():
            if carried:
                t = self.sampler.timesteps[self.index].to(self.device).expand(batch_size)
                z_t = self.sampler.add_noise(latents.detach(), self.index, key=keys)
                eps_tilde = self.sampler.noise_tilde(self.index, key=keys)
            elif self.cfg.mode == "sdi":  # one t for the batch (threestudio's draw for a batch of 1)
                t = torch.randint(self.min_step, self.max_step + 1, [1], dtype=torch.long, device=self.device)
                t = t.expand(batch_size)
                eps_tilde = None if self.cfg.enable_sdi else torch.randn_like(latents)  # enable_sdi=false: SDS's noise
                z_t = (self._sdi_invert(latents.detach(), t, prompt_utils, elevation, azimuth, camera_distances)
                       if self.cfg.enable_sdi else forward_noise(latents.detach(), eps_tilde, self._alpha(t, latents)))
            else:
                t = torch.randint(self.min_step, self.max_step + 1, [batch_size], dtype=torch.long, device=self.device)
                eps_tilde = torch.randn_like(latents)
                z_t = forward_noise(latents.detach(), eps_tilde, self._alpha(t, latents))
            grad, eps_target, eps_carry = self._gradient(
                latents, z_t, t, eps_tilde, prompt_utils, elevation, azimuth, camera_distances, kwargs
            )

        if not (torch.isfinite(eps_target).all() and torch.isfinite(grad).all()):
            return self._non_finite(latents, t)
        if carried:
            z0_hat = self.sampler.step(z_t, eps_target, self.index, key=keys, carry=eps_carry)
        else:
            z0_hat = tweedie(z_t, eps_target, self._alpha(t, latents))
        if self.grad_clip_val is not None:
            grad = grad.clamp(-self.grad_clip_val, self.grad_clip_val)

        loss = distill.surrogate_loss(latents, grad)
        if self.cfg.mode == "sdi":  # SDI's loss: 0.5 * mean((z - target)^2) / B, as threestudio's loss_sdi
            loss = loss / latents.numel()
        out = {
            "loss_sds": loss,
            "grad_norm": grad.norm(),
            "min_step": self.min_step,
            "max_step": self.max_step,
            "timestep": int(t[0]),
            "unet_evals": self.unet_evals,
        }
        if carried:  # RMS of the noise the next step is forward-noised with (1 for a standard normal)
            out["carried_rms"] = eps_carry.pow(2).mean().sqrt()
        if self.cfg.pixel_loss or self.cfg.return_target or guidance_eval:
            with torch.no_grad():
                target = self.decode_latents(z0_hat)
            if self.cfg.pixel_loss:
                out["loss_pixel"] = distill.pixel_loss(rgb_native, target)
            if self.cfg.return_target or guidance_eval:
                out["target_rgb"] = bhwc(target)
        if guidance_eval:
            out["eval"] = self._guidance_eval(z_t, z0_hat, t, elevation, azimuth, camera_distances)
        if kwargs.get("test_info"):  # the images threestudio's sdi-system shows at each validation view
            with torch.no_grad():
                a = self._alpha(t, latents)
                noise = (z_t - a.sqrt() * latents) / (1 - a).sqrt()
                size = tuple(rgb.shape[1:3])  # at the render's size, which the system compares them with
                first = lambda z: bhwc(F.interpolate(self.decode_latents(z[:1]), size, mode="bilinear", align_corners=False))[0]
                out.update(target=first(z0_hat), target_latent=z0_hat, noisy_img=first(z_t), noise_img=first(noise))
            if kept is not None:
                self.sampler.load_state_dict(kept)
        return out

    def _noise_keys(self, index, azimuth):
        """Which noise memory each sample carries: its camera index (``per_view_noise``), its azimuth sector
        (``camera_bins``), or one memory shared by the batch (None)."""
        if self.cfg.per_view_noise:
            return index.view(-1) if isinstance(index, Tensor) else index
        if self.cfg.camera_bins:
            return azimuth_bin(azimuth.detach().cpu(), self.cfg.camera_bins)
        return None

    def _native(self, img: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 R R"]:
        """``img`` resized to the model's native resolution (as threestudio's guidance does for 512)."""
        r = self.resolution
        return img if img.shape[-2:] == (r, r) else F.interpolate(img, (r, r), mode="bilinear", align_corners=False)

    def _alpha(self, t, like):
        return self.alphas[t].view(-1, 1, 1, 1).to(like)

    def _gradient(self, latents, z_t, t, eps_tilde, prompt_utils, elevation, azimuth, camera_distances, batch):
        """(gradient on the latent, the eps whose Tweedie estimate is the target, the eps carried to the next
        step: ``guidance.carry``): the core's mode functions."""
        mode = self.cfg.mode
        if mode == "bridge" and self.global_step < self.cfg.bridge_start_step:
            mode = "sds"  # the bridge paper's stage 1
        a = self._alpha(t, latents)
        w = distill.weighting(self.cfg.weighting_strategy, a)
        scale = self.cfg.guidance_scale
        if mode in ("sds", "dreamsampler"):
            eps_hat, eps_uncond = self.predict_noise(z_t, t, prompt_utils, elevation, azimuth, camera_distances)
            return distill.sds_gradient(eps_hat, eps_tilde, w), eps_hat, eps_uncond if self.cfg.carry == "unconditional" else eps_hat
        if mode == "sdi":
            eps_hat, _ = self.predict_noise(z_t, t, prompt_utils, elevation, azimuth, camera_distances)
            return carrying_target((distill.sdi_gradient(latents.detach(), z_t, eps_hat, a), eps_hat))
        vd = self.cfg.view_dependent_prompting
        b = z_t.shape[0]
        tgt, null = prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances, vd).chunk(2)
        if mode == "lmc":
            z_t_fixed = None
            if self.fixed_noise is not None:
                z_t_fixed = forward_noise(latents.detach(), self.fixed_noise(latents.shape, latents.device, latents.dtype), a)
            return carrying_target(distill.lmc_distillation(
                self.forward_unet, self.corrective, latents, z_t, t, a, tgt, null, scale, w,
                manifold_weight=self.cfg.lmc_manifold_weight, z_t_fixed=z_t_fixed,
            ))
        src = self.source_prompt_utils.get_text_embeddings(elevation, azimuth, camera_distances, vd)[:b]
        if mode == "bridge":
            return carrying_target(distill.bridge_distillation(self.forward_unet, z_t, t, tgt, src, self.cfg.bridge_scale, w))
        # dds: the source image noised with the same t and noise
        if batch.get("source_rgb") is None:
            raise ValueError("guidance.mode=dds needs the source image: pass source_rgb [B, H, W, 3] in the batch")
        z_src_t = forward_noise(self.encode_images(self._native(bchw(batch["source_rgb"]))), eps_tilde, a)
        return carrying_target(distill.dds_distillation(self.forward_unet, z_t, z_src_t, t, tgt, src, scale, w))

    def _sdi_invert(self, z0, t, prompt_utils, elevation, azimuth, camera_distances):
        """SDI's z_t: the render's latent DDIM-inverted to t + delta with the inversion's CFG scale (the
        core's :func:`ddim_invert_noise`); delta ~ U[0, T / inversion_n_steps) from Python's ``random``, the
        inversion's noise from torch's generator, drawn in threestudio's order."""
        cfg, sched = self.cfg, self.scheduler.config
        delta = int(random.random() * self.num_train_timesteps // cfg.inversion_n_steps)
        path = inversion_timesteps(int(t[0]), cfg.inversion_n_steps, self.num_train_timesteps, delta,
                                   sched.get("timestep_spacing", "leading"), sched.get("steps_offset", 0))
        initial_alpha = 1.0 if sched.get("set_alpha_to_one", True) else float(self.alphas[0])

        def eps_fn(z, s):
            scale = cfg.inversion_guidance_scale
            return self.predict_noise(z, torch.full_like(t, s), prompt_utils, elevation, azimuth, camera_distances, scale)[0]

        z_t, _ = ddim_invert_noise(eps_fn, z0, path, self.alphas, initial_alpha, cfg.inversion_eta)
        return z_t

    def _non_finite(self, latents, t):
        msg = f"dreamsampler-guidance: non-finite noise prediction or gradient at timestep {int(t[0])}"
        if self.cfg.on_nonfinite == "raise":
            raise FloatingPointError(msg + " (set guidance.on_nonfinite=skip to skip such steps)")
        threestudio.warn(msg + "; skipping this step")
        zero = (latents * 0.0).sum()
        return {"loss_sds": zero, "grad_norm": zero.detach(), "min_step": self.min_step,
                "max_step": self.max_step, "timestep": int(t[0]), "unet_evals": self.unet_evals}

    @torch.no_grad()
    def _guidance_eval(self, z_t, z0_hat, t, elevation, azimuth, camera_distances):
        bs = z_t.shape[0] if self.cfg.max_items_eval <= 0 else min(self.cfg.max_items_eval, z_t.shape[0])
        texts = [
            f"n{float(tt) / self.num_train_timesteps:.02f}\ne{e.item():.01f}\na{a.item():.01f}\nc{c.item():.02f}"
            for tt, e, a, c in zip(t[:bs], elevation, azimuth, camera_distances)
        ]
        return {
            "bs": bs,
            "noise_levels": [float(tt) / self.num_train_timesteps for tt in t[:bs]],
            "imgs_noisy": bhwc(self.decode_latents(z_t[:bs])),
            "imgs_1orig": bhwc(self.decode_latents(z0_hat[:bs])),
            "texts": texts,
        }

    # ------------------------------------------------------- schedule & state
    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        if self.cfg.grad_clip is not None:
            self.grad_clip_val = C(self.cfg.grad_clip, epoch, global_step)
        if self.cfg.mode != "dreamsampler":
            self.set_min_max_steps(
                C(self.cfg.min_step_percent, epoch, global_step), C(self.cfg.max_step_percent, epoch, global_step)
            )
            if self.start_override is not None:
                self.max_step = self.start_override
        # the schedule's own step: counted from schedule_start_step (0 before it)
        self.global_step = step = max(global_step - self.cfg.schedule_start_step, 0)
        if self.cfg.mode == "sdi" and self.cfg.t_anneal:
            self.set_min_max_steps(*[self._annealed_step_percent(epoch, step)] * 2)
        self.index = index_for_step(step, self.cfg.steps_per_timestep, len(self.sampler))
        # test / validation after a full run come at step == trainer_max_steps: not past it
        past_schedule = self.cfg.mode == "dreamsampler" and step > self.cfg.trainer_max_steps
        if past_schedule and not self._warned_schedule_end:
            self._warned_schedule_end = True
            threestudio.warn(
                f"dreamsampler-guidance: step {global_step} is past the schedule (guidance.trainer_max_steps="
                f"{self.cfg.trainer_max_steps} steps from guidance.schedule_start_step={self.cfg.schedule_start_step}); "
                f"the timestep stays at {self.current_timestep}. "
                "Set system.guidance.trainer_max_steps=${trainer.max_steps} to spread the schedule over the run"
            )

    def _annealed_step_percent(self, epoch: int, step: int) -> float:
        """SDI's ``t_anneal``: linear from max_step_percent (a schedule's start value) at step 0 to
        min_step_percent at trainer_max_steps (threestudio's formula; held there after the run)."""
        hi = self.cfg.max_step_percent
        hi = hi if isinstance(hi, (int, float)) else hi[1]
        lo = C(self.cfg.min_step_percent, epoch, step)
        done = min(float(step) / self.cfg.trainer_max_steps, 1.0)
        return (hi - lo) * (1 - done) + lo

    @property
    def current_timestep(self) -> int:
        return int(self.sampler.timesteps[self.index])

    def state_dict(self) -> Dict[str, Any]:
        """Schedule position and carried noise, for the system's checkpoint."""
        state = {"index": self.index, "sampler": self.sampler.state_dict(), "start_override": self.start_override}
        if self.fixed_noise is not None:
            state["fixed_noise"] = self.fixed_noise.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.index = int(state["index"])
        if state.get("start_override") is not None:
            self.start_schedule_at(state["start_override"])
        self.sampler.load_state_dict(state["sampler"])
        if self.fixed_noise is not None and "fixed_noise" in state:
            self.fixed_noise.load_state_dict(state["fixed_noise"])
