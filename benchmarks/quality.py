"""Every task's quality on the miniature world model (2D, SVG, NeRF), DreamSampler against its baselines, in one table.

    python benchmarks/quality.py [--quick] [--out outputs/quality] [--tasks restore-blur,inpaint,...]

Each DreamSampler row (and each baseline that is a setting of the same system) is a run of the shipped
config through ``dreamsampler_launcher.run_threestudio --cpu`` (the command a user runs), on the trained
``dreamsampler/world/mini-sd`` at its native 64 px, on held-out world icons (eval seeds, never seen in
training). Baselines that are not settings of our systems are computed here with the core or diffusers:
data consistency alone (the CG solution of supp. eq. 13 with x_ref = 0) and DDIM inversion followed by
CFG resampling (diffusers' ``DDIMInverseScheduler`` and ``StableDiffusionPipeline``).

Metrics: PSNR / SSIM against the clean icon (``dreamsampler.metrics``); attributes read back with the
world's reader (``dreamsampler.world.evaluator``). Every run lands in ``<out>/runs/<task>/<method>/<scene>``
and is skipped when its ``save/metrics.json`` exists, so an interrupted benchmark resumes run by run; a
task's rows go to ``<out>/<task>.json``, its figure (inputs, each method, ground truth) to
``<out>/<task>.png``, and the whole table to ``<out>/quality.json`` and ``<out>/quality.md``.

Each task run also gets its results page, ``docs/results/<task>.md`` (``--results DIR``; none for
``--quick`` unless asked): its table, its figures copied next to it, the command line, the commit, the
date, the machine and the wall time, so that no number in the documentation is copied by hand.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from dreamsampler.diffusion.schedules import ReverseSchedule
from dreamsampler.image.inpainting import GAMMA_PERIOD, GAMMA_T_MAX, in_gamma_set
from dreamsampler.image_io import read_image, rect_mask, to_uint8
from dreamsampler.inverse.cg import data_consistency_solve
from dreamsampler.inverse.operators import build_operator
from dreamsampler.metrics import masked_psnr, psnr, ssim
from dreamsampler.world import COLOUR_NAMES, MINI_SD, SPLIT_OFFSETS, icon_caption, sample_icon, world_image
from dreamsampler.world.evaluator import Reader
from dreamsampler.world.scenes import make_object_scene

REPO = Path(__file__).resolve().parents[1]
SCENE_SEED = SPLIT_OFFSETS["eval"] + 700_000  # held-out icons of this benchmark (eval split)
OPERATORS = {  # the paper's restoration operators at the world's scale (64 px)
    "restore-blur": [{"type": "blur", "kernel_size": 5, "sigma": 10.0}],
    "restore-x4": [{"type": "downsample", "factor": 4}],
}


@dataclass
class Settings:
    out: Path
    scenes: int
    nfe: int
    quick: bool
    nerf_scenes: int = 3
    nerf_size: int = 32  # render size (resized to the mini model's 64 for the guidance): CPU time
    nerf_warmup: int = 100
    nerf_steps: int = 100  # eq. 18 steps after the warm-up
    nerf_samples: int = 32  # samples per ray
    nerf_val_every: int = 50
    svg_steps: int = 200
    t2i_seeds: int = 4
    t2i_nfe: int = 50  # DDIM steps, as the mini model's card measures it
    t2i_steps: int = 500  # distillation steps of the latent baselines
    t2n_seeds: int = 3
    t2n_steps: int = 200  # CPU time: about 0.4 s a step at these sizes
    t2n_val_every: int = 50
    log: Callable[[str], None] = print
    reader: Reader = field(default_factory=Reader)
    runs_used: List[Path] = field(default_factory=list)  # run folders the current task read (computed or cached)
    runs_computed: int = 0  # of those, computed by this invocation


@dataclass
class Scene:
    """A held-out icon: its image [1,3,64,64] in [0,1], caption, attributes and the PNG the configs read."""

    index: int
    image: torch.Tensor
    caption: str
    attrs: object
    path: Path


def scenes(s: Settings, count: int = 1) -> List[Scene]:
    out = []
    for i in range(s.scenes):
        img, caption, attrs = sample_icon(torch.Generator().manual_seed(SCENE_SEED + 1000 * count + i), count=count)
        path = s.out / "scenes" / f"icon{count}-{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            iio.imwrite(path, to_uint8(img))
        out.append(Scene(i, read_png(path), caption, attrs, path))
    return out


def read_png(path) -> torch.Tensor:
    """A saved image as ``[1, 3, H, W]``, read as the 2D system reads its inputs."""
    return read_image(str(path), "image")[None]


def quantized(x: torch.Tensor) -> torch.Tensor:
    """An image as it would be saved (8 bits), so computed baselines are scored like saved results."""
    return torch.from_numpy(to_uint8(x[0]).astype(np.float32) / 255).permute(2, 0, 1)[None]


def run(s: Settings, config: str, where: str, overrides: List[str], steps: int | None = None,
        model_fields=("system.pretrained_model_name_or_path",), val_every: int | None = None,
        marker: str = "metrics.json") -> Path:
    """The ``save/`` folder of one run of ``configs/<config>.yaml`` on the mini model (cached: done when
    ``save/<marker>`` exists)."""
    root = s.out / "runs" / where
    s.runs_used.append(root)
    done = next(root.glob(f"*/*/save/{marker}"), None) if root.exists() else None
    if done is not None:
        return done.parent
    steps = steps or s.nfe
    cmd = [sys.executable, "-m", "dreamsampler_launcher.run_threestudio", "--config", str(config_file(config)),
           "--train", "--cpu", f"exp_root_dir={root}", *(f"{k}={MINI_SD}" for k in model_fields),
           f"trainer.max_steps={steps}", f"trainer.val_check_interval={val_every or steps}", *overrides]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{where}: {config} failed ({root / 'run.log'}):\n" + "\n".join(proc.stderr.splitlines()[-20:]))
    s.log(f"  {where}: {time.time() - start:.0f} s")
    s.runs_computed += 1
    (root / "run.json").write_text(json.dumps({"commit": git_commit(), "seconds": round(time.time() - start)}))
    return next(root.glob(f"*/*/save/{marker}")).parent


def config_file(config: str) -> Path:
    """``configs/<config>.yaml``, or for ``threestudio:<name>`` the threestudio checkout's ``configs/<name>.yaml``."""
    if config.startswith("threestudio:"):
        from dreamsampler_launcher.run_threestudio import threestudio_root

        return threestudio_root() / "configs" / f"{config.split(':', 1)[1]}.yaml"
    return REPO / "configs" / f"{config}.yaml"


