"""What the degraded-view NeRF's prior has to offer on the benchmark's scenes: the PSNR, against the clean
views, of the one-step estimates D(z0^) (supp. eq. 19's pixel target; z0^ the Tweedie estimate of CFG's eps,
eq. 18's latent target) that the prior pulls the warm-up's renders toward, at the timesteps its reverse
schedule visits, next to the PSNR of the renders themselves.

Read from ``quality.py``'s cache (``--out``): each task's warm-up-alone runs (the 16 data views' renders and
clean views in ``it<N>-views/``), its scenes' captions and its rule settings (``prior-settings-<task>.json``: the
CFG and the schedule's start). For every timestep on the schedule's grid the renders are encoded as the guidance
encodes them (resized to the model's size), noised with ``--draws`` fresh draws, denoised in one CFG step and
decoded; "from the clean view" does the same to the clean view, the best any render could give the prior. A
target scoring below the render pulls the NeRF away from the object, one above it is what the prior can add.

    python benchmarks/prior_targets.py --out outputs/quality-v5 --tasks nerf-x8,nerf-inconsistent,nerf-x4,nerf-blur

writes ``docs/results/prior-targets.md`` (``--page``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import yaml

from dreamsampler.diffusion.latent_model import LatentModel
from dreamsampler.distill import guided_prediction
from dreamsampler.inverse.operators import build_operator
from dreamsampler.inverse.prior_settings import consistent_with
from dreamsampler.inverse.view_targets import one_step_estimates
from dreamsampler.metrics import psnr
from dreamsampler.world import MINI_SD

from quality_tasks.common import NERF_MODEL_FIELDS, REPO, Settings, cached_image, command_line, read_png, run
from quality_tasks.nerf import MINI_SD_CFG, scene_overrides

# where the degraded-view config's reverse schedule ends
MIN_STEP_PERCENT = yaml.safe_load((REPO / "configs" / "dreamsampler-degraded-nerf.yaml").read_text())[
    "system"]["guidance"]["min_step_percent"]


def rule(out: Path, task: str) -> Tuple[float, int]:
    """(CFG, the schedule's start timestep) of ``task``'s rule settings (``prior-settings-<task>.json``)."""
    settings = json.loads((out / f"prior-settings-{task}.json").read_text())
    return float(settings["overrides"].get("system.guidance.guidance_scale", MINI_SD_CFG)), int(settings["start_timestep"])


def scene_info(out: Path, task: str, scene: int) -> dict:
    """``make_object_scene``'s record of ``task``'s scene ``scene`` (caption, folders, operator)."""
    return json.loads((out / "scenes" / f"{task}-{scene}" / "scene.json").read_text())


def warmup_views(out: Path, task: str, scene: int) -> Dict[str, tuple]:
    """{"data": (renders, clean views) ``[16, 3, S, S]``, "held-out": (renders, clean views) ``[8, 3, S, S]``} of
    the warm-up-alone run of ``task``'s scene ``scene``: the first and last columns of its saved grids
    (``<i>.png``: render | A(render) | y | ground truth; ``heldout-<i>.png``: render | ground truth)."""
    save = next((out / "runs" / task / "warm-up-alone" / str(scene)).glob("*/*/save"))
    folder = save / f"it{json.loads((save / 'metrics.json').read_text())['step']}-views"
    views = {}
    for name, pattern in (("data", "[0-9]*.png"), ("held-out", "heldout-*.png")):
        grids = [read_png(p) for p in sorted(folder.glob(pattern), key=lambda p: int(p.stem.split("-")[-1]))]
        size = grids[0].shape[-2]
        views[name] = torch.cat([g[..., :size] for g in grids]), torch.cat([g[..., -size:] for g in grids])
    return views


REFIT = ("refit to one-step targets (16 data views)", "refit-to-one-step-targets")
REFIT_PROJECTED = ("refit to the targets made consistent with y", "refit-to-targets-consistent-with-y")


def write_target_views(model: LatentModel, out: Path, task: str, scene: int, t: int, scale: float,
                       generator: torch.Generator) -> Dict[bool, Path]:
    """The frozen targets a NeRF is refitted to, as folders with the data views' cameras (the degraded folder's
    ``transforms.json``), kept for later calls: ``<out>/refit/<task>-<scene>/`` (``False``), the prior's one-step
    estimates of the warm-up's renders of the views at ``t`` (one draw each, drawn on every call so that the draws
    do not depend on what is kept), and ``<out>/refit-consistent/<task>-<scene>/`` (``True``), each estimate
    replaced by the image nearest it whose measurement is the view's y (``consistent_with``, supp. eq. 13)."""
    info = scene_info(out, task, scene)
    transforms = json.loads((Path(info["degraded"]) / "transforms.json").read_text())
    names = [Path(frame["file_path"]).name for frame in transforms["frames"]]
    renders, clean = warmup_views(out, task, scene)["data"]
    for i, name in enumerate(names):
        if (read_png(Path(info["clean"]) / name)[0] - clean[i]).abs().max() > 1.5 / 255:
            raise RuntimeError(f"{task} scene {scene}: data view {i}'s saved ground truth is not {name}")
    targets = one_step_targets(model, renders, info["caption"], t, scale, generator)
    folders = {False: out / "refit" / f"{task}-{scene}", True: out / "refit-consistent" / f"{task}-{scene}"}
    for project, folder in folders.items():
        if (folder / "transforms.json").exists():
            continue
        images = targets
        if project:
            y = torch.cat([read_png(Path(info["degraded"]) / name) for name in names])
            images = consistent_with(y, build_operator(info["operator"]), targets)
        for i, name in enumerate(names):
            cached_image(folder / name, lambda: images[i: i + 1])
        (folder / "transforms.json").write_text(json.dumps(transforms))
    return folders


