"""PSNR / SSIM of the degraded-view NeRF on the procedural scene, against its clean views.

Makes the procedural box scene (``dreamsampler.multiview.procedural``: 16 views on the ring at 30 degrees,
blurred with the paper's 5x5, sigma 10 Gaussian), then runs ``configs/dreamsampler-degraded-nerf.yaml``
twice through ``run_threestudio.py``:

1. eq. 18 + 19: ``--warmup`` steps of data consistency, then ``--steps`` steps of
   (1 - gamma) l_SDS l_sds + gamma l_DC l_dc + l_pixel l_pixel with gamma = abar_t; the validation at
   the end of the warm-up measures "warm-up alone" on all 16 views;
2. control: data consistency only for the same total number of steps.

and prints the degraded inputs' numbers (the baseline), the warm-up's, and both runs' final numbers.
With the tiny offline pipeline (random weights: the only model on a machine without a model hub) the
diffusion terms carry no knowledge of images and pull the NeRF away from the data, so that run checks
the mechanics only; what eq. 18 adds over the control needs Stable Diffusion weights (``--model``).

    python scripts/degraded_nerf_demo.py --out outputs/degraded-demo              # tiny offline pipeline, CPU
    python scripts/degraded_nerf_demo.py --out outputs/degraded-demo --model stabilityai/stable-diffusion-2-1-base \\
        --size 256 --warmup 2000 --steps 8000 --samples 512 --grid-levels 16 --hashmap-log2 19   # a GPU
Extra ``key=value`` overrides after ``--`` go to both runs. The CPU defaults (32 px, a hash grid of 8
levels, 32 samples per ray) keep both runs to a few minutes on two cores.
"""
from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from dreamsampler.multiview.procedural import make_scene
from dreamsampler.multiview.views import RingSpec
from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline, default_location


def run(name: str, out: Path, overrides: list, log: Path) -> Path:
    """One training run (train + test); returns its trial directory."""
    cmd = [sys.executable, "-m", "dreamsampler_launcher.run_threestudio", "--config", str(REPO / "configs/dreamsampler-degraded-nerf.yaml"),
           "--train", f"exp_root_dir={out / name}", *overrides]
    start = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"{name} failed (exit {rc}); see {log}")
    trial = Path(sorted(glob.glob(str(out / name / "*" / "*")))[-1])
    print(f"{name}: {time.time() - start:.0f} s, {trial}", flush=True)
    return trial


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/degraded-demo")
    p.add_argument("--model", default=None, help="diffusers model id or folder (default: the tiny offline pipeline)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--steps", type=int, default=100, help="eq. 18 steps after the warm-up")
    p.add_argument("--guidance-scale", type=float, default=100.0)
    p.add_argument("--lambda-sds", type=float, default=1.0)
    p.add_argument("--lambda-dc", type=float, default=1.0)
    p.add_argument("--lambda-pixel", type=float, default=3932.0)
    p.add_argument("--samples", type=int, default=32, help="samples per ray")
    p.add_argument("--grid-levels", type=int, default=8, help="hash-grid levels (the config: 16)")
    p.add_argument("--hashmap-log2", type=int, default=15, help="log2 hash-table size (the config: 19)")
    p.add_argument("--orbit-views", type=int, default=8, help="frames of the test orbit video")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(str(out / "scene"), size=args.size, ring=RingSpec(n_views=16))
    model = args.model or build_tiny_pipeline(default_location())
    total = args.warmup + args.steps
    common = [
        f"data.dataroot={scene['degraded']}", f"data.gt_root={scene['clean']}", f"data.caption={scene['caption']}",
        f"data.operator={json.dumps(scene['operator'])}",
        f"system.prompt_processor.pretrained_model_name_or_path={model}",
        f"system.guidance.pretrained_model_name_or_path={model}",
        f"system.renderer.num_samples_per_ray={args.samples}", f"trainer.max_steps={total}",
        f"system.geometry.pos_encoding_config.n_levels={args.grid_levels}",
        f"system.geometry.pos_encoding_config.log2_hashmap_size={args.hashmap_log2}",
        f"system.loss.lambda_dc={args.lambda_dc}", "data.n_val_views=16", f"data.n_test_orbit_views={args.orbit_views}",
        *args.overrides,
    ]
    eq18 = run("eq18", out, common + [
        f"system.warmup_steps={args.warmup}", f"trainer.val_check_interval={args.warmup}",
        f"system.guidance.guidance_scale={args.guidance_scale}", f"system.loss.lambda_sds={args.lambda_sds}",
        f"system.loss.lambda_pixel={args.lambda_pixel}",
    ], out / "eq18.log")
    dc = run("dc_only", out, common + [
        f"system.warmup_steps={total}", f"trainer.val_check_interval={total}",
    ], out / "dc_only.log")

    final = json.load(open(eq18 / "save" / "metrics.json"))
    warm = json.load(open(eq18 / "save" / f"it{args.warmup}-val" / "metrics.json"))
    control = json.load(open(dc / "save" / "metrics.json"))
    rows = [
        ("degraded input (baseline)", final["degraded_input"]),
        (f"warm-up alone, {args.warmup} DC steps", warm["renders"]),
        (f"eq. 18 + 19, {args.warmup} + {args.steps} steps", final["renders"]),
        (f"control: DC only, {total} steps", control["renders"]),
    ]
    print(f"\n{'PSNR / SSIM vs clean views (16 views, ' + str(args.size) + 'px)':48s}  PSNR dB   SSIM")
    for name, m in rows:
        print(f"{name:48s}  {m['psnr']:7.2f}  {m['ssim']:.4f}")
    json.dump({name: m for name, m in rows}, open(out / "summary.json", "w"), indent=2)
    if args.model is None:
        print("(tiny pipeline with random weights: the eq. 18 run measures the mechanics, not the prior)")


if __name__ == "__main__":
    main()