def slug(method: str) -> str:
    """A method's name as a folder name."""
    return re.sub(r"[^a-z0-9]+", "-", method.lower().replace("'", "")).strip("-")


def rect_of(attrs, k: int = 0, margin: float = 1.25) -> List[float]:
    """[x0, y0, x1, y1] (fractions) around shape ``k`` of an icon."""
    (x, y), r = attrs.positions[k], attrs.sizes[k] * margin
    return [round(max(0.0, x - r), 4), round(max(0.0, y - r), 4), round(min(1.0, x + r), 4), round(min(1.0, y + r), 4)]


def other_colour(colour: str) -> str:
    return COLOUR_NAMES[(COLOUR_NAMES.index(colour) + 1) % len(COLOUR_NAMES)]


def read_at(s: Settings, image: torch.Tensor, rect) -> Dict[str, str]:
    """(colour, shape) of the shape read nearest the centre of ``rect`` (None when nothing is there)."""
    read = s.reader(image, "icon")[0]
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    inside = [(abs(x - cx) + abs(y - cy), k) for k, (x, y) in enumerate(read["positions"])
              if rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3]]
    if not inside:
        return {"colour": None, "shape": None}
    k = min(inside)[1]
    return {"colour": read["colours"][k], "shape": read["shapes"][k]}


@functools.lru_cache(maxsize=None)
def mini_schedule(nfe: int) -> ReverseSchedule:
    """The reverse schedule the 2D system builds for the mini model at ``nfe`` steps."""
    from diffusers import DDIMScheduler

    return ReverseSchedule.from_scheduler(DDIMScheduler.from_pretrained(str(MINI_SD), subfolder="scheduler"), nfe)


def alg4_unet_evals(nfe: int, targets: int, inversion: bool, gamma_t_max: int = GAMMA_T_MAX, on_step_index: bool = False) -> int:
    """UNet forward passes of one Alg. 4 run: the inversion (one per step), then per step 1 + targets on
    Gamma (null and prompts, eq. 16) and 1 on a DPS step (plus its backward pass, not counted)."""
    schedule = mini_schedule(nfe)
    steps = sum(1 + targets if in_gamma_set(i if on_step_index else schedule.t(i), GAMMA_PERIOD, gamma_t_max) else 1
                for i in range(len(schedule)))
    return steps + (nfe if inversion else 0)


def image_scores(result: torch.Tensor, clean: torch.Tensor) -> Dict[str, float]:
    return {"psnr": float(psnr(result, clean)), "ssim": float(ssim(result, clean))}


# ---------------------------------------------------------------------------------------------- tasks


def restore(task: str):
    """2D restoration (supp. Alg. 4 without a mask, eq. 15) against DPS only and data consistency only."""
    spec = OPERATORS[task]

    def rows(s: Settings):
        op = build_operator({"type": "compose", "ops": spec})
        out, figure = [], []
        op_arg = "system.operator=" + json.dumps(spec).replace('"', "")
        for sc in scenes(s):
            y = op.measure(sc.image * 2 - 1)
            shown = F.interpolate((y / 2 + 0.5).clamp(0, 1), size=64, mode="nearest")
            base = [f"system.image={sc.path}", f"system.prompt={sc.caption!r}", op_arg]
            results = {
                "dreamsampler": read_png(run(s, "dreamsampler-restore", f"{task}/dreamsampler/{sc.index}", base) / "result.png"),
                "dps only, init noise": read_png(run(s, "dreamsampler-restore", f"{task}/dps-only/{sc.index}", base + ["system.init=noise", "system.gamma_t_max=-1"]) / "result.png"),
                "dreamsampler, init noise": read_png(run(s, "dreamsampler-restore", f"{task}/init-noise/{sc.index}",
                                                         base + ["system.init=noise"]) / "result.png"),
                "data consistency only": quantized(
                    (data_consistency_solve(op, y, torch.zeros_like(sc.image), lam=1e-4, iters=50) / 2 + 0.5).clamp(0, 1)),
            }
            evals = {"dreamsampler": alg4_unet_evals(s.nfe, 1, True), "dps only, init noise": alg4_unet_evals(s.nfe, 1, False, -1),
                     "dreamsampler, init noise": alg4_unet_evals(s.nfe, 1, False), "data consistency only": 0}
            out.append({"method": "degraded input", "scene": sc.index, "unet_evals": 0,
                        **image_scores(F.interpolate((y / 2 + 0.5).clamp(0, 1), size=64, mode="bicubic").clamp(0, 1), sc.image)})
            for name, img in results.items():
                out.append({"method": name, "scene": sc.index, "unet_evals": evals[name], **image_scores(img, sc.image)})
            figure.append([shown, *results.values(), sc.image])
        return out, figure, ["input", *results, "ground truth"]

    return rows


def recolour(sc: Scene):
    """The box around the icon's shape, the target (next colour of the palette, same shape) and its caption."""
    target = (other_colour(sc.attrs.colours[0]), sc.attrs.shapes[0])
    return rect_of(sc.attrs), target, icon_caption([target[0]], [target[1]])


def recolour_row(s: Settings, method: str, sc: Scene, img: torch.Tensor, unet_evals: int) -> dict:
    """One scene's scores for a recolouring task: the target read inside the box, PSNR to the source outside it."""
    rect, target, prompt = recolour(sc)
    got = read_at(s, img, rect)
    return {"method": method, "scene": sc.index, "prompt": prompt, "unet_evals": unet_evals,
            "colour_ok": got["colour"] == target[0], "shape_ok": got["shape"] == target[1],
            "psnr_outside": masked_psnr(img, sc.image, 1 - rect_mask(rect, 64, 64, "rect")[None])}