def refit(model: LatentModel, out: Path, task: str, scenes: int, seed: int) -> None:
    """NeRFs fitted from scratch to :func:`write_target_views`' folders (identity A, data consistency only, as long
    as the quality runs: ``runs/<task>/<REFIT or REFIT_PROJECTED folder>/<scene>``, cached)."""
    scale, start = rule(out, task)
    s, g = Settings(out=out, scenes=scenes, nfe=0, quick=False), torch.Generator().manual_seed(seed)
    steps = s.nerf_warmup + s.nerf_steps
    for i in range(scenes):
        folders = write_target_views(model, out, task, i, start, scale, g)
        info = scene_info(out, task, i)
        for (_, where), project in ((REFIT, False), (REFIT_PROJECTED, True)):
            run(s, "dreamsampler-degraded-nerf", f"{task}/{where}/{i}",
                scene_overrides(s, info, str(folders[project]), {"type": "identity"}) + [f"system.warmup_steps={steps}"],
                steps=steps, model_fields=NERF_MODEL_FIELDS, val_every=s.nerf_val_every)


RUNS = (("warm-up alone", "warm-up-alone"), ("dreamsampler (settings by rule)", "dreamsampler-settings-by-rule"),
        ("dreamsampler (settings by rule, residual start)",
         "dreamsampler-settings-by-rule-start-raised-by-the-warm-ups-residual"),
        ("data consistency only", "data-consistency-only"), REFIT, REFIT_PROJECTED)  # run folders: quality.py's NeRF tasks', then this script's refits


def heldout_psnr(out: Path, task: str, folder: str, scenes: int) -> Optional[List[float]]:
    """The held-out PSNR that the cached runs of ``task`` (``runs/<task>/<folder>/<scene>``) ended with, per scene
    (None when the task does not run that method)."""
    found = [next((out / "runs" / task / folder / str(i)).glob("*/*/save/metrics.json"), None) for i in range(scenes)]
    return None if None in found else [json.loads(m.read_text())["heldout"]["psnr"] for m in found]


def load_model(path: str) -> LatentModel:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    return LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)


