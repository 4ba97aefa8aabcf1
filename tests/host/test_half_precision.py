"""The half-precision code paths a GPU run takes, run on the CPU: the diffusion model's weights in float16
(``half_precision_weights: true``, threestudio's default on CUDA; forced here by
``DREAMSAMPLER_HALF_ON_CPU=float16``), renders arriving in float16 (tinycudann computes in float16;
threestudio casts its networks' outputs to float32, so a float16 render is the harder case) and steps under
autocast to float16 (threestudio's ``precision: 16-mixed``: Lightning's own 16-mixed plugin, on the CPU).
Each half-precision run is compared with the float32 run from the same seeds.

Dtype: float16 everywhere, the GPU's. This torch's CPU kernels run every op of the tiny pipelines in
float16 (convolutions, group norm, attention, interpolation, the VAE both ways), which
:func:`test_the_cpu_runs_the_tiny_pipelines_in_float16` checks, so bfloat16 is not needed.

Tolerances, relative to the float32 run (measured here: the worst case seen, then the bound asserted):
- the guidance (:data:`GUIDANCE_TOL`), every mode on the SD-shaped (64 px) and the IF-shaped (16 px) tiny
  pipelines, two steps, each render of :data:`RENDERS`: ``loss_sds`` and ``loss_pixel`` |a - b| / |b|
  8.7e-3 (bound 3e-2); the gradient on the render ||a - b|| / ||b|| 5.0e-2 (bound 0.15; the bridge's
  eps(y_tgt) - eps(y_src) loses most to float16); the carried noise 1.9e-2 (bound 6e-2);
- the systems (:data:`SYSTEM_TOL`), each shipped config's system on the tiny pipeline in Lightning's loop:
  the logged losses, the guidance's gradient norm and the carried noise's RMS, step by step, 1.0e-2 (bound
  3e-2); the carried noise 4.9e-2 (bound 0.1); the 2D system's latent after its 4 steps 2.2e-2 (bound 0.1);
  the gradient on the render by its direction, cosine >= 0.918 (bound 0.85): its size moves by up to 41% on
  text-to-NeRF, as much (30%) with float32 weights under autocast alone (the render's float16 rounding moves
  the tiny random VAE's Jacobian at CFG 100); every parameter's gradient finite.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
from contextlib import nullcontext

import pytest
import torch

from dreamsampler.distill.modes import MODES

from ..conftest import REPO

pytestmark = pytest.mark.threestudio

HALF = torch.float16
HALF_ENV = "DREAMSAMPLER_HALF_ON_CPU"
PROMPT = "a red circle"

# (render dtype, under autocast): the ways a render reaches the guidance on a GPU
RENDERS = {
    "fp32": (torch.float32, False),  # a float32 render, precision 32
    "fp16": (HALF, False),  # tinycudann's float16 output, precision 32
    "fp32-autocast": (torch.float32, True),  # 16-mixed with a float32 render
    "fp16-autocast": (HALF, True),  # 16-mixed with tinycudann
}
GUIDANCE_TOL = {"loss": 3e-2, "grad": 1.5e-1, "carried": 6e-2}
SYSTEM_TOL = {"loss": 3e-2, "carried": 1e-1, "render_cos": 0.85, "latent": 1e-1}


def rel(a, b) -> float:
    """||a - b|| / ||b|| (scalars: |a - b| / |b|), in float64."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def autocast(enabled: bool):
    return torch.autocast("cpu", dtype=HALF) if enabled else nullcontext()


@pytest.fixture
def weights(monkeypatch):
    """``weights("float16")`` / ``weights("float32")``: the dtype the next guidance or system loads its model in."""

    def use(dtype: str):
        if dtype == "float32":
            monkeypatch.delenv(HALF_ENV, raising=False)
        else:
            monkeypatch.setenv(HALF_ENV, dtype)

    return use


