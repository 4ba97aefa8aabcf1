"""Per-step wall time and peak memory of ``dreamsampler-guidance`` against threestudio's own guidance of
the same model family (``stable-diffusion-guidance``; with ``--family if`` DeepFloyd IF's
``deep-floyd-guidance``): same pipeline, image size, batch, prompt and device, in one run.

A step is what a training step asks of a guidance: ``update_step``, the call on a rendered batch
[B, size, size, 3] (upsampled to 512x512 and VAE-encoded inside both guidances; for IF resized to its
64x64 pixels), and the backward of its losses. Rows: threestudio's guidance; ours (default config); ours
with ``pixel_loss: true`` (adds a VAE decode of the target and a pixel loss; for IF only the loss); for SD
also threestudio's ``stable-diffusion-sdi-guidance`` and ours with ``mode: sdi``, both with sdi.yaml's
fields (CFG 7.5, ours 8.5; 10 inversion steps at -7.5, ours -6.5; eta 0.3; t annealed from 0.98 to 0.25 over
the run, so each step inverts through fewer grid steps: the same ones in both; batch 1 only, as
threestudio's SDI takes ``int(t)`` of the batch's timesteps). Times are medians over ``--steps`` after
``--warmup`` steps, the rows interleaved step by step, every row's step i seeded alike (torch and Python's
``random``: the same VAE samples, SDI offsets and inversion noise in both SDI rows). Peak memory is the
largest growth during one step: on CUDA ``max_memory_allocated``; on CPU the resident set size, sampled
every millisecond, with a fixed glibc mmap threshold so that freed tensors leave the RSS. CUDA when there is a GPU
(fp16 weights, threestudio's default), else CPU (fp32; threestudio runs on the CPU backend).

UNet evaluations per step are counted, not assumed: a forward pre-hook on each guidance's UNet adds up the
batch of every call (a CFG pair of one image counts 2); the column is their median over the timed steps.
Ours also logs ``unet_evals`` in its output, which the script checks against the count. A CFG step is 2
per image; an SDI step at timestep t is 2 (k + 2) per image, k the inversion grid's timesteps below t
(threestudio's ``invert_noise``: k + 1 CFG calls from one grid step below 0 through the grid to t + delta,
then ``compute_grad_sdi``'s CFG call at t; 24 at t >= 902 with 10 steps on SD's grid 1, 101, ..., 901).

    python benchmarks/guidance_step.py [--family sd|if] [--size 64] [--batch 1] [--steps 5] [--warmup 2] [--model DIR] [--json FILE]

``--json`` also writes the table to a file (on CUDA each row with ``cuda_peak_total_mb`` too: the whole
``max_memory_allocated`` during its steps, the weights included; every row with its timed steps' counted
``unet_evals``, ours' logged ``unet_evals_logged`` and the ``timesteps`` where known); ``scripts/device_check.sh``
reads it.

Without ``--model`` it uses the family's tiny offline pipeline (built on first use). The CFG scale is
threestudio's default of each family (100 for SD, 20 for IF), ours one more (the same guidance: our CFG
is eps(null) + w (eps(c) - eps(null)), threestudio's eps(c) + w (eps(c) - eps(null))).
"""
import argparse
import gc
import os
import random
import statistics
import sys
import threading
import time

import psutil
import torch

from dreamsampler.testing import tiny_if_pipeline, tiny_pipeline
from dreamsampler_launcher import run_threestudio

FAMILIES = {  # family -> (threestudio's guidance, its prompt processor, the tiny pipeline's path, its CFG scale)
    "sd": ("stable-diffusion-guidance", "stable-diffusion-prompt-processor",
           lambda: tiny_pipeline.build_tiny_pipeline(tiny_pipeline.default_location()), 100.0),
    "if": ("deep-floyd-guidance", "deep-floyd-prompt-processor",
           lambda: tiny_if_pipeline.build_tiny_if_pipeline(tiny_if_pipeline.default_location()), 20.0),
}


