"""``dreamsampler-degraded-nerf-system``: a NeRF from degraded views y = A(x) and a caption c_y
(supplementary sec. 5.1, eq. 18-19), with ``dreamsampler-multiview-datamodule``.

- Warm-up (``warmup_steps``): data consistency only, l_DC 0.5 ||y - A g||^2 (+ l_LPIPS LPIPS(A g, y)
  when LPIPS weights are on this machine), on data views. A warm-up as long as the run is a
  data-consistency-only reconstruction: no diffusion model is loaded.
- At the warm-up's end (``start_from_residual``): the schedule's start is raised by what the warm-up's NeRF
  leaves of the data views unexplained (``dreamsampler.inverse.prior_settings.start_with_residual``): views that
  are not one object (a multi-view generator's) start the prior higher; views a NeRF fits keep the start.
- ``prior: eq18`` (default): then eq. 18 with gamma = abar_t of the guidance's current timestep, plus pixel
  distillation (eq. 19): ``(1 - gamma) l_SDS loss_sds + gamma l_DC 0.5 ||y - A g||^2 + l_pixel ||g - D(z0^)||^2``;
  novel views (no measurement) get the distillation terms only. The guidance's decreasing schedule runs over the
  steps after the warm-up, with carried noise per camera (``guidance.per_view_noise``).
- ``prior: consistent-targets``: at the warm-up's end each data view's render is taken one reverse step of
  the prior at the schedule's start and made consistent with its y (``dreamsampler.inverse.view_targets``;
  saved as ``<trial>/save/it<step>-targets/<i>.png``: render | D(z0^) | target | y, and ``view-targets.json``),
  and the steps after it fit the data views to these targets, l_DC 0.5 ||target - g||^2: 16 images through the
  model, instead of eq. 18's loop render -> target -> render. ``target_rounds`` K > 1 remakes the targets from
  the current renders K times, evenly over the steps after the warm-up, each at the reverse schedule's timestep
  of its step. Data views only (``data.novel_view_prob: 0``).
- threestudio's sparsity / opacity / z-variance (HiFA) / orientation regularizers, weighted by ``system.loss``.
- Evaluation: validation and test render the data views; with clean ground truth, PSNR / SSIM (LPIPS
  when available) of renders and of the degraded inputs (the baseline) are logged and written to
  ``<trial>/save/metrics.json`` (test) and ``it<step>-val/metrics.json`` (the residual rule's start:
  ``save/prior-start.json``); the test also scores the
  held-out views (``data.heldout_root``: cameras never trained on, under ``heldout`` in metrics.json) and
  renders a 360-degree orbit video.
The math (A, the eq. 18 weights, the data term, metrics) is in ``dreamsampler/``.
"""
import os
from dataclasses import dataclass, field

import threestudio
import torch
import torch.nn.functional as F
from threestudio.systems.base import BaseLift3DSystem
from threestudio.utils.ops import binary_cross_entropy, dot
from threestudio.utils.typing import *

from dreamsampler.diffusion.schedules import gamma_schedule
from dreamsampler.image_io import bchw, bhwc
from dreamsampler.inverse.data_consistency import data_consistency, eq18_weights
from dreamsampler.inverse.operators import build_operator
from dreamsampler.inverse.prior_settings import consistent_with, residual_latent_error, start_with_residual
from dreamsampler.metrics import image_metrics, load_lpips

from .text_to_nerf import DreamSamplerNeRF