@pytest.fixture(scope="module")
def tiny_if16(tmp_path_factory):
    """The tiny IF-shaped pipeline at a native 16 px (its float16 UNet on a CPU is slow at 64)."""
    from dreamsampler.testing.tiny_if_pipeline import build_tiny_if_pipeline

    return build_tiny_if_pipeline(tmp_path_factory.mktemp("tiny-if16"), sample_size=16)


# ---------------------------------------------------------------- the CPU's float16
def test_the_cpu_runs_the_tiny_pipelines_in_float16(ts, tiny_sd64, tiny_if16, weights):
    """The premise of this file: with DREAMSAMPLER_HALF_ON_CPU=float16 the guidance loads float16 weights on
    the CPU and this torch's CPU kernels run the UNet and the VAE in float16 (no bfloat16 fallback needed)."""
    weights("float16")
    for model in (tiny_sd64, tiny_if16):
        g = ts.find("dreamsampler-guidance")({"pretrained_model_name_or_path": model, "half_precision_weights": True})
        assert g.weights_dtype == HALF and next(g.unet.parameters()).dtype == HALF
        z = torch.randn(2, g.unet.config.in_channels, 8, 8)
        with torch.no_grad():
            emb = torch.randn(2, 77, g.unet.config.cross_attention_dim).to(HALF)
            out = g.unet(z.to(HALF), torch.tensor([500, 500]), encoder_hidden_states=emb).sample
        assert out.dtype == HALF and torch.isfinite(out).all()
        if g.vae is not None:
            with torch.no_grad():
                img = g.vae.decode(g.vae.encode(torch.rand(1, 3, 16, 16, dtype=HALF)).latent_dist.mean).sample
            assert img.dtype == HALF and torch.isfinite(img).all()
    weights("float32")
    g = ts.find("dreamsampler-guidance")({"pretrained_model_name_or_path": tiny_sd64, "half_precision_weights": True})
    assert g.weights_dtype == torch.float32  # the default on a CPU


def test_a_bad_half_dtype_names_the_variable(ts, tiny_sd64, weights):
    weights("float8")
    with pytest.raises(ValueError, match="DREAMSAMPLER_HALF_ON_CPU='float8' must be one of"):
        ts.find("dreamsampler-guidance")({"pretrained_model_name_or_path": tiny_sd64})


# ------------------------------------------------------------------- the guidance
def mode_config(mode, model, tmp_path_factory):
    """The guidance fields a mode needs beyond the defaults (a source prompt, a corrective)."""
    from dreamsampler.distill.lmc import CorrectiveUNet, save_corrective

    pp = {"pretrained_model_name_or_path": model, "prompt": PROMPT, "spawn": False}
    if mode in ("bridge", "dds"):
        return {"prompt_processor": pp, "source_prompt": "a blue circle"}
    if mode == "lmc":
        from diffusers import UNet2DConditionModel

        channels = UNet2DConditionModel.load_config(model, subfolder="unet")["in_channels"]
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("lmc") / "k.safetensors"
        return {"lmc_checkpoint": str(save_corrective(CorrectiveUNet(in_channels=channels, base_channels=8, depth=2),
                                                      path))}
    if mode == "sdi":
        return {"inversion_n_steps": 2}  # two inversion steps: the same code as ten, a fifth of the UNet calls
    return {}