class PeakRSS:
    """Peak resident set size above the level at entry, sampled in a thread."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.process = interval, psutil.Process()

    def __enter__(self):
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.growth = self.peak - self.base


class Runner:
    """One guidance and the step it is timed on: update_step, call, backward of its losses."""

    def __init__(self, threestudio, guidance_type, cfg, prompt_utils, args, device):
        self.guidance = threestudio.find(guidance_type)(cfg)
        self.prompt_utils, self.args, self.device = prompt_utils, args, device
        self.gen = torch.Generator().manual_seed(0)
        self.cams = dict(
            elevation=torch.full((args.batch,), 15.0, device=device),
            azimuth=torch.zeros(args.batch, device=device),
            camera_distances=torch.full((args.batch,), 2.0, device=device),
        )
        self.times, self.peaks, self.totals = [], [], []  # totals: CUDA's whole peak, the weights included
        self.evals, self.logged, self.timesteps = [], [], []  # per timed step: counted, ours' unet_evals, t
        self.seen = 0
        self.guidance.unet.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs):
        """Images through the UNet: the batch of each forward call (a CFG pair of one image counts 2)."""
        self.seen += (args[0] if args else kwargs["sample"]).shape[0]

    def step(self, i):
        args = self.args
        torch.manual_seed(i)  # the same random draws for every row's step i
        random.seed(i)
        rgb = torch.rand(args.batch, args.size, args.size, 3, generator=self.gen).to(self.device).requires_grad_()
        self.guidance.update_step(0, i)
        self.seen = 0
        out = self.guidance(rgb, self.prompt_utils, **self.cams)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        g = self.guidance  # under t_anneal threestudio's min_step == max_step is the step's t
        t = out.get("timestep", g.min_step if getattr(g, "min_step", None) == getattr(g, "max_step", -1) else None)
        return self.seen, out.get("unet_evals"), t

    def timed_step(self, i):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            evals, logged, t = self.step(i)
            self.times.append(time.perf_counter() - t0)
        self.evals.append(evals)
        self.logged.append(logged)
        self.timesteps.append(t)
        self.peaks.append(torch.cuda.max_memory_allocated() - base if self.device.type == "cuda" else rss.growth)
        if self.device.type == "cuda":
            self.totals.append(torch.cuda.max_memory_allocated())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="rendered image size fed to the guidance")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--family", choices=sorted(FAMILIES), default="sd", help="Stable Diffusion or DeepFloyd IF")
    ap.add_argument("--model", default=None, help="diffusers pipeline directory or model id of that family")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", default=None, help="also write the table to this JSON file")
    args = ap.parse_args()
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc keeps freed mid-size blocks mapped, which hides the next step's peak from the RSS;
        # a fixed mmap threshold returns every tensor buffer on free
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    if args.threads:
        torch.set_num_threads(args.threads)
    peer, processor, tiny, scale = FAMILIES[args.family]
    model = args.model or tiny()
    threestudio = run_threestudio.load_threestudio()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.chdir(run_threestudio.threestudio_root())  # the prompt processor caches embeddings under ./.threestudio_cache
    prompt_utils = threestudio.find(processor)(
        {"pretrained_model_name_or_path": model, "prompt": "a hamburger", "spawn": False}
    )()
    common = {"pretrained_model_name_or_path": model, "half_precision_weights": device.type == "cuda"}
    ours = dict(common, guidance_scale=scale + 1, trainer_max_steps=args.warmup + args.steps)
    variants = [  # (label, guidance type, config)
        (f"{peer} (threestudio)", peer, dict(common, guidance_scale=scale)),
        ("dreamsampler-guidance", "dreamsampler-guidance", ours),
        ("dreamsampler-guidance pixel_loss", "dreamsampler-guidance", dict(ours, pixel_loss=True)),
    ]
    if args.family == "sd" and args.batch > 1:
        print("no SDI rows: threestudio's stable-diffusion-sdi-guidance takes int(t) of the batch's timesteps "
              "(batch 1 only)")
    if args.family == "sd" and args.batch == 1:
        # SDI: threestudio's configs/sdi.yaml guidance fields (no Perp-Neg here: CFG scales + 1)
        sdi = dict(common, min_step_percent=0.25, max_step_percent=0.98, trainer_max_steps=args.warmup + args.steps,
                   inversion_n_steps=10, inversion_eta=0.3, t_anneal=True)
        variants += [
            ("stable-diffusion-sdi-guidance (threestudio)", "stable-diffusion-sdi-guidance",
             dict(sdi, guidance_scale=7.5, inversion_guidance_scale=-7.5)),
            ("dreamsampler-guidance mode=sdi", "dreamsampler-guidance",
             dict(sdi, mode="sdi", guidance_scale=8.5, inversion_guidance_scale=-6.5)),
        ]
    runners = [(label, Runner(threestudio, kind, cfg, prompt_utils, args, device)) for label, kind, cfg in variants]
    for i in range(args.warmup):
        for _, runner in runners:
            runner.step(i)
    for i in range(args.warmup, args.warmup + args.steps):  # interleaved: load changes hit every row alike
        for _, runner in runners:
            runner.timed_step(i)
    rows = [(label, statistics.median(r.times), max(r.peaks), statistics.median(r.evals)) for label, r in runners]

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nguidance step: batch {args.batch}, {args.size}x{args.size} render, {os.path.basename(model.rstrip('/'))}, {where}")
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "resident set size"
    print(f"peak MB: the largest growth of {memory} during a step")
    print("UNet/step: images through the UNet per step (counted at its forward), median over the timed steps")
    print(f"{'':44s} {'ms/step':>9s} {'peak MB':>9s} {'UNet/step':>9s} {'time x':>7s} {'mem x':>7s}")
    ref_t, ref_m = rows[0][1], max(rows[0][2], 1)
    for label, seconds, peak, evals in rows:
        print(f"{label:44s} {seconds * 1e3:9.1f} {peak / 2**20:9.1f} {evals:9g} "
              f"{seconds / ref_t:7.2f} {peak / ref_m:7.2f}")
    (_, ours_t, ours_m, _), (_, pix_t, pix_m, _) = rows[1], rows[2]
    print(f"pixel_loss cost over dreamsampler-guidance: time x{pix_t / ours_t:.2f}, peak memory x{pix_m / max(ours_m, 1):.2f}")
    if len(rows) > 3:
        (_, ts_sdi_t, ts_sdi_m, ts_sdi_n), (_, sdi_t, sdi_m, sdi_n) = rows[3], rows[4]
        print(f"mode=sdi over stable-diffusion-sdi-guidance: time x{sdi_t / ts_sdi_t:.2f}, "
              f"peak memory x{sdi_m / max(ts_sdi_m, 1):.2f}, UNet evaluations x{sdi_n / ts_sdi_n:.2f} "
              f"(per timed step: {runners[4][1].evals} vs {runners[3][1].evals} at t {runners[3][1].timesteps})")
    off = [label for label, r in runners if any(n is not None and n != c for n, c in zip(r.logged, r.evals))]
    print("logged unet_evals = counted: " + (f"NO for {off}" if off else "yes (every row of ours)"))

    if args.json:
        import json

        totals = {label: max(r.totals) / 2**20 for label, r in runners if r.totals}
        with open(args.json, "w") as f:
            json.dump({"device": where, "weights_dtype": "float16" if device.type == "cuda" else "float32",
                       "family": args.family, "model": model, "batch": args.batch, "size": args.size,
                       "steps": args.steps, "peak_memory": memory,
                       "rows": [{"label": label, "ms_per_step": seconds * 1e3, "peak_mb": peak / 2**20,
                                 "unet_evals_per_step": evals, "unet_evals": r.evals, "timesteps": r.timesteps,
                                 **({"unet_evals_logged": r.logged} if any(n is not None for n in r.logged) else {}),
                                 **({"cuda_peak_total_mb": totals[label]} if label in totals else {})}
                                for (label, seconds, peak, evals), (_, r) in zip(rows, runners)]}, f, indent=2)


if __name__ == "__main__":
    main()