@torch.no_grad()
def one_step_targets(model: LatentModel, images: torch.Tensor, caption: str, t: int, scale: float,
                     generator: torch.Generator) -> torch.Tensor:
    """D(z0^) at ``t`` for ``images`` ``[V, 3, S, S]`` in [0, 1] (``view_targets.one_step_estimates`` with one CFG
    step of ``model`` at ``scale``)."""
    null, cond = model.text(["", caption]).chunk(2)
    v, ts = len(images), torch.full((len(images),), t)
    eps = lambda z_t: guided_prediction(model.eps, z_t, ts, cond.expand(v, -1, -1), null.expand(v, -1, -1), scale)
    return one_step_estimates(images, model.alphas_cumprod[t], lambda x: model.encode(x * 2 - 1), eps,
                              lambda z: (model.decode(z) / 2 + 0.5).clamp(0, 1), model.resolution, generator)


def repeated_targets(model: LatentModel, images: torch.Tensor, clean: torch.Tensor, caption: str, t: int, scale: float,
                     generator: torch.Generator, times: int) -> List[float]:
    """PSNR against ``clean`` of :func:`one_step_targets` applied to its own output 1, 2, ... ``times`` times (fresh
    noise each time): where the loop render -> target -> render settles when the NeRF follows its targets."""
    scores = []
    for _ in range(times):
        images = one_step_targets(model, images, caption, t, scale, generator)
        scores.append(psnr(images, clean).mean().item())
    return scores


def schedule_grid(start: int, n: int = 5) -> List[int]:
    """``n`` timesteps from the schedule's start down to its end (``MIN_STEP_PERCENT``), evenly spaced."""
    end = round(MIN_STEP_PERCENT * 999)
    return sorted({round(start + (end - start) * k / (n - 1)) for k in range(n)}, reverse=True)


def task_rows(model: LatentModel, out: Path, task: str, scenes: int, draws: int, seed: int) -> List[Dict]:
    """One row per view set and timestep on the rule's schedule: per scene, the renders' PSNR and their targets'
    (means over the views and draws)."""
    scale, start = rule(out, task)
    scenes_views = [warmup_views(out, task, i) for i in range(scenes)]
    captions = [scene_info(out, task, i)["caption"] for i in range(scenes)]
    g = torch.Generator().manual_seed(seed)
    rows = []
    for views in ("data", "held-out"):
        pairs = [v[views] for v in scenes_views]
        for t in schedule_grid(start):
            row = {"task": task, "views": views, "t": t, "cfg": scale, "captions": captions,
                   "render": [], "target_from_render": [], "target_from_clean": []}
            for (renders, clean), caption in zip(pairs, captions):
                row["render"].append(psnr(renders, clean).mean().item())
                for name, images in (("target_from_render", renders), ("target_from_clean", clean)):
                    row[name].append(torch.stack([psnr(one_step_targets(model, images, caption, t, scale, g), clean).mean()
                                                  for _ in range(draws)]).mean().item())
            rows.append(row)
    return rows