def guidance_steps(g, prompt_utils, render, steps=2, source=None):
    """Per step of ``g`` on a fixed 32x32 render: (loss_sds, loss_pixel, d loss / d render, carried noise or None)."""
    dtype, under_autocast = RENDERS[render]
    cams = dict(elevation=torch.zeros(1), azimuth=torch.zeros(1), camera_distances=torch.full((1,), 2.0))
    out_steps = []
    for step in range(steps):
        rgb = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(step)).to(dtype).requires_grad_(True)
        extra = {} if source is None else {"source_rgb": source.to(dtype)}
        g.update_step(0, step)
        torch.manual_seed(10 + step)
        random.seed(10 + step)
        with autocast(under_autocast):
            out = g(rgb, prompt_utils, **cams, **extra)
            loss = out["loss_sds"] + out["loss_pixel"]
        loss.backward()
        assert rgb.grad.dtype == dtype, "the gradient reaches the render in the render's dtype"
        memory = g.sampler.state_dict()["memory"]
        carried = memory[None]["eps"] if g.cfg.mode == "dreamsampler" else None
        out_steps.append((out["loss_sds"].detach(), out["loss_pixel"].detach(), rgb.grad.float(), carried))
    return out_steps


def half_prompt_utils(prompt_utils):
    """A prompt processor's output with float16 embeddings, as a GPU run caches DeepFloyd IF's T5 prompts."""
    fields = {f.name: getattr(prompt_utils, f.name) for f in dataclasses.fields(prompt_utils)}
    return dataclasses.replace(prompt_utils, **{
        k: v.to(HALF) for k, v in fields.items() if isinstance(v, torch.Tensor) and v.is_floating_point()})


@pytest.mark.parametrize("family", ["sd", "if"])
@pytest.mark.parametrize("mode", MODES)
def test_guidance_in_half_precision_matches_float32(ts, tiny_sd64, tiny_if16, tmp_path_factory, monkeypatch, weights,
                                                    family, mode):
    """Every mode, float16 weights, each way a render arrives (float32, float16, under autocast): the losses
    and the gradient on the render are float32 and finite and within GUIDANCE_TOL of the float32 run, as is
    the noise DreamSampler carries; the gradient reaches the render in its own dtype."""
    from .test_guidance import make_prompt_utils

    model = tiny_sd64 if family == "sd" else tiny_if16
    processor = "stable-diffusion-prompt-processor" if family == "sd" else "deep-floyd-prompt-processor"
    monkeypatch.chdir(tmp_path_factory.mktemp("half-guidance"))
    prompt_utils = make_prompt_utils(ts, model, tmp_path_factory, PROMPT, processor)
    cfg = {"pretrained_model_name_or_path": model, "guidance_scale": 7.5, "trainer_max_steps": 4, "mode": mode,
           "pixel_loss": True, "half_precision_weights": True, **mode_config(mode, model, tmp_path_factory)}
    source = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(7)) if mode == "dds" else None

    weights("float32")
    reference = guidance_steps(ts.find("dreamsampler-guidance")(cfg), prompt_utils, "fp32", source=source)
    weights("float16")
    g = ts.find("dreamsampler-guidance")(cfg)
    assert g.weights_dtype == HALF and next(g.unet.parameters()).dtype == HALF
    start = g.state_dict()
    for render in RENDERS:
        g.load_state_dict(start)
        pu = half_prompt_utils(prompt_utils) if family == "if" and RENDERS[render][0] == HALF else prompt_utils
        for step, (ours, ref) in enumerate(zip(guidance_steps(g, pu, render, source=source), reference)):
            where = f"{family} {mode} render {render} step {step}"
            (loss_sds, loss_pixel, grad, carried), (ref_sds, ref_pixel, ref_grad, ref_carried) = ours, ref
            assert loss_sds.dtype == loss_pixel.dtype == torch.float32, where
            assert all(torch.isfinite(x).all() for x in (loss_sds, loss_pixel, grad)), where
            assert rel(loss_sds, ref_sds) < GUIDANCE_TOL["loss"], (where, float(loss_sds), float(ref_sds))
            assert rel(loss_pixel, ref_pixel) < GUIDANCE_TOL["loss"], (where, float(loss_pixel), float(ref_pixel))
            assert rel(grad, ref_grad) < GUIDANCE_TOL["grad"], (where, rel(grad, ref_grad))
            if carried is not None:
                assert carried.dtype == torch.float32 and torch.isfinite(carried).all(), where
                assert rel(carried, ref_carried) < GUIDANCE_TOL["carried"], (where, rel(carried, ref_carried))


