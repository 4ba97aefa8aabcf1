"""NeRF from degraded views (supp. eq. 18-19) on held-out world objects: ``nerf-blur``, ``nerf-x4``, ``nerf-x8`` and
``nerf-inconsistent`` (the paper's own data condition: 16 generated views that are not exactly one object, then
blurred; ``dreamsampler.world.scenes.Inconsistency``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

from dreamsampler.world import MINI_SD, SPLIT_OFFSETS
from dreamsampler.world.scenes import Inconsistency, make_object_scene

from .common import DEGRADED, NERF_MODEL_FIELDS, OPERATORS, REPO, Method, Settings, Task, pick, read_png, row, run
from .results import save_curves

NERF_SEED = SPLIT_OFFSETS["eval"] + 800_000  # held-out objects of this benchmark (eval split)
MINI_SD_CFG = 3.0  # the mini model's sampling scale (its model card's rule)
# task: (operator, inconsistency of the views before it)
NERF_CONDITIONS = {"nerf-blur": (OPERATORS["restore-blur"][0], None), "nerf-x4": (OPERATORS["restore-x4"][0], None),
                   "nerf-x8": ({"type": "downsample", "factor": 8}, None),
                   "nerf-inconsistent": (OPERATORS["restore-blur"][0], Inconsistency())}
NERF_METHODS = (  # schedule: see nerf_schedule; unet_per_step: after the warm-up
    Method("warmup", "warm-up alone", "dreamsampler-degraded-nerf", schedule="warmup"),
    Method("dreamsampler", "dreamsampler (eq. 18-19, shipped)", "dreamsampler-degraded-nerf", unet_per_step=2,
           schedule="eq18"),
    Method("dreamsampler-rule", "dreamsampler (settings by rule, start raised by the warm-up's residual)",
           "dreamsampler-degraded-nerf", ("{rule}",), unet_per_step=2, schedule="eq18"),
    Method("dreamsampler-rule-fixed-start", "dreamsampler (settings by rule)", "dreamsampler-degraded-nerf",
           ("{rule}", "system.start_from_residual=false"), unet_per_step=2, schedule="eq18"),
    Method("dreamsampler-targets", "dreamsampler (consistent one-step targets, settings by rule)",
           "dreamsampler-degraded-nerf", ("{rule}", "system.prior=consistent-targets", "data.novel_view_prob=0"),
           schedule="eq18"),  # UNet evaluations: once, at the warm-up's end (save/view-targets.json)
    Method("dreamsampler-targets-4", "dreamsampler (consistent targets remade 4 times, settings by rule)",
           "dreamsampler-degraded-nerf", ("{rule}", "system.prior=consistent-targets", "system.target_rounds=4",
                                          "data.novel_view_prob=0"), schedule="eq18"),
    Method("dc-only", "data consistency only", "dreamsampler-degraded-nerf", schedule="data"),
    Method("sds", "sds as eq. 18's prior", "variants/degraded-nerf-sds", unet_per_step=2, schedule="eq18"),
    Method("sds-rule", "sds as eq. 18's prior (settings by rule)", "variants/degraded-nerf-sds", ("{rule}",),
           unet_per_step=2, schedule="eq18"),
)
# the rows run by default (CPU time; the others: pass ids)
NERF_IDS = ("warmup", "dc-only", "dreamsampler-rule", "dreamsampler-targets", "dreamsampler-targets-4")


def rule_settings(s: Settings, task: str) -> List[str]:
    """The mini model's prior settings for the task's operator at the render size, from
    ``scripts/prior_settings.py`` (the model's own samples of the world's 20 object captions; no scene): cached in
    ``<out>/prior-settings-<task>.json``."""
    path = s.out / f"prior-settings-{task}.json"
    if not path.exists():
        spec = NERF_CONDITIONS[task][0]
        cmd = [sys.executable, str(REPO / "scripts" / "prior_settings.py"), "--model", MINI_SD, "--cfg", str(MINI_SD_CFG),
               "--operator", json.dumps(spec), "--render-size", str(s.nerf_size), "--world", "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
        path.write_text(proc.stdout.strip().splitlines()[-1])
    return [f"{k}={v}" for k, v in json.loads(path.read_text())["overrides"].items()]


def scene_overrides(s: Settings, info: dict, dataroot: str, spec: dict) -> List[str]:
    """The data and NeRF-size overrides of a run on a scene (``make_object_scene``'s ``info``) whose views in
    ``dataroot`` were measured by ``spec``."""
    return [f"data.dataroot={dataroot}", f"data.gt_root={info['clean']}", f"data.heldout_root={info['heldout']}",
            f"data.caption={info['caption']!r}", "data.operator=" + json.dumps(spec).replace('"', ""),
            f"system.renderer.num_samples_per_ray={s.nerf_samples}", "system.geometry.pos_encoding_config.n_levels=8",
            "system.geometry.pos_encoding_config.log2_hashmap_size=15", "data.n_val_views=16", "data.n_test_orbit_views=8"]


def nerf_schedule(s: Settings, m: Method) -> Tuple[int, int]:
    """(warm-up steps, total steps) of a method's run: ``warmup`` the warm-up alone, ``eq18`` the warm-up then
    ``s.nerf_steps`` steps of eq. 18, ``data`` the warm-up's data term for as many steps (it never ends)."""
    warm, total = s.nerf_warmup, s.nerf_warmup + s.nerf_steps
    return {"warmup": (warm, warm), "eq18": (warm, total), "data": (total, total)}[m.schedule]


def nerf_curve(save: Path, warmup: int, unet_per_step: int) -> List[dict]:
    """PSNR / SSIM of the 16 data views at every validation of a run, with the UNet evaluations spent so far."""
    points = []
    for path in save.glob("it*-val/metrics.json"):
        m = json.loads(path.read_text())
        points.append({"step": m["step"], "unet_evals": max(0, m["step"] - warmup) * unet_per_step, **m["renders"]})
    return sorted(points, key=lambda p: p["step"])


def nerf(task: str, ids=NERF_IDS) -> Task:
    """NeRF from degraded views (supp. eq. 18-19) on world objects: the shipped config with the prior's settings by
    rule (``rule_settings``; its start raised at run time by the warm-up's residual, and without that) against
    the warm-up alone, data consistency only for the same steps and SDS as eq. 18's prior (``ids`` of
    ``NERF_METHODS``), scored on the 16 data views and on 8 held-out views (``dreamsampler.world.scenes``)."""
    spec, inconsistency = NERF_CONDITIONS[task]
    picked = pick(NERF_METHODS, ids)

    def rows(s: Settings):
        out, figure, curves = [], [], {}
        for i in range(s.nerf_scenes):
            info = make_object_scene(str(s.out / "scenes" / f"{task}-{i}"), NERF_SEED + i, s.nerf_size, spec,
                                     inconsistency=inconsistency)
            base = scene_overrides(s, info, info["degraded"], spec)
            renders = []
            for m in picked:
                w, steps = nerf_schedule(s, m)
                extra = m.args(rule=lambda: rule_settings(s, task))  # "{rule}" stands for its overrides
                save = run(s, m.config, m.where(task, i), base + [f"system.warmup_steps={w}", *extra], steps=steps,
                           model_fields=NERF_MODEL_FIELDS, val_every=s.nerf_val_every)
                metrics = json.loads((save / "metrics.json").read_text())
                if not renders:
                    out.append(row(DEGRADED, i, unet_evals=0, psnr=metrics["degraded_input"]["psnr"],
                                   ssim=metrics["degraded_input"]["ssim"]))
                targets = save / "view-targets.json"
                evals = json.loads(targets.read_text())["unet_evals"] if targets.exists() else (steps - w) * m.unet_per_step
                out.append(row(m, i, unet_evals=evals, psnr=metrics["renders"]["psnr"],
                               ssim=metrics["renders"]["ssim"], heldout_psnr=metrics["heldout"]["psnr"],
                               heldout_ssim=metrics["heldout"]["ssim"]))
                curves.setdefault(m.label, []).append(nerf_curve(save, w, m.unet_per_step))
                # data view 0 saved as render | A(render) | y | ground truth, each column at the render size
                grid = read_png(save / f"it{steps}-views" / "0.png")
                renders.append(grid[..., : s.nerf_size])
            size = s.nerf_size
            figure.append([grid[..., 2 * size: 3 * size], *renders, grid[..., 3 * size: 4 * size]])
        save_curves(s.out / f"{task}-curves.png", curves, x="step", panels=[("psnr", "PSNR of the 16 data views (dB)")],
                    xlabel="training step (eq. 18: 2 UNet evaluations a step after the warm-up; targets: 32 a round)",
                    title=task, figsize=(6, 4))
        return out, figure, ["degraded view", *(m.label for m in picked), "ground truth"]

    return Task(picked, rows)