def repeated_rows(model: LatentModel, out: Path, task: str, scenes: int, times: int, seed: int) -> Dict:
    """:func:`repeated_targets` of the held-out renders, per scene, at the middle of the rule's schedule."""
    scale, start = rule(out, task)
    grid = schedule_grid(start)
    t, g = grid[len(grid) // 2], torch.Generator().manual_seed(seed)
    per_scene = []
    for i in range(scenes):
        renders, clean = warmup_views(out, task, i)["held-out"]
        per_scene.append(repeated_targets(model, renders, clean, scene_info(out, task, i)["caption"], t, scale, g, times))
    return {"task": task, "t": t, "per_scene": per_scene}


def page(rows: List[Dict], repeated: List[Dict], runs: Dict[str, Dict[str, List[float]]], command: str,
         seconds: float) -> str:
    per_scene = lambda v: " / ".join(f"{x:.2f}" for x in v) + f" ({sum(v) / len(v):.2f})"
    lines = ["# prior-targets", "",
             "Written by `benchmarks/prior_targets.py`; do not edit by hand: rerun the command below.", "",
             "PSNR (dB) against the clean views, per scene (their mean in brackets), over each scene's 16 data views or "
             "8 held-out views: the warm-up's render, and the prior's one-step estimate D(z0^) at timestep t (one CFG "
             "step at the rule's scale, fresh noise) from the render and from the clean view. The t column runs the "
             "rule's reverse schedule from its start to its end. Scenes:", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        lines.append(f"- {task}: " + ", ".join(next(r["captions"] for r in rows if r["task"] == task)))
    lines += ["", "| task | views | CFG | t | warm-up render | D(z0^) from the render | D(z0^) from the clean view |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['views']} | {r['cfg']:g} | {r['t']} | {per_scene(r['render'])} | "
              f"{per_scene(r['target_from_render'])} | {per_scene(r['target_from_clean'])} |" for r in rows]
    times = len(repeated[0]["per_scene"][0]) if repeated else 0
    lines += ["", "The same one-step estimate applied again to its own output, k times (fresh noise each time), from the "
              "held-out renders at the schedule's middle t: where the loop render -> target -> render goes when the "
              "NeRF follows its targets.", "",
              "| task | t | " + " | ".join(f"k = {k + 1}" for k in range(times)) + " |", "|---|---|" + "---|" * times]
    lines += [f"| {r['task']} | {r['t']} | " + " | ".join(per_scene([s[k] for s in r["per_scene"]]) for k in range(times))
              + " |" for r in repeated]
    lines += ["", "What the runs of `benchmarks/quality.py` ended with on the same scenes (held-out PSNR, per scene and "
              "mean), and a NeRF fitted from scratch for as many steps to the one-step estimates of the warm-up's 16 "
              "data-view renders at the schedule's start (one draw each, identity A, data consistency only; written "
              "under `<out>/refit/`, runs under `<out>/runs/<task>/refit-to-one-step-targets/`), and to those "
              "estimates each made consistent with its view's y (the image nearest it whose measurement is y, supp. "
              "eq. 13; `<out>/refit-consistent/`):", "",
              "| task | " + " | ".join(label for label, _ in RUNS) + " |", "|---|" + "---|" * len(RUNS)]
    lines += [f"| {task} | " + " | ".join(per_scene(by_label[label]) if by_label[label] else "not run"
                                          for label, _ in RUNS) + " |"
              for task, by_label in runs.items()]
    lines += ["", f"Command: `{command}`; {seconds:.0f} s on the CPU; model: the mini world model "
              f"(`dreamsampler/world/mini-sd`).", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "quality")
    ap.add_argument("--tasks", default="nerf-x8,nerf-inconsistent,nerf-x4,nerf-blur")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--draws", type=int, default=4, help="noise draws per view and timestep")
    ap.add_argument("--times", type=int, default=4, help="repeated applications of the one-step estimate")
    ap.add_argument("--no-refit", dest="refit", action="store_false", help="skip the NeRFs refitted to the targets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--page", type=Path, default=REPO / "docs" / "results" / "prior-targets.md")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()  # threestudio runs in its own folder
    start = time.time()
    torch.manual_seed(args.seed)
    model = load_model(MINI_SD)
    tasks = args.tasks.split(",")
    if args.refit:
        for task in tasks:
            refit(model, args.out, task, args.scenes, args.seed)
    runs = {task: {label: heldout_psnr(args.out, task, folder, args.scenes) for label, folder in RUNS} for task in tasks}
    rows, repeated = [], []
    for task in tasks:
        rows += task_rows(model, args.out, task, args.scenes, args.draws, args.seed)
        repeated.append(repeated_rows(model, args.out, task, args.scenes, args.times, args.seed))
        for r in [*(r for r in rows if r["task"] == task), repeated[-1]]:
            print(json.dumps(r), flush=True)
    command = command_line("prior_targets.py", argv)
    args.page.write_text(page(rows, repeated, runs, command, time.time() - start))


if __name__ == "__main__":
    main()