# -------------------------------------------------------------------- the systems
NERF = [  # a small hash grid and few samples, the optimizer's rate 0 (every step sees the same field)
    "system.geometry.pos_encoding_config.n_levels=4", "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.geometry.pos_encoding_config.start_level=2", "system.renderer.num_samples_per_ray=16",
    "system.optimizer.args.lr=0.0",
]
SVG = ["system.canvas_size=64", "system.num_paths=8", "system.prompt_suffix=', icon'", "system.snapshot_every=100",
       "system.lr_points=1e-12", "system.lr_points_peak=1e-12", "system.lr_points_final=1e-12"]
IMAGE = ["system.image_size=64", "system.strip_frames=2"]
# (weights, trainer precision, render cast to float16) of the GPU runs compared with the float32 one
NERF_RUNS = {"16-mixed, fp16 render": ("float16", "16-mixed", True),  # the configs' precision, a float16 render
             "32, fp16 render": ("float16", "32", True)}
RUNS_2D = {"32": ("float16", "32", False),  # the configs' precision
           "16-mixed": ("float16", "16-mixed", False)}
SYSTEM_CONFIGS = {  # shipped config -> (its overrides for the tiny 64 px pipeline, steps, runs)
    "dreamsampler-text-to-nerf.yaml": (
        NERF + ["system.prompt_processor.prompt=a cube", "data.width=32", "data.height=32"], 3, NERF_RUNS),
    "dreamsampler-degraded-nerf.yaml": (NERF + [
        "data.dataroot=procedural", "data.procedural_size=16", "data.ring_views=4", "data.caption=a cube",
        "data.operator={type: blur, kernel_size: 5, sigma: 2.0}", "system.warmup_steps=1"], 3, NERF_RUNS),
    "dreamsampler-svg-deblur.yaml": (SVG, 2, RUNS_2D),
    "dreamsampler-svg-sr.yaml": (SVG, 2, RUNS_2D),
    "dreamsampler-svg-deblur-no-sds.yaml": (SVG, 2, RUNS_2D),
    "dreamsampler-text-to-image.yaml": (IMAGE, 4, RUNS_2D),
    "dreamsampler-edit.yaml": (IMAGE, 4, RUNS_2D),
    "dreamsampler-inpaint.yaml": (IMAGE, 4, RUNS_2D),
    "dreamsampler-restore.yaml": (IMAGE + ["system.operator=[{type: downsample, factor: 4}]"], 4, RUNS_2D),
}
COMPARED = ("train/loss", "train/grad_norm", "train/carried_rms")  # logged series compared (prefixes)


def test_every_shipped_config_has_a_half_precision_run():
    assert sorted(p.name for p in (REPO / "configs").glob("*.yaml")) == sorted(SYSTEM_CONFIGS)


