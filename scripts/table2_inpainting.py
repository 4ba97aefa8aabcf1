"""Reproduce the protocol of the DreamSampler paper's Table 2 (text-guided inpainting on FFHQ).

Protocol (main paper sec. 4.3, supp. sec. 2.3): 1k FFHQ validation faces at 512x512; for "Glasses" the
eye region and for "Smile" the mouth region is masked out (rectangles placed on the average aligned
FFHQ face); measurement y = M x + 0.01 n; text "a photography of face wearing glasses" /
"a photography of face with smile"; Stable Diffusion v1.5, NFE 200, null text "out of focus, depth of
field", supp. Alg. 4 (dreamsampler.image.inpainting). Reported per task: PSNR of the result against the
ground truth (whole image; the observed region too), FID of the results against the ground-truth
images, and CLIP similarity (cosine of CLIP image and text embeddings) of the results to the prompt.
Paper's numbers (DreamSampler): Glasses PSNR 24.61 / FID 27.10 / CLIP 0.263; Smile 27.90 / 24.33 / 0.242.

Usage (a GPU machine with the model hub; FFHQ images 69000-69999 in a folder, any size, square):
    pip install torch-fidelity==0.3.0            # FID (torchmetrics' FrechetInceptionDistance needs it)
    python scripts/table2_inpainting.py --data /data/ffhq/69000 --out outputs/table2 --task both
    python scripts/table2_inpainting.py --data ... --limit 50 --skip-fid      # a quick look
Results: <out>/<task>/<image>.png (result), <out>/<task>/<image>-y.png (measurement), and
<out>/table2.json with the metrics; finished images are skipped on a re-run (the metrics are recomputed).

Masks: by default rectangles derived from FFHQ's alignment (eye centres a quarter of the width apart at
y ~ 0.47, mouth at y ~ 0.75); ``--eye-mask`` / ``--mouth-mask`` take a mask file instead (.npy or an
image, nonzero / white = region to fill, e.g. the authors' inp_masks/mask_eye.npy).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamsampler.diffusion.latent_model import LatentModel
from dreamsampler.diffusion.schedules import ReverseSchedule
from dreamsampler.image.inpainting import InverseProblem, initial_latent, solve
from dreamsampler.image_io import latent_mask, read_image, rect_mask, square_resize, to_uint8
from dreamsampler.inverse.operators import AdditiveNoise, Compose, Mask
from dreamsampler.metrics import masked_psnr

TASKS = {
    "glasses": ("a photography of face wearing glasses", "eye"),
    "smile": ("a photography of face with smile", "mouth"),
}
RECTS = {"eye": [0.27, 0.39, 0.73, 0.55], "mouth": [0.34, 0.66, 0.66, 0.83]}
NULL_TEXT = "out of focus, depth of field"
EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_mask(path: str | None, region: str, size: int) -> torch.Tensor:
    """[1, size, size] in {0, 1}, 1 = the region to fill."""
    if path is None:
        return rect_mask(RECTS[region], size, size, f"--{region}-mask")
    arr = np.load(path) if path.endswith(".npy") else np.asarray(Image.open(path).convert("L"))
    m = torch.from_numpy((np.asarray(arr, dtype=np.float32) > 0).astype(np.float32))
    m = m.reshape(-1, *m.shape[-2:])[:1]
    return (F.interpolate(m[None], size=(size, size), mode="nearest")[0] > 0.5).float()


def to_png(img: torch.Tensor, path: Path) -> None:
    Image.fromarray(to_uint8(img[0])).save(path)


def inpaint_all(args, model: LatentModel, scheduler, images, task: str, mask: torch.Tensor, out: Path) -> None:
    prompt, _ = TASKS[task]
    device = args.device
    null, tgt = model.text([NULL_TEXT, prompt]).chunk(2)
    schedule = ReverseSchedule.from_scheduler(scheduler, args.nfe)
    op = Mask(1 - mask).to(device)
    noisy = Compose([op, AdditiveNoise(args.noise)])
    lat = latent_mask(mask[None], model.latent_factor).to(device)
    for n, path in enumerate(images):
        target = out / f"{path.stem}.png"
        if target.exists():
            continue
        x = square_resize(read_image(str(path), "--data"), args.size)[None].to(device)
        seed = args.seed + n
        y = noisy.measure((x * 2 - 1).cpu(), generator=torch.Generator().manual_seed(seed)).to(device)
        p = InverseProblem(model.eps, model.decode, model.encode, op, y, null, [tgt], lat)
        z_T = initial_latent(p, schedule)
        z = solve(p, z_T, schedule, seed=seed)
        with torch.no_grad():
            to_png((model.decode(z) / 2 + 0.5).clamp(0, 1), target)
        to_png((y / 2 + 0.5).clamp(0, 1), out / f"{path.stem}-y.png")
        print(f"[{task}] {n + 1}/{len(images)} {path.name}", flush=True)


def metrics(args, images, task: str, mask: torch.Tensor, out: Path) -> dict:
    prompt, _ = TASKS[task]
    load = lambda p: square_resize(read_image(str(p), "image"), args.size)[None]
    results = [load(out / f"{p.stem}.png") for p in images]
    truths = [load(p) for p in images]
    keep = (1 - mask)[None]
    row = {
        "images": len(images),
        "psnr": float(np.mean([masked_psnr(r, g, torch.ones_like(keep)) for r, g in zip(results, truths)])),
        "psnr_observed": float(np.mean([masked_psnr(r, g, keep) for r, g in zip(results, truths)])),
    }
    if not args.skip_fid:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=2048, normalize=True).to(args.device)
        for batch in range(0, len(images), 50):
            fid.update(torch.cat(truths[batch : batch + 50]).to(args.device), real=True)
            fid.update(torch.cat(results[batch : batch + 50]).to(args.device), real=False)
        row["fid"] = float(fid.compute())
    if not args.skip_clip:
        from transformers import CLIPModel, CLIPProcessor

        clip = CLIPModel.from_pretrained(args.clip_model).to(args.device).eval()
        proc = CLIPProcessor.from_pretrained(args.clip_model)
        sims = []
        with torch.no_grad():
            text = clip.get_text_features(**proc(text=[prompt], return_tensors="pt", padding=True).to(args.device))
            text = F.normalize(text, dim=-1)
            for r in results:
                pil = Image.fromarray(to_uint8(r[0]))
                img = clip.get_image_features(**proc(images=pil, return_tensors="pt").to(args.device))
                sims.append(float((F.normalize(img, dim=-1) * text).sum()))
        row["clip_similarity"] = float(np.mean(sims))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of FFHQ validation images (PNG / JPEG)")
    parser.add_argument("--out", default="outputs/table2")
    parser.add_argument("--task", choices=("glasses", "smile", "both"), default="both")
    parser.add_argument("--model", default="stable-diffusion-v1-5/stable-diffusion-v1-5")
    parser.add_argument("--nfe", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--limit", type=int, default=1000, help="first N images (sorted by name)")
    parser.add_argument("--noise", type=float, default=0.01, help="measurement noise std in [-1, 1] units")
    parser.add_argument("--eye-mask", default=None)
    parser.add_argument("--mouth-mask", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp32", action="store_true", help="float32 weights (default: float16 on CUDA)")
    parser.add_argument("--clip-model", default="openai/clip-vit-large-patch14",
                        help="CLIP for the similarity (the paper does not name its CLIP variant)")
    parser.add_argument("--skip-fid", action="store_true")
    parser.add_argument("--skip-clip", action="store_true")
    args = parser.parse_args()

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    data = Path(args.data)
    images = sorted(p for p in data.iterdir() if p.suffix.lower() in EXTENSIONS)[: args.limit] if data.is_dir() else []
    if not images:
        raise SystemExit(f"--data {args.data}: no PNG / JPEG images found")
    dtype = torch.float16 if args.device.startswith("cuda") and not args.fp32 else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(args.model, dtype=dtype, safety_checker=None).to(args.device)
    for m in (pipe.vae, pipe.unet, pipe.text_encoder):
        m.requires_grad_(False)
    model = LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    masks = {"eye": args.eye_mask, "mouth": args.mouth_mask}

    table = {}
    for task in (("glasses", "smile") if args.task == "both" else (args.task,)):
        region = TASKS[task][1]
        mask = load_mask(masks[region], region, args.size)
        out = Path(args.out) / task
        out.mkdir(parents=True, exist_ok=True)
        inpaint_all(args, model, scheduler, images, task, mask, out)
        table[task] = metrics(args, images, task, mask, out)
        print(f"[{task}] {table[task]}", flush=True)
    Path(args.out, "table2.json").write_text(json.dumps({"settings": vars(args), "results": table}, indent=2))
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
