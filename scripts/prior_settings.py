"""The degraded-view NeRF's prior settings for a model, an operator and a render size, by the rules of
``dreamsampler.inverse.prior_settings`` (no scene, no ground truth: the model's own samples):

    python scripts/prior_settings.py --model stabilityai/stable-diffusion-2-1-base --cfg 7.5 \
        --operator "{type: downsample, factor: 8}" --render-size 512 --captions "a toy robot" "a red car"
    python scripts/prior_settings.py --model <mini-sd folder> --cfg 3 --operator "{type: blur, kernel_size: 5, sigma: 10.0}" \
        --render-size 32 --world

prints the overrides for ``configs/dreamsampler-degraded-nerf.yaml`` (``--json``: with the measured error and
start timestep). ``--cfg`` is the model's own sampling scale (its model card), used both to draw the samples and
as the run's CFG; ``--world`` takes the miniature world's 20 object captions (every colour x shape).
"""
from __future__ import annotations

import argparse
import json
import shlex

import torch
import yaml


def sample_images(model: str, captions, cfg: float, per_caption: int, steps: int, seed: int, device: str):
    """(the model's own samples ``[N, 3, H, W]`` in [0, 1], on the CPU; the loaded pipeline): diffusers' pipeline,
    DDIM, ``cfg``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False).to(device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator(device).manual_seed(seed)
    prompts = [c for c in captions for _ in range(per_caption)]
    return pipe(prompts, num_inference_steps=steps, guidance_scale=cfg, generator=g, output_type="pt").images.cpu(), pipe


def settings(model: str, operator: dict, render_size: int, cfg: float, captions, per_caption: int = 1, steps: int = 30,
             seed: int = 0, device: str = "cpu") -> dict:
    """The overrides (and what they came from) for ``operator`` at ``render_size`` on ``model``."""
    from dreamsampler.diffusion.latent_model import LatentModel
    from dreamsampler.inverse.operators import build_operator
    from dreamsampler.inverse.prior_settings import dc_latent_error, per_pixel_weights, rounded, start_timestep

    samples, pipe = sample_images(model, captions, cfg, per_caption, steps, seed, device)
    diffusion = LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)
    encode = lambda x: diffusion.encode((x * 2 - 1).to(device)).float().cpu()
    error = dc_latent_error(encode, samples, build_operator(operator), render_size, diffusion.resolution)
    abar = diffusion.alphas_cumprod
    t = start_timestep(abar, error)
    latent = pipe.unet.config.in_channels * pipe.unet.config.sample_size ** 2
    weights = per_pixel_weights(latent, 3 * render_size ** 2)
    overrides = {"system.guidance.guidance_scale": cfg,
                 "system.guidance.max_step_percent": rounded(t / (len(abar) - 1)),
                 "system.loss.lambda_sds": rounded(weights["lambda_sds"]),
                 "system.loss.lambda_pixel": rounded(weights["lambda_pixel"])}
    return {"overrides": overrides, "dc_latent_error": error, "start_timestep": t, "samples": len(samples),
            "model": model, "operator": operator, "render_size": render_size}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--operator", required=True, help='the data.operator mapping, e.g. "{type: downsample, factor: 8}"')
    ap.add_argument("--render-size", type=int, required=True, help="the NeRF's render size (data views' size x factor)")
    ap.add_argument("--cfg", type=float, required=True, help="the model's sampling CFG (its model card)")
    ap.add_argument("--captions", nargs="*", default=[])
    ap.add_argument("--world", action="store_true", help="the miniature world's 20 object captions")
    ap.add_argument("--per-caption", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    captions = list(args.captions)
    if args.world:
        from dreamsampler.world import COLOUR_NAMES
        from dreamsampler.world.palette import OBJECT_SHAPES

        captions += [f"a {c} {s}" for c in COLOUR_NAMES for s in OBJECT_SHAPES]
    if not captions:
        ap.error("give --captions (what the scenes show) or --world")
    operator = yaml.safe_load(args.operator)
    if not isinstance(operator, dict):
        ap.error(f"--operator {args.operator!r} is no mapping")
    out = settings(args.model, operator, args.render_size, args.cfg, captions, args.per_caption, args.steps, args.seed,
                   args.device)
    print(json.dumps(out) if args.json else " ".join(shlex.quote(f"{k}={v}") for k, v in out["overrides"].items()))
    return out


if __name__ == "__main__":
    main()
