"""Forward + backward time of the differentiable rasterizer (dreamsampler.vector.rasterizer).

Scenes follow the paper's initialisation (closed 4-segment paths, radius 20, random fill, opacity
U(0.7, 1)); the "grown" scenes use radius 60, overlapping like paths later in an optimisation.
Each row: median and min over --repeats runs of render + backward of a random-weighted sum, after
one warm-up run. pydiffvg rows appear where pydiffvg imports, CUDA rows where a GPU is present.

    python benchmarks/rasterizer.py [--repeats 7] [--threads N]

On a shared machine whose load exceeds its cores, torch's OpenMP threads spin-wait on each other and
small kernels slow down by an order of magnitude; the header prints the load average, and
``OMP_WAIT_POLICY=PASSIVE`` (or ``--threads 1``) gives numbers that reflect the code.
"""
import argparse
import os
import statistics
import time

import torch

from dreamsampler.vector.rasterizer import diffvg_available, render
from dreamsampler.vector.svg import init_scene

SCENES = [  # (label, paths, canvas, radius)
    ("128 paths 224x224", 128, 224, 20.0),
    ("512 paths 512x512", 512, 512, 20.0),
    ("128 paths 224x224 grown", 128, 224, 60.0),
    ("512 paths 512x512 grown", 512, 512, 60.0),
]
TARGET = ("128 paths 224x224", "torch", "cpu", 0.5)  # seconds, on the 2-core development machine


def time_once(scene, size, backend, device):
    pts = scene.points.to(device).requires_grad_()
    cols = scene.colors.to(device).requires_grad_()
    op = scene.opacity.to(device).requires_grad_()
    bg = scene.background.to(device).requires_grad_()
    weights = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(1)).to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    img = render(pts, cols, op, bg, size, size, backend=backend)
    (img * weights).sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [("torch", "cpu")]
    if torch.cuda.is_available():
        configs.append(("torch", "cuda"))
    if diffvg_available():
        configs += [("diffvg", "cpu")] + ([("diffvg", "cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"pydiffvg: {diffvg_available()}, CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    print(f"{'scene':28s} {'backend':8s} {'device':6s} {'median s':>9s} {'min s':>8s}")
    results = {}
    for label, paths, size, radius in SCENES:
        scene = init_scene(paths, size, size, radius=radius, generator=torch.Generator().manual_seed(0))
        for backend, device in configs:
            time_once(scene, size, backend, device)
            runs = [time_once(scene, size, backend, device) for _ in range(args.repeats)]
            results[(label, backend, device)] = statistics.median(runs)
            print(f"{label:28s} {backend:8s} {device:6s} {statistics.median(runs):9.4f} {min(runs):8.4f}")
    for label, *_ in SCENES:
        if (label, "diffvg", "cpu") in results:
            print(f"{label}: torch / pydiffvg (cpu) = {results[(label, 'torch', 'cpu')] / results[(label, 'diffvg', 'cpu')]:.2f}")
    label, backend, device, limit = TARGET
    got = results[(label, backend, device)]
    print(f"target: {label} forward+backward < {limit} s on CPU: {got:.4f} s -> {'met' if got < limit else 'NOT met'}")


if __name__ == "__main__":
    main()
