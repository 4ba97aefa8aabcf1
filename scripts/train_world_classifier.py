"""Train the world's object classifier (shape and colour of one 3D primitive) and save it as safetensors.

Images are world objects of the training split (seeds from ``--offset``: each image's shape, colour, size and
camera are the world's object image of that seed), some seen as the quality benchmark sees a text-to-NeRF run
(``training_object``): through threestudio's test orbit (``world.cameras.ORBIT_*``: small objects), rendered at
32 px and brought to 64 px as the benchmark brings saved views (``scenes.resize_saved``), on the light-grey
background the runs' learned environment map shows; then blurred and noised at random (``augment``).
Accuracy is reported on the held-out split: the world's own object images (64 px) and renders at the
benchmark's cameras and resolution (``evaluator.orbit_reader_accuracy``). Writes
``dreamsampler/world/object_classifier.safetensors`` (about 250 kB) unless ``--out`` says otherwise.

    python scripts/train_world_classifier.py [--images 24000] [--epochs 7]   # the committed weights: the defaults, --threads 2
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dreamsampler.world import COLOUR_NAMES, OBJECT_SHAPES, SPLIT_OFFSETS, Camera, sample_object_attrs, world_image
from dreamsampler.world.cameras import ORBIT_DISTANCE, ORBIT_ELEVATION, ORBIT_FOVY
from dreamsampler.world.evaluator import Reader, orbit_reader_accuracy
from dreamsampler.world.object_classifier import WEIGHTS, ObjectClassifier, augment
from dreamsampler.world.scenes import render_resized

ORBIT_PROB = 0.35  # share of training images seen through threestudio's test orbit (a random azimuth)
LOW_RES_PROB = 0.5  # share rendered at LOW_RES px and brought to 64 px as the benchmark does
LOW_RES = 32  # the benchmark's text-to-NeRF render size (T2N_SIZE)
BACKGROUND_PROB = 0.5  # share on a light-grey background instead of white
BACKGROUND_GREY = (0.75, 1.0)  # its grey level (uniform), each channel moved by up to BACKGROUND_TINT
BACKGROUND_TINT = 0.03


def training_object(split: str, index: int):
    """(image [3,64,64], attributes) of object ``index`` of ``split``: the world's object image of that seed
    (``world_image(split, index, "object")``: same shape, colour, size and camera), seen with probability
    ORBIT_PROB through threestudio's test orbit instead, rendered at LOW_RES px and brought to 64 px with
    probability LOW_RES_PROB, on a light-grey background with probability BACKGROUND_PROB (all drawn from the
    same seed, after the world's draws)."""
    g = torch.Generator().manual_seed(SPLIT_OFFSETS[split] + index)
    torch.rand((), generator=g)  # world_image's domain coin
    attrs = sample_object_attrs(g)
    u = torch.rand(5, generator=g)
    tint = BACKGROUND_TINT * (2 * torch.rand(3, generator=g) - 1)
    camera = Camera(ORBIT_ELEVATION, 360.0 * u[1].item(), ORBIT_DISTANCE, ORBIT_FOVY) if u[0] < ORBIT_PROB else attrs.camera
    size = LOW_RES if u[2] < LOW_RES_PROB else 64
    grey = BACKGROUND_GREY[0] + (BACKGROUND_GREY[1] - BACKGROUND_GREY[0]) * u[4]
    background = (grey + tint).clamp(0, 1) if u[3] < BACKGROUND_PROB else None
    return render_resized(attrs, [camera], size, background=background)[0], attrs


def object_batch(split: str, start: int, n: int, benchmark_views: bool = False):
    """Images [n,3,64,64] and (shape, colour) label tensors of ``n`` objects of ``split``: the world's object
    images, or with ``benchmark_views`` ``training_object``'s."""
    imgs, shapes, colours = [], [], []
    for i in tqdm(range(start, start + n), desc=f"{split} objects", mininterval=10):
        if benchmark_views:
            img, attrs = training_object(split, i)
        else:
            img, _, attrs = world_image(split, i, "object")
        imgs.append(img)
        shapes.append(OBJECT_SHAPES.index(attrs.shapes[0]))
        colours.append(COLOUR_NAMES.index(attrs.colours[0]))
    return torch.stack(imgs), torch.tensor(shapes), torch.tensor(colours)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=24000)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--orbit-draws", type=int, default=10, help="held-out objects per shape and colour at the benchmark's views")
    p.add_argument("--offset", type=int, default=900_000_000, help="first training-split seed used")
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(WEIGHTS))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    x, ys, yc = object_batch("train", a.offset, a.images, benchmark_views=True)
    xe, yse, yce = object_batch("eval", 0, a.eval_images)
    model = ObjectClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    steps = a.epochs * (a.images // a.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps)
    t0 = time.time()
    model.train()
    for step in tqdm(range(steps), desc="classifier", mininterval=10):
        idx = torch.randint(a.images, (a.batch,), generator=g)
        s, c = model(augment(x[idx], g))
        loss = F.cross_entropy(s, ys[idx]) + F.cross_entropy(c, yc[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        preds = [model(xe[i : i + 256]) for i in range(0, len(xe), 256)]
        ps, pc = torch.cat([p[0] for p in preds]).argmax(1), torch.cat([p[1] for p in preds]).argmax(1)
    print(f"held-out ({a.eval_images} objects): shape {(ps == yse).float().mean():.4f}, colour {(pc == yce).float().mean():.4f}; "
          f"{steps} steps, {time.time() - t0:.0f} s")
    for background, name in ((None, "white"), (0.9, "grey 0.9")):
        for size in (LOW_RES, 64):
            acc = orbit_reader_accuracy(a.orbit_draws, reader=Reader(model), size=size, background=background)
            print(f"held-out at the benchmark's test orbit, {size} px -> 64, {name} ({acc['images']} renders): "
                  f"shape {acc['shape']:.4f}, colour {acc['colour']:.4f}; shapes read {acc['shape_confusion']}")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.out)
    print(a.out)


if __name__ == "__main__":
    main()
