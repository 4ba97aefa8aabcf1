"""Measure the miniature Stable Diffusion against its world; write JSON, a markdown snippet and the
model card's "Measured quality" section.

(a) VAE round-trip PSNR on held-out icons and objects (posterior mean, images in [0,1]).
(b) Prompt fidelity: diffusers' StableDiffusionPipeline with its DDIMScheduler, ``--steps`` steps,
    guidance ``--cfg``, ``--samples`` images for every single-shape caption of each domain (20 icon
    captions, 20 object captions whose view suffix cycles front/side/back/overhead). The world's reader
    (``dreamsampler.world.evaluator``) scores each image: colour right when every shape it finds has
    the caption's colour (and it finds one), shape likewise, count right when it finds exactly one.
(c) Diversity: for ``a red circle``, the spread (std) of the generated shapes' x, y and size against
    the world's own spread for single-shape icons; ratio 1 is a perfect match.

The guidance scale is chosen with ``--sweep 2,4,7.5``: at each scale 4 samples of every caption of each
domain and 64 of the diversity caption, seeds disjoint from the measurement's; it writes sweep.json and
changes nothing else.

    python scripts/eval_mini_sd.py [--model DIR] [--cfg 3] [--quick] [--sweep 2,4,7.5]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from tqdm import tqdm

from dreamsampler.world import COLOUR_NAMES, ICON_SHAPES, OBJECT_SHAPES, sample_icon_attrs, world_image
from dreamsampler.world.captions import VIEWS, phrase
from dreamsampler.world.evaluator import Reader

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "custom/threestudio-dreamsampler/dreamsampler/world/mini-sd"
QUALITY_MARK = "<!-- measured-quality -->"
DIVERSITY_CAPTION = "a red circle"
KEYS = ("x", "y", "size")


def captions(domain: str):
    """(caption, colour, shape) of every single-shape caption of a domain."""
    out = []
    shapes = ICON_SHAPES if domain == "icon" else OBJECT_SHAPES
    for i, (colour, shape) in enumerate((c, s) for c in COLOUR_NAMES for s in shapes):
        cap = phrase(colour, shape) if domain == "icon" else f"{phrase(colour, shape)}, {VIEWS[i % 4]} view"
        out.append((cap, colour, shape))
    return out


@torch.no_grad()
def vae_round_trip(vae, domain: str, n: int):
    """Held-out images of a domain, their VAE round trips (posterior mean; [n,3,64,64] in [0,1]) and
    their attributes."""
    x, _, attrs = zip(*(world_image("eval", i, domain) for i in range(n)))
    x = torch.stack(x)
    rec = torch.cat([vae.decode(vae.encode(x[i : i + 64] * 2 - 1).latent_dist.mean).sample for i in range(0, n, 64)])
    return x, ((rec + 1) / 2).clamp(0, 1), attrs


def vae_psnr(x, rec) -> float:
    mse = (rec - x).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).mean().item()


def vae_shape_ceiling(reader, rec, attrs) -> float:
    """Share of round-tripped icons whose shapes, left to right, the reader gets all right: what the VAE
    alone leaves readable, a ceiling for any UNet on its latent."""
    truth = [[s for _, s in sorted(zip((p[0] for p in a.positions), a.shapes))] for a in attrs]
    return sum(r["shapes"] == t for r, t in zip(reader(rec, "icon"), truth)) / len(attrs)


def generate(pipe, caption: str, n: int, seed: int, args) -> torch.Tensor:
    """``n`` samples [n,3,64,64] in [0,1] of one caption."""
    out = []
    for k in range(0, n, args.batch):
        g = torch.Generator().manual_seed(seed + k)
        res = pipe(caption, num_images_per_prompt=min(args.batch, n - k), num_inference_steps=args.steps,
                   guidance_scale=args.cfg, generator=g, output_type="pt", height=64, width=64)
        out.append(res.images.float().cpu())
    return torch.cat(out)


def fidelity(pipe, reader, domain, args, grid, caption_list=None, seed=0):
    caption_list = caption_list or captions(domain)
    rows = []
    for j, (cap, colour, shape) in enumerate(tqdm(caption_list, desc=f"{domain} captions")):
        imgs = generate(pipe, cap, args.samples, seed + 1000 * j + (0 if domain == "icon" else 500_000), args)
        grid.append(imgs[:8])
        reads = reader(imgs, domain)
        if domain == "object":  # the classifier names one shape; the silhouettes say how many there are
            for r in reads:
                r["colours"], r["shapes"] = r["colours"] * max(r["count"], 0), r["shapes"] * max(r["count"], 0)
        c = sum(bool(r["colours"]) and set(r["colours"]) == {colour} for r in reads) / len(reads)
        s = sum(bool(r["shapes"]) and set(r["shapes"]) == {shape} for r in reads) / len(reads)
        n1 = sum(r["count"] == 1 for r in reads) / len(reads)
        rows.append(dict(caption=cap, colour=c, shape=s, count=n1))
    totals = {key: sum(row[key] for row in rows) / len(rows) for key in ("colour", "shape", "count")}
    return dict(per_caption=rows, **totals)


def diversity(pipe, reader, args, seed=7_000_000):
    """Std (and mean: where the spread sits) of x, y and size of the single-shape samples of the diversity
    caption, against 4000 single-shape icons of the world."""
    imgs = generate(pipe, DIVERSITY_CAPTION, args.diversity_samples, seed, args)
    reads = [r for r in reader(imgs, "icon") if r["count"] == 1]
    g = torch.Generator().manual_seed(0)
    world = [sample_icon_attrs(g, count=1) for _ in range(4000)]

    def moments(items):
        t = torch.tensor(items, dtype=torch.float64).reshape(-1, 3)
        std = t.std(0).tolist() if len(t) > 1 else [float("nan")] * 3
        return dict(zip(KEYS, t.mean(0).tolist())), dict(zip(KEYS, std))

    gen_mean, gen = moments([(*r["positions"][0], r["sizes"][0]) for r in reads])
    ref_mean, ref = moments([(*a.positions[0], a.sizes[0]) for a in world])
    return dict(caption=DIVERSITY_CAPTION, samples=len(imgs), single_shape_samples=len(reads),
                generated_std=gen, world_std=ref, ratio={k: gen[k] / ref[k] for k in KEYS},
                generated_mean=gen_mean, world_mean=ref_mean)


def markdown(r) -> str:
    f = r["fidelity"]
    lines = [
        f"Measured by `scripts/eval_mini_sd.py` ({r['wall_s'] / 60:.1f} min on {r['threads']} CPU threads):",
        "",
        f"- VAE round-trip PSNR on held-out world images: icons {r['psnr']['icon']:.2f} dB, objects {r['psnr']['object']:.2f} dB "
        f"({r['psnr']['images']} each); the shapes of {r['vae_icon_shape']:.1%} of those icons still read right after the "
        "round trip (the VAE's ceiling on icon shape).",
        f"- Prompt fidelity, diffusers StableDiffusionPipeline + DDIMScheduler, {r['steps']} steps, guidance {r['cfg']}, "
        f"{r['samples']} samples per caption, read by `dreamsampler.world.evaluator`:",
        "",
        "| domain | captions | colour | shape | count = 1 |",
        "|---|---|---|---|---|",
    ]
    for d in ("icon", "object"):
        lines.append(f"| {d}s | {len(f[d]['per_caption'])} | {f[d]['colour']:.1%} | {f[d]['shape']:.1%} | {f[d]['count']:.1%} |")
    dv = r["diversity"]
    lines += [
        "",
        f"- Diversity of `{dv['caption']}` ({dv['single_shape_samples']} of {dv['samples']} samples with one shape): std of "
        + ", ".join(f"{k} {dv['generated_std'][k]:.3f} vs world {dv['world_std'][k]:.3f} (ratio {dv['ratio'][k]:.2f})" for k in KEYS)
        + "; mean " + ", ".join(f"{k} {dv['generated_mean'][k]:.3f} vs world {dv['world_mean'][k]:.3f}" for k in KEYS) + ".",
        "",
        "Worst captions: "
        + ", ".join(
            f"`{row['caption']}` (colour {row['colour']:.0%}, shape {row['shape']:.0%})"
            for row in sorted(f["icon"]["per_caption"] + f["object"]["per_caption"], key=lambda x: x["colour"] + x["shape"])[:4]
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--cfg", type=float, default=3.0, help="guidance scale (3: the rule of the model card's sweep)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--diversity-samples", type=int, default=128)
    p.add_argument("--psnr-images", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="outputs/mini-sd-eval", help="folder for eval.json, quality.md, samples.png")
    p.add_argument("--no-card", action="store_true", help="leave the model card alone")
    p.add_argument("--quick", action="store_true", help="a few samples and steps, to check the script runs")
    p.add_argument("--sweep", default=None, help="comma-separated guidance scales to compare (see above)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.samples, args.diversity_samples, args.psnr_images, args.no_card = 5, 2, 4, 8, True
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline

    t0 = time.time()
    model = Path(args.model)
    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    vae = pipe.vae
    reader = Reader()
    if args.sweep:
        return sweep(pipe, reader, args)
    result = dict(model=str(model.name), cfg=args.cfg, steps=args.steps, samples=args.samples, threads=torch.get_num_threads())
    trips = {d: vae_round_trip(vae, d, args.psnr_images) for d in ("icon", "object")}
    result["psnr"] = dict(**{d: vae_psnr(*trips[d][:2]) for d in trips}, images=args.psnr_images)
    result["vae_icon_shape"] = vae_shape_ceiling(reader, *trips["icon"][1:])
    grid = []
    result["fidelity"] = {d: fidelity(pipe, reader, d, args, grid) for d in ("icon", "object")}
    result["diversity"] = diversity(pipe, reader, args)
    result["wall_s"] = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (out / "quality.md").write_text(md)
    save_grid(grid, out / "samples.png")
    if not args.no_card:
        card = model / "README.md"
        text = card.read_text()
        head = text.split(QUALITY_MARK)[0]
        card.write_text(head + QUALITY_MARK + "\n" + md)
        (model / "eval.json").write_text(json.dumps(result, indent=1))
    print(md)


def sweep(pipe, reader, args):
    """Colour and shape accuracy per guidance scale on every caption (4 samples each), and the diversity
    ratios of ``DIVERSITY_CAPTION`` (64 samples)."""
    args.samples, args.diversity_samples = min(args.samples, 4), min(args.diversity_samples, 64)
    rows = []
    for cfg in (float(v) for v in args.sweep.split(",")):
        args.cfg = cfg
        f = {d: fidelity(pipe, reader, d, args, [], seed=90_000_000) for d in ("icon", "object")}
        dv = diversity(pipe, reader, args, seed=91_000_000)["ratio"]
        rows.append(dict(cfg=cfg, **{f"{d}_{k}": f[d][k] for d in f for k in ("colour", "shape", "count")},
                         **{f"spread_{k}": v for k, v in dv.items()}))
        print(json.dumps(rows[-1]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    return rows


def save_grid(grid, path):
    """Rows of up to 8 samples per caption as one PNG."""
    from PIL import Image

    rows = [torch.cat(list(g) + [torch.ones(3, 64, 64)] * (8 - len(g)), dim=2) for g in grid]
    img = torch.cat(rows, dim=1)
    Image.fromarray((img.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()).save(path)


if __name__ == "__main__":
    main()
