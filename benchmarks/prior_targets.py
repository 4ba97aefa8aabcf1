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
from typing import Dict, List

import torch
import torch.nn.functional as F

from dreamsampler.diffusion.latent_model import LatentModel
from dreamsampler.diffusion.process import cfg, forward_noise, tweedie
from dreamsampler.metrics import psnr
from dreamsampler.world import MINI_SD

from quality_tasks.common import REPO, read_png
from quality_tasks.nerf import MINI_SD_CFG

MIN_STEP_PERCENT = 0.02  # configs/dreamsampler-degraded-nerf.yaml's guidance.min_step_percent


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


def load_model(path: str) -> LatentModel:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    return LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)


@torch.no_grad()
def one_step_targets(model: LatentModel, images: torch.Tensor, caption: str, t: int, scale: float,
                     generator: torch.Generator) -> torch.Tensor:
    """D(z0^) at ``t`` for ``images`` ``[V, 3, S, S]`` in [0, 1], back at size S: E(resized image) noised to t, one
    CFG eps (supp. eq. 18's z0^ = Tweedie), decoded and area-resized as the pixel term compares it."""
    size = images.shape[-1]
    up = F.interpolate(images, size=model.resolution, mode="bilinear", align_corners=False)
    z0 = model.encode(up * 2 - 1)
    abar = model.alphas_cumprod[t]
    z_t = forward_noise(z0, torch.randn(z0.shape, generator=generator), abar)
    null, cond = model.text(["", caption]).chunk(2)
    v = len(images)
    eps_u, eps_c = model.eps(torch.cat([z_t, z_t]), t, torch.cat([null.expand(v, -1, -1), cond.expand(v, -1, -1)])).chunk(2)
    target = (model.decode(tweedie(z_t, cfg(eps_u, eps_c, scale), abar)) / 2 + 0.5).clamp(0, 1)
    return F.interpolate(target, size=size, mode="area")


def schedule_grid(start: int, n: int = 5) -> List[int]:
    """``n`` timesteps from the schedule's start down to its end (``MIN_STEP_PERCENT``), evenly spaced."""
    end = round(MIN_STEP_PERCENT * 999)
    return sorted({round(start + (end - start) * k / (n - 1)) for k in range(n)}, reverse=True)


def task_rows(model: LatentModel, out: Path, task: str, scenes: int, draws: int, seed: int) -> List[Dict]:
    """One row per view set and timestep on the rule's schedule: the renders' PSNR and their targets'."""
    settings = json.loads((out / f"prior-settings-{task}.json").read_text())
    scale = float(settings["overrides"].get("system.guidance.guidance_scale", MINI_SD_CFG))
    scenes_views = [warmup_views(out, task, i) for i in range(scenes)]
    captions = [json.loads((out / "scenes" / f"{task}-{i}" / "scene.json").read_text())["caption"] for i in range(scenes)]
    g = torch.Generator().manual_seed(seed)
    rows = []
    for views in ("data", "held-out"):
        pairs = [v[views] for v in scenes_views]
        render_psnr = torch.stack([psnr(r, c).mean() for r, c in pairs]).mean().item()
        for t in schedule_grid(int(settings["start_timestep"])):
            score = {"render": [], "clean": []}
            for (renders, clean), caption in zip(pairs, captions):
                for _ in range(draws):
                    for name, images in (("render", renders), ("clean", clean)):
                        score[name].append(psnr(one_step_targets(model, images, caption, t, scale, g), clean).mean())
            rows.append({"task": task, "views": views, "t": t, "cfg": scale, "render_psnr": render_psnr,
                         "target_from_render": torch.stack(score["render"]).mean().item(),
                         "target_from_clean": torch.stack(score["clean"]).mean().item()})
    return rows


def page(rows: List[Dict], command: str, seconds: float) -> str:
    lines = ["# prior-targets", "",
             "Written by `benchmarks/prior_targets.py`; do not edit by hand: rerun the command below.", "",
             "PSNR (dB) against the clean views, mean over the scenes' 16 data views or 8 held-out views: the warm-up's render, and the prior's "
             "one-step estimate D(z0^) at timestep t (one CFG step at the rule's scale) from the render and from the "
             "clean view. The t column runs the rule's reverse schedule from its start to its end.", "",
             "| task | views | CFG | t | warm-up render | D(z0^) from the render | D(z0^) from the clean view |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['views']} | {r['cfg']:g} | {r['t']} | {r['render_psnr']:.2f} | {r['target_from_render']:.2f} | "
              f"{r['target_from_clean']:.2f} |" for r in rows]
    lines += ["", f"Command: `{command}`; {seconds:.0f} s on the CPU; model: the mini world model "
              f"(`dreamsampler/world/mini-sd`).", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "quality")
    ap.add_argument("--tasks", default="nerf-x8,nerf-inconsistent,nerf-x4,nerf-blur")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--draws", type=int, default=4, help="noise draws per view and timestep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--page", type=Path, default=REPO / "docs" / "results" / "prior-targets.md")
    args = ap.parse_args(argv)
    start = time.time()
    torch.manual_seed(args.seed)
    model = load_model(MINI_SD)
    rows = [r for task in args.tasks.split(",") for r in task_rows(model, args.out, task, args.scenes, args.draws, args.seed)]
    for r in rows:
        print(json.dumps(r))
    command = f"python benchmarks/prior_targets.py --out {args.out} --tasks {args.tasks}"
    args.page.write_text(page(rows, command, time.time() - start))


if __name__ == "__main__":
    main()
