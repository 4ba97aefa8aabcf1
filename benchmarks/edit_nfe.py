"""Wall time of DreamSampler's editing loop (Alg. 3: null-prompt DDIM inversion, then the reverse
loop with gamma_t = C abar_t) against diffusers doing the same amount of work: DDIM inversion with
``DDIMInverseScheduler`` and the null prompt, then ``StableDiffusionPipeline`` + ``DDIMScheduler``
with CFG from the inverted latent, at the same NFE. Both call the same UNet with the same batches
(1 for the inversion, 2 = [null, target] per reverse step); prompt encoding is timed in both.
One warm-up run of each, then ``--repeats`` timed pairs, the order swapped every pair (so load on a
shared machine hits both alike); the fastest run of each is compared, printed as a ratio (target <= 1.10).

    python benchmarks/edit_nfe.py                                   # tiny offline pipeline, 64x64, CPU
    python benchmarks/edit_nfe.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --size 512 --nfe 200 --device cuda --fp16
"""
from __future__ import annotations

import argparse
import time

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionPipeline

from dreamsampler.diffusion.latent_model import LatentModel
from dreamsampler.diffusion.schedules import ReverseSchedule
from dreamsampler.image.editing import edit
from dreamsampler.image_io import read_image, square_resize
from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline, default_location


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def ours(model: LatentModel, scheduler, z0, prompt: str, nfe: int, scale: float):
    null, tgt = model.text(["", prompt]).chunk(2)
    schedule = ReverseSchedule.from_scheduler(scheduler, nfe)
    return edit(model.eps, z0, schedule, null, [tgt], scale=scale)


@torch.no_grad()
def diffusers_reference(pipe: StableDiffusionPipeline, inverse: DDIMInverseScheduler, z0, prompt: str, nfe: int, size: int, scale: float):
    """DDIM inversion (null prompt, no CFG) + DDIM sampling with CFG, all diffusers."""
    (null,) = pipe.encode_prompt("", z0.device, 1, False)[:1]
    inverse.set_timesteps(nfe)
    z = z0
    for t in inverse.timesteps:
        z = inverse.step(pipe.unet(z, t, encoder_hidden_states=null).sample, t, z).prev_sample
    return pipe(prompt, height=size, width=size, num_inference_steps=nfe, guidance_scale=scale,
                latents=z, output_type="latent").images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or directory (default: the tiny offline pipeline)")
    parser.add_argument("--nfe", type=int, default=200)
    parser.add_argument("--size", type=int, default=None, help="image size (default 512, 64 for the tiny pipeline)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--repeats", type=int, default=4, help="timed runs of each (the fastest counts)")
    parser.add_argument("--prompt", default="a photograph of a dog")
    parser.add_argument("--scale", type=float, default=0.15, help="C of gamma_t = C abar_t (the scale does not change the cost; diffusers samples with CFG 7.5)")
    args = parser.parse_args()

    model_path = args.model or build_tiny_pipeline(default_location())
    size = args.size or (64 if args.model is None else 512)
    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(model_path, dtype=dtype, safety_checker=None).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    model = LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)
    ours_scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    x = square_resize(read_image("skimage:chelsea", "image"), size)[None].to(device) * 2 - 1
    with torch.no_grad():
        z0 = model.encode(x.to(dtype))

    def timed(fn):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    run_ours = lambda: ours(model, ours_scheduler, z0, args.prompt, args.nfe, args.scale)
    run_ref = lambda: diffusers_reference(pipe, inverse, z0, args.prompt, args.nfe, size, 7.5)
    timed(run_ours), timed(run_ref)  # warm-up
    times = {run_ours: [], run_ref: []}
    for r in range(max(1, args.repeats)):
        for fn in (run_ref, run_ours) if r % 2 else (run_ours, run_ref):
            times[fn].append(timed(fn))
    t_ours, t_ref = min(times[run_ours]), min(times[run_ref])
    print(f"model {model_path}, {size}x{size}, NFE {args.nfe} (inversion + sampling), {device}, {dtype}, "
          f"torch threads {torch.get_num_threads()}, fastest of {len(times[run_ours])} runs each")
    print(f"DreamSampler editing: {t_ours:.3f} s")
    print(f"diffusers DDIM inversion + DDIM sampling with CFG: {t_ref:.3f} s")
    print(f"ratio ours / diffusers: {t_ours / t_ref:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