@threestudio.register("dreamsampler-degraded-nerf-system")
class DreamSamplerDegradedNeRF(DreamSamplerNeRF):
    @dataclass
    class Config(DreamSamplerNeRF.Config):
        operator: dict = field(default_factory=dict)  # ${data.operator}
        warmup_steps: int = 1000
        start_from_residual: bool = True  # raise the schedule's start by the warm-up's residual (module docstring)
        prior: str = "eq18"  # eq18 | consistent-targets (module docstring)
        target_rounds: int = 1  # consistent-targets: how many times the targets are made (module docstring)

    cfg: Config
    RUN_SHAPING = DreamSamplerNeRF.RUN_SHAPING + ("warmup_steps", "start_from_residual", "prior", "target_rounds")
    PRIORS = ("eq18", "consistent-targets")
    TARGETS_KEY = "dreamsampler_view_targets"  # the consistent targets in a checkpoint

    @staticmethod
    def check_config(cfg: "DreamSamplerDegradedNeRF.Config"):
        """The fields' values, checked before anything is loaded (also by the launcher); returns the operator A."""
        if cfg.warmup_steps < 0:
            raise ValueError(f"system.warmup_steps must be >= 0, got {cfg.warmup_steps}")
        if cfg.prior not in DreamSamplerDegradedNeRF.PRIORS:
            raise ValueError(f"system.prior must be one of {DreamSamplerDegradedNeRF.PRIORS}, got {cfg.prior!r}")
        if cfg.target_rounds < 1:
            raise ValueError(f"system.target_rounds must be >= 1, got {cfg.target_rounds}")
        try:
            return build_operator(dict(cfg.operator))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"system.operator={dict(cfg.operator)} is invalid (set it to ${{data.operator}}): {exc}") from exc

    @staticmethod
    def loads_guidance(cfg: "DreamSamplerDegradedNeRF.Config", max_steps: int) -> bool:
        """Whether a run of ``max_steps`` steps gets past the warm-up (else no diffusion model is loaded)."""
        return cfg.warmup_steps < max_steps

    def configure(self) -> None:
        super().configure()
        self.operator = self.check_config(self.cfg)
        self._lpips_fn, self._lpips_loaded = None, False
        self._use_lpips_loss = False
        self._eval_rows: List[Dict[str, Any]] = []
        self._heldout_rows: List[Dict[str, Any]] = []
        self._view_targets: Optional[Tensor] = None  # prior: consistent-targets, [N, 3, H, W] after the warm-up
        self._target_rounds: List[Dict[str, int]] = []  # what each round of targets cost (view-targets.json)

    def on_fit_start(self) -> None:
        if not self.loads_guidance(self.cfg, self.trainer.max_steps):
            threestudio.info("system.warmup_steps covers the whole run: data consistency only, no diffusion model")
            BaseLift3DSystem.on_fit_start(self)  # without DreamFusion's prompt processor and guidance
        else:
            super().on_fit_start()
            start = getattr(self.guidance.cfg, "schedule_start_step", None)
            if start is not None and start != self.cfg.warmup_steps:
                raise ValueError(
                    f"system.guidance.schedule_start_step ({start}) must equal system.warmup_steps "
                    f"({self.cfg.warmup_steps}): the reverse schedule starts after the warm-up "
                    "(set it to ${system.warmup_steps})"
                )
            self.check_datamodule(self.cfg, self.trainer.datamodule)
        self._use_lpips_loss = self.C(self.cfg.loss.get("lambda_lpips", 0.0)) > 0 and self._lpips() is not None

    @staticmethod
    def check_datamodule(cfg: "DreamSamplerDegradedNeRF.Config", datamodule) -> None:
        """At fit start, not at the warm-up's end: ``start_from_residual`` and ``prior: consistent-targets`` render
        the data views of dreamsampler-multiview-datamodule (its ``views``, set up by then); the targets are the
        data views' only."""
        uses = [name for name, on in (("start_from_residual=true", cfg.start_from_residual),
                                      ("prior=consistent-targets", cfg.prior == "consistent-targets")) if on]
        if uses and getattr(datamodule, "views", None) is None:
            raise ValueError(f"system.{uses[0]} renders the data views of dreamsampler-multiview-datamodule, which "
                             f"data_type={type(datamodule).__name__} lacks: set data_type=dreamsampler-multiview-datamodule "
                             f"or change system.{uses[0].split('=')[0]}")
        if cfg.prior == "consistent-targets" and datamodule.cfg.novel_view_prob > 0:
            raise ValueError("system.prior=consistent-targets fits the data views to their targets, and novel views have "
                             f"none: set data.novel_view_prob=0 (got {datamodule.cfg.novel_view_prob})")

    def _lpips(self):
        """LPIPS (loss and metric), loaded once; None with one warning when its weights are not on this machine."""
        if not self._lpips_loaded:
            self._lpips_fn, self._lpips_loaded = load_lpips(self.device), True
        return self._lpips_fn

    # ---------------------------------------------------------------- training
    def _data_view_renders(self) -> Tuple[Tensor, Tensor, List[Dict[str, Any]]]:
        """(renders, measurements y) ``[N, 3, H, W]`` of the data views as validation draws them (no random ray
        samples), and their batches on the device."""
        views = self.trainer.datamodule.views  # checked at fit start (check_datamodule)
        batches, renders = [], []
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for i in range(views.n_data):
                batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in views.data_view(i, i).items()}
                batches.append(batch)
                renders.append(bchw(self(batch)["comp_rgb"]).float())
        self.train(was_training)
        return torch.cat(renders), torch.cat([bchw(b["measurement"]).float() for b in batches]), batches

    def _start_from_residual(self) -> None:
        """The schedule's start from the data views' residual after the warm-up (module docstring), written
        to ``<trial>/save/prior-start.json``."""
        renders, measurements, _ = self._data_view_renders()
        encode = lambda x: torch.cat([self.guidance.encode_images(c, sample=False).float() for c in x.split(4)])
        error = residual_latent_error(encode, renders, measurements, self.operator, self.guidance.resolution)
        configured = self.guidance.max_step
        start = start_with_residual(self.guidance.alphas.cpu(), configured, error)
        self.guidance.start_schedule_at(start)
        path = self.save_json("prior-start.json", {"step": self.true_global_step, "residual_error": error,
                                                   "configured_start": configured, "start_timestep": start})
        threestudio.info(f"warm-up residual (relative latent error) {error:.3f}: the schedule starts at t={start} "
                         f"(configured {configured}) -> {path}")

    def _makes_targets(self) -> bool:
        """Whether this step makes the consistent targets: the warm-up's end, then every 1 / ``target_rounds`` of
        the steps after it."""
        after, rounds = self.true_global_step - self.cfg.warmup_steps, self.cfg.target_rounds
        length = self.trainer.max_steps - self.cfg.warmup_steps
        return self.cfg.prior == "consistent-targets" and after in {k * length // rounds for k in range(rounds)}

    def _make_view_targets(self) -> None:
        """``prior: consistent-targets``: each data view's render one reverse step of the prior at the schedule's
        timestep of this step (its start at the warm-up's end), made consistent with its y (module docstring);
        saved as ``it<step>-targets/<i>.png`` and ``view-targets.json``."""
        renders, measurements, batches = self._data_view_renders()
        t, prompt_utils = self.guidance.current_timestep, self.prompt_processor()
        self.guidance.unet_evals = 0
        estimates = torch.cat([
            self.guidance.one_step_estimates(r[None], t, prompt_utils, b["elevation"], b["azimuth"], b["camera_distances"])
            for r, b in zip(renders, batches)])
        self._view_targets = consistent_with(measurements, self.operator, estimates)
        size = renders.shape[-2:]
        up = lambda y: y if y.shape[-2:] == size else F.interpolate(y, size, mode="nearest")
        folder = f"it{self.true_global_step}-targets"
        for i, images in enumerate(zip(renders, estimates, self._view_targets, up(measurements))):
            self.save_image_grid(f"{folder}/{i}.png",
                                 [{"type": "rgb", "img": im, "kwargs": {"data_format": "CHW"}} for im in images],
                                 name="view_targets", step=self.true_global_step)
        self._target_rounds.append({"step": self.true_global_step, "timestep": t, "unet_evals": self.guidance.unet_evals})
        self.save_json("view-targets.json", {"views": len(renders), "rounds": self._target_rounds,
                                             "unet_evals": sum(r["unet_evals"] for r in self._target_rounds)})
        threestudio.info(f"consistent targets of the {len(renders)} data views at t={t} "
                         f"({self.guidance.unet_evals} UNet evaluations) -> {os.path.join(self.get_save_dir(), folder)}")

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if self._view_targets is not None:
            checkpoint[self.TARGETS_KEY] = {"targets": self._view_targets.cpu(), "rounds": self._target_rounds}
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.TARGETS_KEY in checkpoint:
            state = checkpoint[self.TARGETS_KEY]
            self._view_targets, self._target_rounds = state["targets"], list(state["rounds"])

    def training_step(self, batch, batch_idx):
        if self.cfg.start_from_residual and self.true_global_step == self.cfg.warmup_steps:
            self._start_from_residual()
        if self._makes_targets():
            self._make_view_targets()
        out = self(batch)
        rgb = out["comp_rgb"]
        warmup = self.true_global_step < self.cfg.warmup_steps
        has_y = "measurement" in batch
        if warmup and not has_y:
            raise ValueError("novel views during the warm-up: set data.novel_view_start_step to system.warmup_steps")
        loss = 0.0
        if has_y:
            y = bchw(batch["measurement"])
            loss_dc = data_consistency(y, self.operator, bchw(rgb))
            self.log("train/loss_dc", loss_dc)
        if not warmup and self._view_targets is not None:  # prior: consistent-targets (data views only)
            target = self._view_targets[batch["data_index"].cpu()].to(rgb)
            loss_target = data_consistency(target, lambda x: x, bchw(rgb))
            self.log("train/loss_target", loss_target)
            loss = self.C(self.cfg.loss.lambda_dc) * loss_target
        elif warmup:
            loss = self.C(self.cfg.loss.lambda_dc) * loss_dc
            if self._use_lpips_loss:
                loss_lpips = self._lpips()(self.operator(bchw(rgb)), bchw(batch["measurement"])).mean()
                self.log("train/loss_lpips", loss_lpips)
                loss = loss + self.C(self.cfg.loss.lambda_lpips) * loss_lpips
        else:
            guidance_out = self.guidance(rgb, self.prompt_processor(), **batch, rgb_as_latents=False)
            gamma = float(gamma_schedule("alpha", self.guidance.alphas[guidance_out["timestep"]]))
            w_sds, w_dc = eq18_weights(gamma, self.C(self.cfg.loss.lambda_sds), self.C(self.cfg.loss.lambda_dc))
            loss = w_sds * guidance_out["loss_sds"]
            if has_y:
                loss = loss + w_dc * loss_dc
            if "loss_pixel" in guidance_out:
                loss = loss + self.C(self.cfg.loss.lambda_pixel) * guidance_out["loss_pixel"]
            for name in ("loss_sds", "loss_pixel", "grad_norm", "timestep", "carried_rms", "unet_evals"):
                if name in guidance_out:
                    self.log(f"train/{name}", guidance_out[name])
            self.log("train/gamma", gamma)
        loss = loss + self._regularizers(out)
        for name, value in self.cfg.loss.items():
            self.log(f"train_params/{name}", self.C(value))
        return {"loss": loss}

    def _regularizers(self, out: Dict[str, Any]) -> Tensor:
        """threestudio's NeRF regularizers (as in its DreamFusion / HiFA systems), weighted by system.loss."""
        loss, lam = 0.0, self.cfg.loss
        opacity = out["opacity"]
        if self.C(lam.get("lambda_orient", 0.0)) > 0:
            if "normal" not in out:
                raise ValueError("system.loss.lambda_orient > 0 needs normals: set system.geometry.normal_type")
            orient = (out["weights"].detach() * dot(out["normal"], out["t_dirs"]).clamp_min(0.0) ** 2).sum()
            orient = orient / (opacity > 0).sum().clamp_min(1)
            self.log("train/loss_orient", orient)
            loss = loss + self.C(lam.lambda_orient) * orient
        sparsity = (opacity**2 + 0.01).sqrt().mean()
        clamped = opacity.clamp(1.0e-3, 1.0 - 1.0e-3)
        opaque = binary_cross_entropy(clamped, clamped)
        self.log("train/loss_sparsity", sparsity)
        self.log("train/loss_opaque", opaque)
        loss = loss + self.C(lam.get("lambda_sparsity", 0.0)) * sparsity + self.C(lam.get("lambda_opaque", 0.0)) * opaque
        if self.C(lam.get("lambda_z_variance", 0.0)) > 0 and (opacity > 0.5).any():
            z_var = out["z_variance"][opacity > 0.5].mean()
            self.log("train/loss_z_variance", z_var)
            loss = loss + self.C(lam.lambda_z_variance) * z_var
        return loss

    # -------------------------------------------------------------- evaluation
    def _evaluate_view(self, batch, rgb: Tensor, folder: str) -> None:
        """Save render | A(render) | y | ground truth, and the metrics row of a data view."""
        y = batch["measurement"]
        imgs = [rgb, bhwc(self.operator(bchw(rgb))).clamp(0, 1), y]
        row = {"view": int(batch["data_index"][0])}
        if "gt_rgb" in batch:
            gt = batch["gt_rgb"]
            imgs.append(gt)
            lpips = self._lpips()
            y_up = y if y.shape == gt.shape else bhwc(
                F.interpolate(bchw(y), gt.shape[1:3], mode="bicubic", align_corners=False).clamp(0, 1)
            )
            for prefix, img in (("render", rgb), ("input", y_up)):
                for k, v in image_metrics(bchw(img.clamp(0, 1)), bchw(gt), lpips).items():
                    row[f"{prefix}_{k}"] = float(v[0])
        self._eval_rows.append(row)
        self.save_image_grid(
            f"{folder}/{row['view']}.png",
            [{"type": "rgb", "img": im[0], "kwargs": {"data_format": "HWC"}} for im in imgs],
            name=folder,
            step=self.true_global_step,
        )

    def _evaluate_heldout(self, batch, rgb: Tensor, folder: str) -> None:
        """Save render | ground truth of a held-out view and its metrics row."""
        gt = batch["gt_rgb"]
        row = {"view": int(batch["heldout_index"][0])}
        row.update({k: float(v[0]) for k, v in image_metrics(bchw(rgb.clamp(0, 1)), bchw(gt), self._lpips()).items()})
        self._heldout_rows.append(row)
        self.save_image_grid(
            f"{folder}/heldout-{row['view']}.png",
            [{"type": "rgb", "img": im[0], "kwargs": {"data_format": "HWC"}} for im in (rgb, gt)],
            name=folder,
            step=self.true_global_step,
        )

    def _write_metrics(self, stage: str, filename: str) -> None:
        rows, self._eval_rows = self._eval_rows, []
        heldout, self._heldout_rows = self._heldout_rows, []
        if not rows or len(rows[0]) == 1:  # no ground truth
            return
        mean = lambda rs: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0] if k != "view"}
        data_mean = mean(rows)
        for k, v in data_mean.items():
            self.log(f"{stage}/{k}", v)
        summary = {
            "step": self.true_global_step,
            "n_views": len(rows),
            "renders": {k[len("render_"):]: v for k, v in data_mean.items() if k.startswith("render_")},
            "degraded_input": {k[len("input_"):]: v for k, v in data_mean.items() if k.startswith("input_")},
            "per_view": rows,
        }
        if heldout:
            heldout_mean = mean(heldout)
            summary["heldout"] = {"n_views": len(heldout), **heldout_mean, "per_view": heldout}
            for k, v in heldout_mean.items():
                self.log(f"{stage}/heldout_{k}", v)
        path = self.save_json(filename, summary)
        threestudio.info(f"{stage} metrics: renders {summary['renders']}, degraded input {summary['degraded_input']} -> {path}")

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        self._evaluate_view(batch, out["comp_rgb"], f"it{self.true_global_step}-val")

    def on_validation_epoch_end(self):
        self._write_metrics("val", f"it{self.true_global_step}-val/metrics.json")

    def test_step(self, batch, batch_idx):
        out = self(batch)
        if int(batch["data_index"][0]) >= 0:
            self._evaluate_view(batch, out["comp_rgb"], f"it{self.true_global_step}-views")
            return
        if "heldout_index" in batch:
            self._evaluate_heldout(batch, out["comp_rgb"], f"it{self.true_global_step}-views")
            return
        self.save_image_grid(
            f"it{self.true_global_step}-test/{batch['index'][0]}.png",
            [
                {"type": "rgb", "img": out["comp_rgb"][0], "kwargs": {"data_format": "HWC"}},
                {"type": "grayscale", "img": out["opacity"][0, :, :, 0], "kwargs": {"cmap": None, "data_range": (0, 1)}},
            ],
            name="test_step",
            step=self.true_global_step,
        )

    def on_test_epoch_end(self):
        self._write_metrics("test", "metrics.json")
        if os.path.isdir(os.path.join(self.get_save_dir(), f"it{self.true_global_step}-test")):
            super().on_test_epoch_end()  # the orbit video