def autocast_without_scaling():
    """Lightning's ``16-mixed`` forward (autocast to float16) on the CPU without its gradient scaler: every
    step is taken, so steps compare one for one with the float32 run (the scaler: see the 16-mixed test)."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    plugin = MixedPrecision("16-mixed", "cpu")
    plugin.scaler = None
    return plugin


class Probe:
    """What each step of a system gives, read around Lightning's loop: the logged values, the gradient on the
    render (NeRF, SVG), whether every parameter's gradient is finite, the guidance's carried noise; with
    ``cast_render`` the render reaches the system's losses in float16."""

    def __init__(self, system, cast_render: bool):
        import pytorch_lightning as pl

        self.rows, self.logged, self.render = [], {}, None
        system.log = lambda name, value, *a, **k: self.logged.setdefault(name, []).append(float(value))
        forward = system.forward

        def probed_forward(*args, **kwargs):
            out = forward(*args, **kwargs)
            render = out["comp_rgb"] if isinstance(out, dict) else out
            if torch.is_grad_enabled() and render.requires_grad:
                if cast_render:
                    render = render.to(HALF)
                    out = {**out, "comp_rgb": render} if isinstance(out, dict) else render
                render.retain_grad()
                self.render = render
            return out

        system.forward = probed_forward
        probe = self

        class Callback(pl.Callback):
            def on_before_optimizer_step(self, trainer, module, optimizer):
                grads = [p.grad for p in module.parameters() if p.grad is not None]
                scaler = getattr(trainer.precision_plugin, "scaler", None)
                guidance = getattr(module, "guidance", None)
                memory = guidance.sampler.state_dict()["memory"] if guidance is not None else {}
                carried = [m["eps"].flatten().float() for _, m in sorted(memory.items(), key=str)]
                render = probe.render
                probe.rows.append({
                    "finite": all(torch.isfinite(g).all() for g in grads),
                    "render_grad": None if render is None or render.grad is None else render.grad.float().clone(),
                    "carried": torch.cat(carried) if carried else None,
                    "scale": scaler.get_scale() if scaler is not None else 1.0,
                })
                probe.render = None

        self.callback = Callback()


def run_system(ts, config, out_dir, model, weights_dtype, precision, cast_render, plugin=None, steps=None,
               overrides=()):
    """``configs/<config>`` in this process on the CPU: threestudio's system and data module in a Lightning
    Trainer (no logger, no checkpoints, no validation); returns the probe and the system."""
    import pytorch_lightning as pl
    from omegaconf import OmegaConf
    from threestudio.utils.config import load_config

    config_overrides, default_steps, _ = SYSTEM_CONFIGS[config]
    steps = steps or default_steps
    if "guidance" in OmegaConf.load(REPO / "configs" / config).system:
        models = [f"system.{key}.pretrained_model_name_or_path={model}" for key in ("guidance", "prompt_processor")]
        models.append("system.prompt_processor.spawn=false")
    else:
        models = [f"system.pretrained_model_name_or_path={model}"]
    cfg = load_config(str(REPO / "configs" / config),
                      cli_args=[*models, f"trainer.max_steps={steps}", *config_overrides, *overrides,
                                f"exp_root_dir={out_dir}"])  # load_config makes the trial folder
    if weights_dtype == "float32":
        os.environ.pop(HALF_ENV, None)
    else:
        os.environ[HALF_ENV] = weights_dtype
    pl.seed_everything(0, verbose=False)
    dm = ts.find(cfg.data_type)(cfg.data)
    system = ts.find(cfg.system_type)(cfg.system, resumed=False)
    system.set_save_dir(str(out_dir))
    probe = Probe(system, cast_render)
    if plugin is None and precision == "16-mixed":
        plugin = autocast_without_scaling()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[probe.callback], plugins=[plugin] if plugin is not None else [],
    )
    trainer.fit(system, dm)
    return probe, system


def cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