def inpaint(s: Settings):
    """Text-guided inpainting (Alg. 4): the shape's box masked, the prompt asks for another colour."""
    out, figure = [], []
    for sc in scenes(s):
        rect, _, prompt = recolour(sc)
        base = [f"system.image={sc.path}", f"system.regions=[{{prompt: {prompt!r}, rect: {rect}}}]"]
        methods = {
            "dreamsampler (Gamma on t)": base,
            "dreamsampler (Gamma on step index)": base + ["system.gamma_on_step_index=true"],
            "dps only": base + ["system.gamma_t_max=-1"],
        }
        evals = {"dreamsampler (Gamma on t)": alg4_unet_evals(s.nfe, 1, True),
                 "dreamsampler (Gamma on step index)": alg4_unet_evals(s.nfe, 1, True, on_step_index=True),
                 "dps only": alg4_unet_evals(s.nfe, 1, True, -1)}
        keep = 1 - rect_mask(rect, 64, 64, "rect")[None]
        row = [sc.image * keep + 0.5 * (1 - keep)]
        for name, overrides in methods.items():
            img = read_png(run(s, "dreamsampler-inpaint", f"inpaint/{slug(name)}/{sc.index}", overrides) / "result.png")
            out.append(recolour_row(s, name, sc, img, evals[name]))
            row.append(img)
        figure.append(row + [sc.image])
    return out, figure, ["masked input", *methods, "source"]


