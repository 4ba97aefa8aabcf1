"""Train the world's object classifier (shape and colour of one 3D primitive) and save it as safetensors.

Images are world objects of the training split (seeds from ``--offset``), blurred and noised at random
(``augment``); accuracy is reported on the held-out split. Writes
``dreamsampler/world/object_classifier.safetensors`` (about 250 kB) unless ``--out`` says otherwise.

    python scripts/train_world_classifier.py [--images 12000] [--epochs 6]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dreamsampler.world import COLOUR_NAMES, OBJECT_SHAPES, world_image
from dreamsampler.world.object_classifier import WEIGHTS, ObjectClassifier, augment


def object_batch(split: str, start: int, n: int):
    """Images [n,3,64,64] and (shape, colour) label tensors of ``n`` world objects of ``split``."""
    imgs, shapes, colours = [], [], []
    for i in tqdm(range(start, start + n), desc=f"{split} objects", mininterval=10):
        img, _, attrs = world_image(split, i, "object")
        imgs.append(img)
        shapes.append(OBJECT_SHAPES.index(attrs.shapes[0]))
        colours.append(COLOUR_NAMES.index(attrs.colours[0]))
    return torch.stack(imgs), torch.tensor(shapes), torch.tensor(colours)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=12000)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--offset", type=int, default=900_000_000, help="first training-split seed used")
    p.add_argument("--epochs", type=int, default=6)
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
    x, ys, yc = object_batch("train", a.offset, a.images)
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
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.out)
    print(a.out)


if __name__ == "__main__":
    main()