@pytest.mark.parametrize("config", list(SYSTEM_CONFIGS))
def test_each_systems_half_precision_run_matches_float32(ts, tiny_sd64, tmp_path, monkeypatch, config):
    """Each shipped config's system on the tiny pipeline: the float32 run, then float16 weights under each
    precision a GPU run of it may use (NeRF: 16-mixed, and 32, with float16 renders; 2D and SVG: 32, and
    16-mixed). Every parameter's gradient finite; the logged losses, the guidance's gradient norm and the
    carried noise's RMS within SYSTEM_TOL["loss"] of the float32 run's, step by step; the carried noise
    within SYSTEM_TOL["carried"]; the gradient on the render pointing the same way (cosine); the 2D
    system's latent after its steps within SYSTEM_TOL["latent"]."""
    monkeypatch.chdir(tmp_path)  # the prompt processor's cache
    monkeypatch.setenv(HALF_ENV, "")  # set by run_system for each run, restored after the test
    reference, ref_system = run_system(ts, config, tmp_path / "fp32", tiny_sd64, "float32", "32", False)
    for label, (weights_dtype, precision, cast_render) in SYSTEM_CONFIGS[config][2].items():
        out_dir = tmp_path / label.replace(" ", "")
        probe, system = run_system(ts, config, out_dir, tiny_sd64, weights_dtype, precision, cast_render)
        loaded = system.guidance.weights_dtype if hasattr(system, "guidance") else system.model.dtype
        assert loaded == HALF, (config, label, loaded)
        assert len(probe.rows) == len(reference.rows), label
        for step, (ours, ref) in enumerate(zip(probe.rows, reference.rows)):
            where = f"{config} {label} step {step}"
            assert ours["finite"], f"{where}: a parameter's gradient is not finite"
            errors = {}
            if ref["render_grad"] is not None:
                assert torch.isfinite(ours["render_grad"]).all(), where
                errors["render_cos"] = cosine(ours["render_grad"], ref["render_grad"])
            if ref["carried"] is not None:
                assert torch.isfinite(ours["carried"]).all(), where
                errors["carried"] = rel(ours["carried"], ref["carried"])
            assert errors.get("render_cos", 1.0) > SYSTEM_TOL["render_cos"], (where, errors)
            assert errors.get("carried", 0.0) < SYSTEM_TOL["carried"], (where, errors)
        for name, values in reference.logged.items():
            if name.startswith(COMPARED):
                ours = probe.logged[name]
                assert len(ours) == len(values) and all(map(math.isfinite, ours)), (config, label, name, ours)
                worst = max(rel(a, b) for a, b in zip(ours, values))
                assert worst < SYSTEM_TOL["loss"], (config, label, name, ours, values)
        if hasattr(system, "psi"):  # the 2D system: where its steps led
            worst = rel(system.psi.detach(), ref_system.psi.detach())
            assert worst < SYSTEM_TOL["latent"], (config, label, worst)


def test_16_mixed_with_its_gradient_scaler_skips_only_the_first_steps(ts, tiny_sd64, tmp_path, monkeypatch):
    """The text-to-NeRF config under Lightning's real 16-mixed (autocast and GradScaler, starting at 2^16) with
    float16 weights: the first steps' scaled gradients overflow float16 and the scaler skips them, halving its
    scale, until the gradients fit; from then on steps are taken and the field changes. The overflow is in
    the NeRF's own float16 backward (its MLPs under autocast): float32 weights skip as many steps (measured:
    10 of 13 either way at CFG 100, the scale settling at 64)."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(HALF_ENV, "")
    config, steps = "dreamsampler-text-to-nerf.yaml", 13
    skipped = {}
    for weights_dtype in ("float16", "float32"):
        probe, system = run_system(ts, config, tmp_path / weights_dtype, tiny_sd64, weights_dtype, "16-mixed", False,
                                   plugin=MixedPrecision("16-mixed", "cpu"), steps=steps,
                                   overrides=["system.optimizer.args.lr=0.001"])
        taken = [bool(r["finite"]) for r in probe.rows]
        scales = [r["scale"] for r in probe.rows]
        assert scales[0] == 2.0 ** 16 and all(  # halved at each skipped step, kept otherwise
            scales[i] == scales[i - 1] / (1 if taken[i - 1] else 2) for i in range(1, steps)), (taken, scales)
        assert 0 < taken.count(False) <= 11 and taken[-2:] == [True, True], (weights_dtype, taken, scales)
        assert all(math.isfinite(v) for k, vs in probe.logged.items() if k.startswith("train/loss") for v in vs)
        assert probe.logged["train/timestep"] == sorted(probe.logged["train/timestep"], reverse=True)
        skipped[weights_dtype] = taken.count(False)
    assert abs(skipped["float16"] - skipped["float32"]) <= 1, skipped