@functools.lru_cache(maxsize=1)
def mini_pipeline():
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    pipe = StableDiffusionPipeline.from_pretrained(str(MINI_SD), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ddim_inversion_edit(source: torch.Tensor, prompt: str, nfe: int, scale: float) -> torch.Tensor:
    """Baseline: diffusers' DDIM inversion of the source (null prompt) then CFG sampling with ``prompt``."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    pipe = mini_pipeline()
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(nfe)
    with torch.no_grad():
        z = pipe.vae.encode(source * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        null = pipe.encode_prompt("", "cpu", 1, False)[0]
        for t in inverse.timesteps:
            z = inverse.step(pipe.unet(z, t, encoder_hidden_states=null).sample, t, z).prev_sample
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        img = pipe(prompt, latents=z, num_inference_steps=nfe, guidance_scale=scale, output_type="pt").images
    return quantized(img.float().clamp(0, 1))


EDIT_CFG = 4.0  # the mini model's sampling scale (its model card); 7.5 breaks the inversion further


def edit(s: Settings):
    """Editing (Alg. 3): `a red circle` -> `a blue circle`, global and localized (eq. 19), vs DDIM inversion + CFG."""
    out, figure = [], []
    for sc in scenes(s):
        rect, _, prompt = recolour(sc)
        base = [f"system.image={sc.path}", f"system.prompt={prompt!r}"]
        results = {
            "dreamsampler": read_png(run(s, "dreamsampler-edit", f"edit/dreamsampler/{sc.index}", base) / "result.png"),
            "dreamsampler localized (eq. 19)": read_png(run(s, "dreamsampler-edit", f"edit/localized/{sc.index}", [
                f"system.image={sc.path}", f"system.regions=[{{prompt: {prompt!r}, rect: {rect}}}]"]) / "result.png"),
            f"ddim inversion + cfg {EDIT_CFG:g}": ddim_inversion_edit(sc.image, prompt, s.nfe, EDIT_CFG),
        }
        # each: NFE inversion steps, then NFE steps of 2 predictions
        out += [recolour_row(s, name, sc, img, 3 * s.nfe) for name, img in results.items()]
        figure.append([sc.image, *results.values()])
    return out, figure, ["source", *results]

NERF_SEED = SPLIT_OFFSETS["eval"] + 800_000  # held-out objects of this benchmark (eval split)
# chosen on a development scene (seed NERF_SEED + 100, not scored): one-step targets D(z0^) beat the warm-up's
# renders only at CFG 1 and t <= 300 (at CFG 100 they are 8-11 dB, the renders 27-30 dB), and the paper's
# distillation weights pull the NeRF away from the data even then (27.3 -> 13.3 dB); 1/100 of them does not
NERF_MINI_SETTINGS = ["system.guidance.guidance_scale=1", "system.guidance.max_step_percent=0.3",
                      "system.loss.lambda_sds=0.01", "system.loss.lambda_pixel=39.32"]
NERF_MODEL_FIELDS = ("system.prompt_processor.pretrained_model_name_or_path", "system.guidance.pretrained_model_name_or_path")


def nerf_curve(save: Path, warmup: int, unet_per_step: int) -> List[dict]:
    """PSNR / SSIM of the 16 data views at every validation of a run, with the UNet evaluations spent so far."""
    points = []
    for path in save.glob("it*-val/metrics.json"):
        m = json.loads(path.read_text())
        points.append({"step": m["step"], "unet_evals": max(0, m["step"] - warmup) * unet_per_step, **m["renders"]})
    return sorted(points, key=lambda p: p["step"])


def nerf(task: str):
    """NeRF from degraded views (supp. eq. 18-19) on world objects: the shipped config against the warm-up
    alone, data consistency only for the same steps and SDS as eq. 18's prior, scored on the 16 data views
    and on 8 held-out views (``dreamsampler.world.scenes``)."""
    spec = OPERATORS[task.replace("nerf-", "restore-")][0]

    def rows(s: Settings):
        warm, total = s.nerf_warmup, s.nerf_warmup + s.nerf_steps
        out, figure, curves = [], [], {}
        for i in range(s.nerf_scenes):
            info = make_object_scene(str(s.out / "scenes" / f"{task}-{i}"), NERF_SEED + i, s.nerf_size, spec)
            base = [f"data.dataroot={info['degraded']}", f"data.gt_root={info['clean']}", f"data.heldout_root={info['heldout']}",
                    f"data.caption={info['caption']!r}", "data.operator=" + json.dumps(spec).replace('"', ""),
                    f"system.renderer.num_samples_per_ray={s.nerf_samples}", "system.geometry.pos_encoding_config.n_levels=8",
                    "system.geometry.pos_encoding_config.log2_hashmap_size=15", "data.n_val_views=16", "data.n_test_orbit_views=8"]
            methods = {  # name: (config, warm-up steps, total steps, UNet evaluations per step after the warm-up, overrides)
                "warm-up alone": ("dreamsampler-degraded-nerf", warm, warm, 0, []),
                "dreamsampler (eq. 18-19, shipped)": ("dreamsampler-degraded-nerf", warm, total, 2, []),
                "dreamsampler (mini-model settings)": ("dreamsampler-degraded-nerf", warm, total, 2, NERF_MINI_SETTINGS),
                "data consistency only": ("dreamsampler-degraded-nerf", total, total, 0, []),
                "sds as eq. 18's prior": ("variants/degraded-nerf-sds", warm, total, 2, []),
            }
            renders = []
            for name, (config, w, steps, per_step, extra) in methods.items():
                save = run(s, config, f"{task}/{slug(name)}/{i}", base + [f"system.warmup_steps={w}", *extra], steps=steps,
                           model_fields=NERF_MODEL_FIELDS, val_every=s.nerf_val_every)
                m = json.loads((save / "metrics.json").read_text())
                if not renders:
                    out.append({"method": "degraded input", "scene": i, "unet_evals": 0,
                                "psnr": m["degraded_input"]["psnr"], "ssim": m["degraded_input"]["ssim"]})
                out.append({"method": name, "scene": i, "unet_evals": (steps - w) * per_step,
                            "psnr": m["renders"]["psnr"], "ssim": m["renders"]["ssim"],
                            "heldout_psnr": m["heldout"]["psnr"], "heldout_ssim": m["heldout"]["ssim"]})
                curves.setdefault(name, []).append(nerf_curve(save, w, per_step))
                # data view 0 saved as render | A(render) | y | ground truth, each column at the render size
                grid = read_png(save / f"it{steps}-views" / "0.png")
                renders.append(grid[..., : s.nerf_size])
            size = s.nerf_size
            figure.append([grid[..., 2 * size: 3 * size], *renders, grid[..., 3 * size: 4 * size]])
        save_curves(s.out / f"{task}-curves.png", curves, task)
        return out, figure, ["degraded view", *methods, "ground truth"]

    return rows


def save_curves(path: Path, curves: Dict[str, List[List[dict]]], title: str) -> None:
    """Mean data-view PSNR over scenes against UNet evaluations (and steps for the UNet-free runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        n = min(len(r) for r in runs)
        if n == 0:
            continue
        x = [runs[0][k]["step"] for k in range(n)]
        ax.plot(x, [np.mean([r[k]["psnr"] for r in runs]) for k in range(n)], marker="o", label=name)
    ax.set_xlabel("training step (UNet evaluations = 2 x steps after the warm-up)")
    ax.set_ylabel("PSNR of the 16 data views (dB)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)



SVG_MINI_SETTINGS = ["system.guidance.guidance_scale=1"]  # CFG 100's targets are noise on the mini model (see NeRF)
SVG_TASKS = {  # eq. 21 at the world's scale: the 2D task's blur, and the paper's x8; each method: (config, overrides, UNet evals per step)
    "svg-blur": ({"type": "blur", "kernel_size": 5, "sigma": 10.0}, {
        "dreamsampler (eq. 21, shipped)": ("dreamsampler-svg-deblur", [], 2),
        "dreamsampler (mini-model settings)": ("dreamsampler-svg-deblur", SVG_MINI_SETTINGS, 2),
        "no distillation (no-sds config)": ("dreamsampler-svg-deblur-no-sds", [], 0),
        "sds in eq. 21": ("variants/svg-deblur-sds", [], 2)}),
    "svg-x8": ({"type": "downsample", "factor": 8}, {  # the sr config with the deblur variants' one change each
        "dreamsampler (eq. 21, shipped)": ("dreamsampler-svg-sr", [], 2),
        "dreamsampler (mini-model settings)": ("dreamsampler-svg-sr", SVG_MINI_SETTINGS, 2),
        "no distillation (lambda_sds 0)": ("dreamsampler-svg-sr", ["system.loss.lambda_sds=0"], 0),
        "sds in eq. 21": ("dreamsampler-svg-sr", ["system.guidance.mode=sds"], 2)}),
}


def svg(task: str):
    """SVG restoration (eq. 21) of the held-out icons: the shipped config (and at the mini model's CFG)
    against no distillation and SDS in eq. 21 (``SVG_TASKS``); PSNR to the clean icon, colour and shape read
    from the rasterized SVG. The paper's 128 paths, radius and learning-rate schedule scaled to 64 px and
    ``svg_steps``; the icon suffix dropped (the mini model knows only the world's words)."""
    spec, methods = SVG_TASKS[task]

    def rows(s: Settings):
        out, figure = [], []
        op_arg = "system.operator=" + json.dumps(spec).replace('"', "")
        for sc in scenes(s):
            base = [f"system.target={sc.path}", f"system.prompt_processor.prompt={sc.caption!r}", "system.prompt_suffix=''",
                    op_arg, "system.canvas_size=64", f"system.init_radius={20 * 64 / 512}",  # the paper's 20 px at 512
                    f"system.lr_warmup_steps={s.svg_steps // 2}"]  # the paper's 500 of 1000 steps
            y = (build_operator(spec).measure(sc.image * 2 - 1) / 2 + 0.5).clamp(0, 1)
            row = [F.interpolate(y, size=64, mode="nearest")]
            out.append({"method": "degraded input", "scene": sc.index, "unet_evals": 0,
                        "psnr": float(psnr(F.interpolate(y, size=64, mode="bicubic").clamp(0, 1), sc.image))})
            for name, (cfg_name, extra, per_step) in methods.items():
                save = run(s, cfg_name, f"{task}/{slug(name)}/{sc.index}", base + extra, steps=s.svg_steps, model_fields=NERF_MODEL_FIELDS)
                img = read_png(save / "final.png")
                got = read_at(s, img, rect_of(sc.attrs))
                out.append({"method": name, "scene": sc.index, "unet_evals": per_step * s.svg_steps,
                            "psnr": float(psnr(img, sc.image)), "colour_ok": got["colour"] == sc.attrs.colours[0],
                            "shape_ok": got["shape"] == sc.attrs.shapes[0]})
                row.append(img)
            figure.append(row + [sc.image])
        return out, figure, ["measurement", *methods, "clean icon"]

    return rows


T2I_CAPTIONS = ("a red circle", "a blue square", "a green triangle", "a yellow star", "a black circle")
T2I_CFG = 4.0  # the mini model's sampling scale (its model card)
SDS_CFG = 100.0  # DreamFusion's
LMC_CFG = 10.0  # the -lmc variants' scale (LMC-SDS sec. 5: a tenth of DreamFusion's)
# the bridge's y_src on the mini model: the null prompt (its vocabulary has no words for the artifact descriptors,
# which split into untrained character pieces and overflow its 32-token context), so stage 2 is eps(y) - eps(null)
BRIDGE_NULL = "system.guidance.source_prompt=''"  # text-to-NeRF: the -bridge variant (SDS for 80% of the run, then w = 1)
BRIDGE_2D_CFG, BRIDGE_2D_SCALE = 40.0, 25.0  # the bridge paper's text-to-image: s = 40 in stage 1 (the first 20%), then w = 25
LMC_TRAINING = ["--world", "2048", "--resolution", "64", "--depth", "2", "--steps", "2000", "--seed", "0"]


@functools.lru_cache(maxsize=1)
def world_spread(n: int = 500) -> Dict[str, float]:
    """Standard deviation of a single shape's x, y and size over the world's own icons (eval split)."""
    from dreamsampler.world import sample_icon_attrs

    attrs = [sample_icon_attrs(torch.Generator().manual_seed(SCENE_SEED + 500_000 + k), count=1) for k in range(n)]
    return {"x": float(np.std([a.positions[0][0] for a in attrs])), "y": float(np.std([a.positions[0][1] for a in attrs])),
            "size": float(np.std([a.sizes[0] for a in attrs]))}


def mini_corrective(s: Settings) -> Path:
    """k_psi for the mini model, trained by ``scripts/train_lmc.py`` on training-split world images (cached)."""
    path = s.out / "k-mini-sd.safetensors"
    if not path.exists():
        start = time.time()
        cmd = [sys.executable, str(REPO / "scripts" / "train_lmc.py"), "--model", str(MINI_SD), *LMC_TRAINING, "--out", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        (s.out / "k-mini-sd.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"train_lmc.py failed ({s.out / 'k-mini-sd.log'})")
        s.log(f"  k_psi for the mini model: {time.time() - start:.0f} s")
    return path


def sds_latent(caption: str, seed: int, steps: int, **guidance) -> torch.Tensor:
    """Baseline: a 8x8 latent optimized by score distillation through this project's ``dreamsampler-guidance``
    (mode ``sds``: random t, fresh noise, w = 1 - abar, CFG 100, as DreamFusion; ``guidance`` overrides the
    mode and its fields, e.g. LMC-SDS or the bridge), Adam lr 0.05; decoded with the VAE."""
    from dreamsampler_launcher.run_threestudio import load_threestudio

    ts = load_threestudio(cpu=True)
    cwd = os.getcwd()
    try:
        os.chdir(tempfile.mkdtemp())  # the prompt processor caches its embeddings in the working directory
        pp_cfg = {"pretrained_model_name_or_path": str(MINI_SD), "prompt": caption, "spawn": False}
        prompt_utils = ts.find("stable-diffusion-prompt-processor")(pp_cfg)()
        cfg = {"pretrained_model_name_or_path": str(MINI_SD), "mode": "sds", "weighting_strategy": "sds",
               "guidance_scale": SDS_CFG, "view_dependent_prompting": False, "trainer_max_steps": steps,
               "prompt_processor": pp_cfg, **guidance}
        guidance = ts.find("dreamsampler-guidance")(cfg)
    finally:
        os.chdir(cwd)
    torch.manual_seed(seed)
    latent = torch.randn(1, 8, 8, 4).requires_grad_(True)  # threestudio's [B, H, W, C]
    opt = torch.optim.Adam([latent], lr=0.05)
    zeros = torch.zeros(1)
    for step in range(steps):
        guidance.update_step(0, step)
        out = guidance(latent, prompt_utils, elevation=zeros, azimuth=zeros, camera_distances=zeros + 1, rgb_as_latents=True)
        opt.zero_grad()
        out["loss_sds"].backward()
        opt.step()
    with torch.no_grad():
        return quantized(guidance.decode_latents(latent.detach().permute(0, 3, 1, 2)))


def cached_image(path: Path, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()`` (an 8-bit-quantized image ``[1, 3, H, W]``), saved at ``path`` and read back on later calls."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, to_uint8(make()[0]))
    return read_png(path)


def text_to_image(s: Settings):
    """Text-to-image: the identity generator with DreamSampler (= DDIM, the shipped config at CFG 4)
    against a latent optimized by SDS and one by LMC-SDS (k_psi trained for the mini model), and SDS at
    LMC's CFG (what L_lmc replaces, at the same scale), and one by the bridge as its paper ran text-to-image (SDS
    at s = 40 for the first 20% of the steps, then 25 (eps(y) - eps(y_src)), y_src the null prompt); attributes
    read back, spread over seeds."""
    out, figure, spreads = [], [], defaultdict(list)
    ddim = "dreamsampler (identity generator = ddim)"
    bridge = {"mode": "bridge", "source_prompt": "", "guidance_scale": BRIDGE_2D_CFG, "bridge_scale": BRIDGE_2D_SCALE,
              "bridge_start_step": s.t2i_steps // 5}
    lmc = {"mode": "lmc", "guidance_scale": LMC_CFG, "lmc_checkpoint": str(mini_corrective(s))}
    latents = {  # name: (cache folder under runs/text-to-image, sds_latent's guidance overrides)
        "sds latent": ("sds-latent", {}),
        "lmc-sds latent": ("lmc-latent", lmc),
        "sds latent at lmc's cfg": ("sds-latent-lmc-cfg", {"guidance_scale": LMC_CFG}),
        "bridge latent (y_src = null)": ("bridge-latent", bridge),
    }
    methods = [ddim, *latents]
    for c, caption in enumerate(T2I_CAPTIONS):
        row, reads = [], defaultdict(list)
        for seed in range(s.t2i_seeds):
            imgs = {ddim: read_png(run(s, "dreamsampler-text-to-image", f"text-to-image/ddim/{c}-{seed}", [
                f"system.prompt={caption!r}", f"system.guidance_scale={T2I_CFG}", f"seed={seed}"], steps=s.t2i_nfe) / "result.png")}
            for name, (folder, overrides) in latents.items():
                imgs[name] = cached_image(s.out / "runs" / "text-to-image" / folder / f"{c}-{seed}.png",
                                          lambda: sds_latent(caption, seed, s.t2i_steps, **overrides))
            colour, shape = caption.split()[1:]
            for name, img in imgs.items():
                read = s.reader(img, "icon")[0]
                ok = read["count"] == 1
                out.append({"method": name, "scene": f"{c}-{seed}", "prompt": caption,
                            "unet_evals": 2 * (s.t2i_nfe if name == ddim else s.t2i_steps),
                            "colour_ok": ok and read["colours"][0] == colour, "shape_ok": ok and read["shapes"][0] == shape})
                if ok:
                    reads[name].append((*read["positions"][0], read["sizes"][0]))
            if seed < 2:
                row += list(imgs.values())
        for name, rs in reads.items():
            if len(rs) > 1:
                spreads[name].append(np.std(np.array(rs), axis=0) / np.array(list(world_spread().values())))
        figure.append(row)
    for r in out:  # the spread of position / size over seeds, as a fraction of the world's (mean over captions)
        sp = spreads.get(r["method"])
        r["spread_vs_world"] = float(np.mean(sp)) if sp else float("nan")
    return out, figure, [f"{m} seed {k}" for k in range(2) for m in methods]


T2N_PROMPTS = ("a red sphere", "a blue cube", "a green cylinder", "a yellow cone")
# the runs' sizes (CPU time) and the settings every method shares, chosen before any scored run: threestudio's
# DreamFusion learning rate (the paper's 1e-3 leaves the NeRF grey after 150 steps at this length; a pilot on
# "a red sphere", seed 100, not scored) and CFG 7.5 (the paper's 100 saturates the mini model, see the NeRF rows)
T2N_SIZE = ["data.width=32", "data.height=32", "data.eval_width=32", "data.eval_height=32", "data.n_val_views=4",
            "data.n_test_views=8", "system.renderer.num_samples_per_ray=32", "system.geometry.pos_encoding_config.n_levels=8",
            "system.geometry.pos_encoding_config.log2_hashmap_size=15", "system.optimizer.args.lr=0.01"]
T2N_CFG = 7.5
T2N_LONG_STEPS = 1000  # text-to-nerf-long: DreamSampler and SDS, one seed, 5x the steps
GUIDED = "system.guidance.carry=guided"  # Alg. 2's carried noise (the text-to-NeRF config carries the unconditional one)


def render_views(paths: List[Path], panel: int = 0) -> torch.Tensor:
    """A panel of saved threestudio grids (0: rgb | 1: normal | 2: opacity), at the world's 64 px: [V, 3, 64, 64]."""
    views = []
    for path in paths:
        grid = read_png(path)
        h = grid.shape[-2]
        views.append(F.interpolate(grid[..., panel * h : (panel + 1) * h], size=64, mode="bilinear", align_corners=False))
    return torch.cat(views).clamp(0, 1)


def read_object_views(s: Settings, views: torch.Tensor, caption: str) -> Dict[str, float]:
    """Share of views whose colour / shape the world's object reader finds to be the caption's."""
    colour, shape = caption.split()[1:]
    reads = s.reader(views, "object")
    return {"colour_ok": float(np.mean([r["colours"][0] == colour for r in reads])),
            "shape_ok": float(np.mean([r["shapes"][0] == shape for r in reads]))}


def saturation(views: torch.Tensor, opacity: torch.Tensor | None = None) -> float:
    """Mean HSV saturation of the object's pixels: opacity above 1/2 for renders, non-white pixels for
    the world's images (on white)."""
    mx, mn = views.amax(1), views.amin(1)
    sat = (mx - mn) / mx.clamp_min(1e-6)
    mask = opacity[:, 0] > 0.5 if opacity is not None else (1 - views).amax(1) > 0.1
    return float(sat[mask].mean()) if mask.any() else float("nan")


@functools.lru_cache(maxsize=None)
def world_saturation(colour: str, n: int = 40) -> float:
    """:func:`saturation` of held-out world objects of ``colour`` (the reference the renders are compared with)."""
    imgs = []
    k = 0
    while len(imgs) < n:
        img, caption, _ = world_image("eval", 900_000 + k, "object")
        k += 1
        if caption.split()[1] == colour:
            imgs.append(img)
    return saturation(torch.stack(imgs))


def t2n_methods(s: Settings, names=None) -> Dict[str, tuple]:
    """name: (config, overrides) of the text-to-NeRF methods, every one at the shared ``T2N_*`` settings (LMC keeps
    its variant's CFG 10); ``names`` picks some (LMC's k_psi is trained only when LMC is picked)."""
    cfg = f"system.guidance.guidance_scale={T2N_CFG}"
    table = {
        "dreamsampler (shipped config: unconditional noise carried)": lambda: ("dreamsampler-text-to-nerf", [cfg]),
        "sds (-sds variant)": lambda: ("variants/text-to-nerf-sds", [cfg]),
        "lmc-sds (-lmc variant)": lambda: ("variants/text-to-nerf-lmc", [f"system.guidance.lmc_checkpoint={mini_corrective(s)}"]),
        "bridge (-bridge variant, y_src = null)": lambda: ("variants/text-to-nerf-bridge", [cfg, BRIDGE_NULL]),
        "dreamsampler, guided noise carried (alg. 2)": lambda: ("dreamsampler-text-to-nerf", [cfg, GUIDED]),
        "dreamsampler, guided, noise per azimuth quarter": lambda: ("dreamsampler-text-to-nerf", [cfg, GUIDED, "system.guidance.camera_bins=4"]),
    }
    return {name: table[name]() for name in (names or table)}


T2N_PEER_PROMPTS = ("a blue sphere", "a red cube", "a yellow cylinder", "a green cone")  # no other task's prompts
SWAP = "system.guidance_type=dreamsampler-guidance"


def t2n_peer_methods(s: Settings, names=None) -> Dict[str, tuple]:
    """name: (config, overrides) of DreamSampler against what threestudio users have: the shipped config, the one-line
    swap into threestudio's ``dreamfusion-sd.yaml`` with the guidance's defaults, threestudio's SDS in that config
    and threestudio's SDI in its ``sdi.yaml`` (our ``mode=sds`` / ``mode=sdi``: threestudio's guidances, equal on the
    tiny pipeline, at the mini model's native resolution); every one at CFG ``T2N_CFG`` and the ``T2N_SIZE`` sizes."""
    cfg = f"system.guidance.guidance_scale={T2N_CFG}"
    table = {
        "dreamsampler (shipped config)": ("dreamsampler-text-to-nerf", [cfg]),
        "dreamsampler (one-line swap into dreamfusion-sd.yaml)": ("threestudio:dreamfusion-sd", [SWAP, cfg]),
        "sds (dreamfusion-sd.yaml)": ("threestudio:dreamfusion-sd", [SWAP, "system.guidance.mode=sds", cfg]),
        "sdi (sdi.yaml)": ("threestudio:sdi", [SWAP, "system.guidance.mode=sdi", cfg]),
    }
    return {name: table[name] for name in (names or table)}


def logged_unet_evals(save: Path) -> Dict[int, int]:
    """step k -> UNet evaluations spent by the end of step k (the run's ``train/unet_evals``, summed)."""
    rows = [r for r in csv.DictReader(open(next(save.parent.glob("csv_logs/version_*/metrics.csv")))) if r.get("train/unet_evals")]
    per_step = {int(r["step"]): int(float(r["train/unet_evals"])) for r in rows}
    out, total = {}, 0
    for k in range(max(per_step, default=-1) + 1):
        total += per_step.get(k, 0)
        out[k + 1] = total
    return out


def text_to_nerf(task: str, steps: int | None = None, seeds: int | None = None, val_every: int | None = None, names=None,
                 first_seed: int = 0, table=t2n_methods, prompts=T2N_PROMPTS):
    """Text-to-NeRF (supp. sec. 5.3) on the mini model: the shipped config (DreamSampler), its ``-sds``, ``-lmc``
    (k_psi for the mini model, as in text-to-image) and ``-bridge`` (y_src the null prompt, ``BRIDGE_NULL``)
    variants, DreamSampler carrying the guided prediction (Alg. 2) instead of the shipped unconditional one (Alg. 3
    and 4), and with it one carried-noise memory per azimuth quarter (``guidance.camera_bins=4``: threestudio's
    view directions) instead of one; 4 prompts x ``seeds`` (default ``s.t2n_seeds``, from ``first_seed``), ``steps``
    (default ``s.t2n_steps``). Scored on the 8 test views (the world's object reader), colour saturation against
    the world's objects, spread over seeds (per-pixel std of the test views across seeds; NaN for one seed), and
    the reader's accuracy on the 4 validation views against UNet evaluations (the curve: when does each method
    reach SDS's final value?)."""

    def rows(s: Settings):
        n_steps, n_seeds, every = steps or s.t2n_steps, seeds or s.t2n_seeds, val_every or s.t2n_val_every
        methods = table(s, names)
        out, figure, curves = [], [], defaultdict(list)
        test_views: Dict[tuple, torch.Tensor] = {}
        for p, prompt in enumerate(prompts):
            row = []
            for seed in range(first_seed, first_seed + n_seeds):
                for name, (config, extra) in methods.items():
                    save = run(s, config, f"{task}/{slug(name)}/{p}-{seed}", [f"system.prompt_processor.prompt={prompt!r}",
                               f"seed={seed}", *T2N_SIZE, *extra], steps=n_steps, model_fields=NERF_MODEL_FIELDS,
                               val_every=every, marker=f"it{n_steps}-test.mp4")
                    grids = sorted((save / f"it{n_steps}-test").glob("*.png"), key=lambda q: int(q.stem))
                    views = test_views[name, p, seed] = render_views(grids)
                    evals = logged_unet_evals(save)
                    out.append({"method": name, "scene": f"{p}-{seed}", "prompt": prompt, "unet_evals": evals[n_steps],
                                **read_object_views(s, views, prompt),
                                "saturation_vs_world": saturation(views, render_views(grids, 2)) / world_saturation(prompt.split()[1])})
                    curves[name].append([{"step": k, "unet_evals": evals[k], **read_object_views(s, render_views(
                        sorted(save.glob(f"it{k}-[0-9].png"))), prompt)} for k in range(every, n_steps + 1, every)])
                    if seed == first_seed:
                        row.append(views[:1])
            figure.append(row)
        for r in out:  # per-pixel std across seeds of the same prompt's test views, mean over views and pixels
            p = int(r["scene"].split("-")[0])
            seeds_views = torch.stack([test_views[r["method"], p, k] for k in range(first_seed, first_seed + n_seeds)])
            r["seed_spread"] = float(seeds_views.std(0).mean()) if n_seeds > 1 else float("nan")
        save_accuracy_curves(s.out / f"{task}-curves.png", curves)
        return out, figure, list(methods)

    return rows


def save_accuracy_curves(path: Path, curves: Dict[str, List[List[dict]]]) -> None:
    """Mean shape and colour accuracy of the validation views against UNet evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, runs in curves.items():
        x = [np.mean([r[k]["unet_evals"] for r in runs]) for k in range(len(runs[0]))]
        for ax, key in zip(axes, ("shape_ok", "colour_ok")):
            ax.plot(x, [np.mean([r[k][key] for r in runs]) for k in range(len(x))], marker="o", label=name)
    for ax, key in zip(axes, ("shape", "colour")):
        ax.set_xlabel("UNet evaluations")
        ax.set_ylabel(f"{key} read right (4 validation views)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TASKS: Dict[str, Callable] = {"inpaint": inpaint, "edit": edit, "restore-blur": restore("restore-blur"),
                              "restore-x4": restore("restore-x4"), "nerf-blur": nerf("nerf-blur"), "nerf-x4": nerf("nerf-x4"),
                              "svg-blur": svg("svg-blur"), "svg-x8": svg("svg-x8"), "text-to-image": text_to_image,
                              "text-to-nerf": text_to_nerf("text-to-nerf"),
                              "text-to-nerf-heldout": text_to_nerf("text-to-nerf-heldout", first_seed=3, names=[
                                  "dreamsampler (shipped config: unconditional noise carried)", "dreamsampler, guided noise carried (alg. 2)",
                                  "sds (-sds variant)"]),
                              "text-to-nerf-peers": text_to_nerf("text-to-nerf-peers", table=t2n_peer_methods, prompts=T2N_PEER_PROMPTS),
                              "text-to-nerf-long": text_to_nerf("text-to-nerf-long", steps=T2N_LONG_STEPS, seeds=1, val_every=100,
                                                                names=["dreamsampler, guided noise carried (alg. 2)", "sds (-sds variant)"])}
QUICK_TASKS = ("restore-blur",)


# ---------------------------------------------------------------------------------------------- output


def summarize(rows: List[dict]) -> List[dict]:
    """Mean over scenes per method; booleans become accuracies."""
    by = defaultdict(list)
    for r in rows:
        by[r["method"]].append(r)
    out = []
    for method, rs in by.items():
        agg = {"method": method, "scenes": len(rs)}
        for key in rs[0]:
            if key in ("method", "scene", "prompt"):
                continue
            agg[key] = float(np.mean([float(r[key]) for r in rs]))
        out.append(agg)
    return out


def save_figure(path: Path, figure: List[List[torch.Tensor]], columns: List[str]) -> None:
    from PIL import Image, ImageDraw

    size, head = 96, 40
    sheet = Image.new("RGB", (size * len(columns), head + size * len(figure)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        words, line, lines = name.split(), "", []
        for w in words:  # wrap the column title into 64 px lines
            if len(line) + len(w) > 14 and line:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        draw.multiline_text((j * size + 2, 0), "\n".join(lines + [line])[:60], fill="black", spacing=0)
    for i, row in enumerate(figure):
        for j, img in enumerate(row):
            big = F.interpolate(img, size=size, mode="nearest")
            sheet.paste(Image.fromarray(to_uint8(big[0])), (j * size, head + i * size))
    sheet.save(path)


def cell(key: str, value) -> str:
    """Accuracies to 3 decimals, other floats to 2."""
    if isinstance(value, float):
        return f"{value:.3f}" if key.endswith("_ok") else f"{value:.2f}"
    return str(value)


def markdown(table: Dict[str, List[dict]]) -> str:
    lines = []
    for task, rows in table.items():
        keys = list(dict.fromkeys(k for r in rows for k in r if k != "method"))
        lines += [f"**{task}**", "", "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in rows:
            cells = [cell(k, r.get(k, "")) for k in keys]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- results pages


def git_commit(repo: Path = REPO) -> str:
    """The checkout's short commit, with ``+modified`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" +modified" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> Dict[str, str]:
    """What the numbers were measured on."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu_model(), "cores": str(os.cpu_count()), "threads": str(torch.get_num_threads()), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(), "os": f"{platform.system()} {platform.machine()}"}


def run_commits(roots: List[Path]) -> Dict[str, int]:
    """How many of the run folders ``roots`` each commit computed (``run.json``; older runs: unrecorded)."""
    counts: Dict[str, int] = defaultdict(int)
    for root in dict.fromkeys(roots):
        record = root / "run.json"
        counts[json.loads(record.read_text())["commit"] if record.exists() else "unrecorded"] += 1
    return dict(counts)


def results_page(task: str, rows: List[dict], provenance: dict, figures: List[str]) -> str:
    """The Markdown page of one task: its table, figures, and how, where and when it was measured."""
    p = provenance
    runs = p["runs"]
    lines = [f"# {task}", "", f"Written by `benchmarks/quality.py` on {p['date']}; do not edit by hand: rerun the "
             "command below.", "", markdown({task: rows}).split("\n", 2)[2].rstrip(), ""]
    lines += [f"![{task}: {name}]({name})" for name in figures] + ([""] if figures else [])
    lines += ["| | |", "|---|---|", f"| command | `{p['command']}` |", f"| commit | `{p['commit']}` |",
              f"| date | {p['date']} |"]
    lines += [f"| {key} | {value} |" for key, value in p["machine"].items()]
    lines += [f"| wall time | {p['seconds']} s (this task, this invocation) |",
              f"| runs | {runs['used']} run folders: {runs['computed']} computed by this invocation, "
              f"{runs['used'] - runs['computed']} read from `--out`'s cache"
              + "".join(f"; {n} computed at `{c}`" for c, n in sorted(runs["commits"].items())) + " |",
              f"| settings | {', '.join(f'{k} {v}' for k, v in p['settings'].items())} |", ""]
    return "\n".join(lines)


def write_results_page(results: Path, task: str, rows: List[dict], provenance: dict, out: Path) -> Path:
    """``<results>/<task>.md`` and the task's figures from ``out`` (``<task>.png``, ``<task>-curves.png``)
    copied next to it."""
    results.mkdir(parents=True, exist_ok=True)
    figures = []
    for name in (f"{task}.png", f"{task}-curves.png"):
        if (out / name).exists():
            shutil.copyfile(out / name, results / name)
            figures.append(name)
    page = results / f"{task}.md"
    page.write_text(results_page(task, rows, provenance, figures))
    return page


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one icon, the fastest task only (about 5 minutes)")
    ap.add_argument("--out", default="outputs/quality")
    ap.add_argument("--tasks", default=None, help=f"comma-separated subset of {','.join(TASKS)}")
    ap.add_argument("--scenes", type=int, default=None)
    ap.add_argument("--nfe", type=int, default=None)
    ap.add_argument("--results", default=None, help="folder of the results pages (default docs/results; with --quick "
                    "none unless given; '' for none)")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "benchmarks/quality.py", *(a.replace(f"{REPO}{os.sep}", "")
                                                              for a in (sys.argv[1:] if argv is None else argv))])
    results = args.results if args.results is not None else ("" if args.quick else str(REPO / "docs" / "results"))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    names = args.tasks.split(",") if args.tasks else list(QUICK_TASKS if args.quick else TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"--tasks: unknown task(s) {unknown}; known: {list(TASKS)}")
    s = Settings(out=Path(args.out).resolve(), scenes=args.scenes or (1 if args.quick else 5),
                 nfe=args.nfe or 200, quick=args.quick)
    s.out.mkdir(parents=True, exist_ok=True)
    saved = s.out / "quality.json"  # tasks measured earlier in this folder stay in the table
    table, start = (json.loads(saved.read_text())["table"] if saved.exists() else {}), time.time()
    for name in names:
        print(f"[quality] {name}", flush=True)
        t0, s.runs_used, s.runs_computed = time.time(), [], 0
        rows, figure, columns = TASKS[name](s)
        table[name] = summarize(rows)
        (s.out / f"{name}.json").write_text(json.dumps({"rows": rows, "summary": table[name]}, indent=1))
        save_figure(s.out / f"{name}.png", figure, columns)
        print(markdown({name: table[name]}), f"({time.time() - t0:.0f} s)", flush=True)
        if results:
            page = write_results_page(Path(results), name, table[name], {
                "command": command, "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": machine(), "seconds": round(time.time() - t0),
                "runs": {"used": len(set(s.runs_used)), "computed": s.runs_computed, "commits": run_commits(s.runs_used)},
                "settings": {"scenes": s.scenes, "nfe": s.nfe, "model": "dreamsampler/world/mini-sd"}}, s.out)
            print(f"[quality] results page {page}", flush=True)
    if saved.exists():  # another invocation on the same --out may have finished tasks meanwhile: keep them
        table = {**json.loads(saved.read_text())["table"], **{name: table[name] for name in names}}
    table = {k: table[k] for k in TASKS if k in table}
    meta = {"tasks": names, "scenes": s.scenes, "nfe": s.nfe, "quick": s.quick, "seconds": round(time.time() - start),
            "model": "dreamsampler/world/mini-sd", "threads": torch.get_num_threads()}
    saved.write_text(json.dumps({"meta": meta, "table": table}, indent=1))
    (s.out / "quality.md").write_text(markdown(table) + f"\n{meta}\n")
    print(f"[quality] {meta['seconds']} s; table in {s.out / 'quality.md'}")
    return table


if __name__ == "__main__":
    main()
