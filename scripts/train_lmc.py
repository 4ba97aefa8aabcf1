"""Train the LMC-SDS corrective k_psi(z, t) for a diffusion model (LMC-SDS sec. 4, eq. 10): Stable
Diffusion (on VAE latents) or DeepFloyd IF stage I (on 64x64 pixels).

Images from a folder (or scikit-image's sample photos, or ``--world N`` images of the procedural world,
the natural images of the miniature world model) are VAE-encoded once (kept as pixels in [-1, 1] for a
pixel-space model); every step takes random crops z0, random timesteps t ~ U{t_min..t_max} and fresh
noise, computes the one-step denoised x^ = Tweedie(z_t, eps_u(z_t, t)) with the UNet's unconditional
(empty-prompt) prediction, and fits k_psi(z0, t) to the per-sample normalized N(x^) with Adam. The
checkpoint is a safetensors file that ``dreamsampler.distill.lmc.load_corrective`` rebuilds (architecture in its metadata).

    # offline smoke run on the tiny random pipeline (~20 s on 2 busy CPU cores; passive OpenMP
    # waiting avoids a 10x slowdown on a shared machine)
    OMP_WAIT_POLICY=PASSIVE python scripts/train_lmc.py --steps 100 --resolution 128 --batch-size 4 \\
        --out outputs/lmc-tiny.safetensors
    # real weights (GPU), a folder of natural photos
    python scripts/train_lmc.py --model runwayml/stable-diffusion-v1-5 --images photos/ \\
        --steps 100000 --batch-size 16 --out corrective-sd15.safetensors
    # the miniature world model, on 2048 training-split world images at its native 64 px (126 s on 2 CPU cores)
    python scripts/train_lmc.py --model custom/threestudio-dreamsampler/dreamsampler/world/mini-sd --world 2048 \
        --resolution 64 --depth 2 --out k-mini-sd.safetensors
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from dreamsampler.diffusion.latent_model import is_pixel_space, vae_factor
from dreamsampler.diffusion.process import check_prediction_type, to_epsilon
from dreamsampler.distill.lmc import CorrectiveUNet, save_corrective, train_corrective

SKIMAGE_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_images(folder: Optional[str], resolution: int) -> List[Tensor]:
    """RGB images in [-1, 1], [3, H, W], resized so the shorter side is ``resolution`` (a multiple of 8)."""
    from PIL import Image

    if folder is None:
        import skimage.data

        pics = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in SKIMAGE_SAMPLES]
    else:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--images {root}: no such folder")
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"--images {root}: no PNG or JPEG files in it")
        pics = [Image.open(p).convert("RGB") for p in files]
    out = []
    for im in pics:
        s = resolution / min(im.size)
        w, h = (max(resolution, round(im.size[0] * s / 8) * 8), max(resolution, round(im.size[1] * s / 8) * 8))
        im = im.resize((w, h), Image.BICUBIC)
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, 3)
        out.append(x.permute(2, 0, 1).float() / 127.5 - 1.0)
    return out


def world_images(n: int) -> List[Tensor]:
    """The first ``n`` training-split images of the procedural world, in [-1, 1], [3, 64, 64]."""
    from dreamsampler.world import world_image

    return [world_image("train", i)[0] * 2 - 1 for i in range(n)]


@torch.no_grad()
def encode(vae, images: List[Tensor], device, dtype) -> List[Tensor]:
    """Scaled VAE latents (posterior mean), one [4, H/8, W/8] tensor per image, in float32; the images
    themselves for a pixel-space model (``vae`` None)."""
    if vae is None:
        return [x.to(device).float() for x in images]
    return [
        (vae.encode(x[None].to(device, dtype)).latent_dist.mean * vae.config.scaling_factor)[0].float()
        for x in images
    ]


def random_batches(latents: List[Tensor], batch_size: int, crop: int, t_range: Tuple[int, int],
                   generator: torch.Generator) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
    """Endless (z0, t, noise): random latent crops (with latent-space horizontal flips), t, noise."""
    device = latents[0].device
    while True:
        crops = []
        for _ in range(batch_size):
            z = latents[int(torch.randint(len(latents), (1,), generator=generator))]
            i = int(torch.randint(z.shape[1] - crop + 1, (1,), generator=generator))
            j = int(torch.randint(z.shape[2] - crop + 1, (1,), generator=generator))
            z = z[:, i : i + crop, j : j + crop]
            crops.append(z.flip(-1) if bool(torch.randint(2, (1,), generator=generator)) else z)
        z0 = torch.stack(crops)
        t = torch.randint(t_range[0], t_range[1] + 1, (batch_size,), generator=generator).to(device)
        noise = torch.randn(z0.shape, generator=generator).to(device)
        yield z0, t, noise


def empty_prompt(model: str, pixel: bool, device, dtype) -> Tensor:
    """The text embedding of the empty prompt: CLIP's (Stable Diffusion), or T5's as threestudio's
    deep-floyd-prompt-processor encodes it (IF)."""
    if pixel:
        from dreamsampler.diffusion.t5_text import encode_t5, load_t5

        return encode_t5(*load_t5(model), [""]).to(device, dtype)
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", torch_dtype=dtype).to(device)
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(device))[0]


def load_model(model: str, device, dtype):
    """(vae or None for a pixel-space model, unet, empty-prompt embedding, alphas_cumprod, prediction type)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    pixel = is_pixel_space(model, "--model")
    vae = None if pixel else AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype).to(device).eval()
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype).to(device).eval()
    null = empty_prompt(model, pixel, device, dtype)
    scheduler = DDIMScheduler.from_pretrained(model, subfolder="scheduler")
    prediction_type = check_prediction_type(scheduler.config.prediction_type, f"--model {model}")
    return vae, unet.requires_grad_(False), null, scheduler.alphas_cumprod.to(device), prediction_type


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None,
                   help="diffusers model id or local folder (default: the tiny offline pipeline, built if missing)")
    p.add_argument("--images", default=None, help="folder of PNG/JPEG photos (default: scikit-image's samples)")
    p.add_argument("--world", type=int, default=0, help="instead: this many training-split world images (64 px)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", default="lmc_corrective.safetensors")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--resolution", type=int, default=512,
                   help="image side; crops are resolution / the VAE factor latents (resolution pixels without a VAE)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--t-min", type=int, default=20)
    p.add_argument("--t-max", type=int, default=980)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--save-every", type=int, default=0, help="also save every N steps (0: only at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.resolution % 8 or args.resolution < 8:
        p.error(f"--resolution must be a positive multiple of 8, got {args.resolution}")
    if not 0 <= args.t_min < args.t_max:
        p.error(f"need 0 <= --t-min < --t-max, got {args.t_min}, {args.t_max}")
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be >= 1")
    if args.world and args.images:
        p.error("--world and --images are alternatives: pass one")
    return args


def main(argv=None) -> Path:
    from tqdm import tqdm

    args = parse_args(argv)
    if args.model is None:
        from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline, default_location

        args.model = build_tiny_pipeline(default_location())
        print(f"--model not given: using the tiny random pipeline at {args.model} (a smoke run, not a usable corrective)")
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    vae, unet, null, alphas, prediction_type = load_model(args.model, device, dtype)
    if args.t_max >= alphas.numel():
        raise SystemExit(f"--t-max {args.t_max} is beyond the model's {alphas.numel()} timesteps")
    images = world_images(args.world) if args.world else load_images(args.images, args.resolution)
    crop = args.resolution // vae_factor(None if vae is None else vae.config)
    latents = encode(vae, images, device, dtype)
    del vae

    def eps_uncond(z_t: Tensor, t: Tensor) -> Tensor:
        out = unet(z_t.to(dtype), t, encoder_hidden_states=null.expand(z_t.shape[0], -1, -1)).sample.float()
        return to_epsilon(out, z_t, alphas[t].view(-1, 1, 1, 1), prediction_type)

    k = CorrectiveUNet(in_channels=latents[0].shape[0], base_channels=args.base_channels, depth=args.depth,
                       num_train_timesteps=alphas.numel()).to(device)
    source = f"world: {args.world} training-split images" if args.world else args.images
    info = {"model": args.model, "images": source or "skimage.data: " + ", ".join(SKIMAGE_SAMPLES),
            "resolution": args.resolution, "t_range": [args.t_min, args.t_max], "lr": args.lr,
            "batch_size": args.batch_size, "seed": args.seed}
    g = torch.Generator().manual_seed(args.seed)
    batches = random_batches(latents, args.batch_size, crop, (args.t_min, args.t_max), g)
    bar = tqdm(total=args.steps, desc="k_psi", unit="step", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)  # a quiet log when redirected
    state = {"avg": None}

    def progress(step: int, loss: float) -> None:
        state["avg"] = loss if state["avg"] is None else 0.95 * state["avg"] + 0.05 * loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", avg=f"{state['avg']:.4f}", refresh=False)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save_corrective(k, args.out, dict(info, steps=step + 1))

    losses = train_corrective(k, eps_uncond, batches, alphas.float(), args.steps, lr=args.lr, callback=progress)
    bar.close()
    out = save_corrective(k, args.out, dict(info, steps=args.steps))
    n = max(1, len(losses) // 10)
    print(f"loss: first {n} steps {sum(losses[:n]) / n:.4f} -> last {n} steps {sum(losses[-n:]) / n:.4f}")
    print(f"saved {out}")
    return out


if __name__ == "__main__":
    main()
