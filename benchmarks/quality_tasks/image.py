"""The 2D tasks on held-out world icons: restoration (supp. Alg. 4 without a mask, eq. 15), text-guided
inpainting (Alg. 4) and editing (Alg. 3)."""
from __future__ import annotations

import functools
import json
from typing import Dict

import torch
import torch.nn.functional as F

from dreamsampler.diffusion.schedules import ReverseSchedule
from dreamsampler.image.inpainting import GAMMA_PERIOD, GAMMA_T_MAX, in_gamma_set
from dreamsampler.image_io import rect_mask
from dreamsampler.inverse.cg import data_consistency_solve
from dreamsampler.inverse.operators import build_operator
from dreamsampler.metrics import masked_psnr
from dreamsampler.world import MINI_SD, icon_caption

from .common import (DEGRADED, OPERATORS, Method, Scene, Settings, Task, image_scores, other_colour, quantized,
                     read_at, read_png, rect_of, row, run, scenes)

REGIONS = "system.regions=[{{prompt: {prompt!r}, rect: {rect}}}]"  # the box's prompt (eq. 19), filled per scene
RESTORE_METHODS = (  # the runs' folders predate slug(label): named here
    Method("dreamsampler", "dreamsampler", "dreamsampler-restore", folder="dreamsampler"),
    Method("dps-only", "dps only, init noise", "dreamsampler-restore", ("system.init=noise", "system.gamma_t_max=-1"),
           folder="dps-only"),
    Method("init-noise", "dreamsampler, init noise", "dreamsampler-restore", ("system.init=noise",), folder="init-noise"),
    Method("dc-only", "data consistency only"),  # the CG solution of supp. eq. 13 with x_ref = 0, computed here
)
INPAINT_METHODS = (
    Method("dreamsampler", "dreamsampler (Gamma on t)", "dreamsampler-inpaint"),
    Method("gamma-step-index", "dreamsampler (Gamma on step index)", "dreamsampler-inpaint",
           ("system.gamma_on_step_index=true",)),
    Method("dps-only", "dps only", "dreamsampler-inpaint", ("system.gamma_t_max=-1",)),
)
EDIT_CFG = 4.0  # the mini model's sampling scale (its model card); 7.5 breaks the inversion further
EDIT_METHODS = (
    Method("dreamsampler", "dreamsampler", "dreamsampler-edit", ("system.prompt={prompt!r}",), folder="dreamsampler"),
    Method("localized", "dreamsampler localized (eq. 19)", "dreamsampler-edit", (REGIONS,), folder="localized"),
    Method("ddim-cfg", f"ddim inversion + cfg {EDIT_CFG:g}"),  # diffusers' inversion and sampling, computed here
)


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


def method_unet_evals(nfe: int, m: Method) -> int:
    """:func:`alg4_unet_evals` of a method's run with one target, as its overrides set ``system.init``,
    ``system.gamma_t_max`` and ``system.gamma_on_step_index`` (the configs' inversion, ``GAMMA_T_MAX`` and Gamma
    on t otherwise); 0 for a baseline computed here."""
    if not m.config:
        return 0
    o = dict(x.split("=", 1) for x in m.overrides)
    return alg4_unet_evals(nfe, 1, o.get("system.init", "inversion") != "noise", int(o.get("system.gamma_t_max", GAMMA_T_MAX)),
                           o.get("system.gamma_on_step_index", "false") == "true")


def restore(task: str) -> Task:
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
            results = {}
            for m in RESTORE_METHODS:
                if m.config:
                    results[m] = read_png(run(s, m.config, m.where(task, sc.index), base + m.args()) / "result.png")
                else:  # data consistency only
                    results[m] = quantized(
                        (data_consistency_solve(op, y, torch.zeros_like(sc.image), lam=1e-4, iters=50) / 2 + 0.5).clamp(0, 1))
            out.append(row(DEGRADED, sc.index, unet_evals=0, **image_scores(
                F.interpolate((y / 2 + 0.5).clamp(0, 1), size=64, mode="bicubic").clamp(0, 1), sc.image)))
            for m, img in results.items():
                out.append(row(m, sc.index, unet_evals=method_unet_evals(s.nfe, m), **image_scores(img, sc.image)))
            figure.append([shown, *results.values(), sc.image])
        return out, figure, ["input", *(m.label for m in RESTORE_METHODS), "ground truth"]

    return Task(RESTORE_METHODS, rows)


def recolour(sc: Scene):
    """The box around the icon's shape, the target (next colour of the palette, same shape) and its caption."""
    target = (other_colour(sc.attrs.colours[0]), sc.attrs.shapes[0])
    return rect_of(sc.attrs), target, icon_caption([target[0]], [target[1]])


def recolour_row(s: Settings, method: Method, sc: Scene, img: torch.Tensor, unet_evals: int) -> dict:
    """One scene's scores for a recolouring task: the target read inside the box, PSNR to the source outside it."""
    rect, target, prompt = recolour(sc)
    got = read_at(s, img, rect)
    return row(method, sc.index, prompt=prompt, unet_evals=unet_evals, colour_ok=got["colour"] == target[0],
               shape_ok=got["shape"] == target[1],
               psnr_outside=masked_psnr(img, sc.image, 1 - rect_mask(rect, 64, 64, "rect")[None]))


def inpaint(task: str = "inpaint") -> Task:
    """Text-guided inpainting (Alg. 4): the shape's box masked, the prompt asks for another colour."""

    def rows(s: Settings):
        out, figure = [], []
        for sc in scenes(s):
            rect, _, prompt = recolour(sc)
            base = [f"system.image={sc.path}", REGIONS.format(prompt=prompt, rect=rect)]
            keep = 1 - rect_mask(rect, 64, 64, "rect")[None]
            shown = [sc.image * keep + 0.5 * (1 - keep)]
            for m in INPAINT_METHODS:
                img = read_png(run(s, m.config, m.where(task, sc.index), base + m.args()) / "result.png")
                out.append(recolour_row(s, m, sc, img, method_unet_evals(s.nfe, m)))
                shown.append(img)
            figure.append(shown + [sc.image])
        return out, figure, ["masked input", *(m.label for m in INPAINT_METHODS), "source"]

    return Task(INPAINT_METHODS, rows)


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


def edit(task: str = "edit") -> Task:
    """Editing (Alg. 3): `a red circle` -> `a blue circle`, global and localized (eq. 19), vs DDIM inversion + CFG."""

    def rows(s: Settings):
        out, figure = [], []
        for sc in scenes(s):
            rect, _, prompt = recolour(sc)
            results: Dict[Method, torch.Tensor] = {}
            for m in EDIT_METHODS:
                if m.config:
                    results[m] = read_png(run(s, m.config, m.where(task, sc.index),
                                              [f"system.image={sc.path}", *m.args(prompt=prompt, rect=rect)]) / "result.png")
                else:  # DDIM inversion + CFG
                    results[m] = ddim_inversion_edit(sc.image, prompt, s.nfe, EDIT_CFG)
            # each: NFE inversion steps, then NFE steps of 2 predictions
            out += [recolour_row(s, m, sc, img, 3 * s.nfe) for m, img in results.items()]
            figure.append([sc.image, *results.values()])
        return out, figure, ["source", *(m.label for m in EDIT_METHODS)]

    return Task(EDIT_METHODS, rows)
