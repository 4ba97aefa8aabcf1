"""The guidance modes side by side, measured in one seeded run: ``python benchmarks/compare.py``.

Both halves run the core's mode functions (``dreamsampler.distill.modes``), over the tiny UNet in (a)
and over the mixture's exact eps in (b): for ``bridge``, ``dds`` and ``lmc`` the functions
``dreamsampler-guidance`` calls; for ``sds`` and ``dreamsampler`` ``score_distillation``, the CFG
prediction and ``sds_gradient`` that the guidance composes itself (there with Perp-Neg as an option); for ``sdi``
the core's DDIM inversion (``ddim_invert_noise`` on ``inversion_timesteps``' grid) and ``sdi_gradient``, at the
guidance's SDI defaults (threestudio's sdi.yaml: CFG 7.5, inversion CFG -7.5 over a 10-step grid, eta 0.3) in (a)
and at the mixture's one scale with that grid and eta in (b) (t drawn as for the other random-t modes; annealing t
as sdi.yaml does leaves the generated particles as far from the modes: W1 1.26 against 1.16, 500 particles).

(a) Cost of one guidance step on the tiny pipeline's UNet (4x64x64 latents, i.e. 512x512
    renders, batch 1): the UNet evaluations each mode makes (one batched call, the guidance's),
    the mode's gradient (the guidance's default weighting ``sds``), and the backward pass of the
    surrogate loss into the latent.
    Time (best of interleaved repetitions, as timeit reports: the least disturbed by other load), peak memory allocated during the step and matmul/conv
    GFLOP, each also as a ratio against ``sds``. The VAE is left out (the same for every mode; dds's
    source latent is encoded once and cached). k_psi is the paper-sized corrective (32 filters,
    4 levels, untrained: only its cost matters here). Stable Diffusion 1.5's UNet has ~1,000x the
    tiny one's parameters, so k_psi's share of a real step is far smaller than here.
(b) A ground-truth "diffusion model": a 2-D mixture of four Gaussians (means (+-2, +-2), std 0.3)
    with exact eps(z_t, t, c), the condition c being a subset of modes. 2,000 particles (identity
    generator) are optimised by each mode, from z = 0 (generate) and from samples of the lower two
    modes (edit, the source condition known); reported: sliced W1 distance to true samples of the
    target p(x | c), target modes covered (>= 20% of their share), share of particles within 4 std of
    a target mode, within-mode std / true std (mode-seeking collapse shows as a ratio well below 1)
    and the distance of each target mode's particle mean to its centre.

Everything is seeded; (b) runs single-threaded in float64, so its numbers repeat exactly on a
machine. Timings in (a) depend on the machine and its load; FLOPs and memory do not.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch
from diffusers import DDIMScheduler
from torch import Tensor, nn

from dreamsampler import DreamSampler, decreasing_timesteps, distill
from dreamsampler.diffusion.process import forward_noise
from dreamsampler.diffusion.reverse import ddim_invert_noise
from dreamsampler.diffusion.schedules import inversion_timesteps
from dreamsampler.distill import lmc
from dreamsampler.distill.modes import (
    bridge_distillation,
    dds_distillation,
    lmc_distillation,
    score_distillation,
    sdi_gradient,
    source_prompt,
)
from dreamsampler.testing.gaussian_mixture import GaussianMixture, sliced_wasserstein
from dreamsampler.testing.tiny_pipeline import SCHEDULER_CONFIG, build_tiny_pipeline, default_location

MODES = ("sds", "dreamsampler", "sdi", "bridge", "dds", "lmc", "lmc (c = 1)", "lmc + fixed eps")
# sdi: the guidance's defaults, threestudio's sdi.yaml (CFG 7.5, inversion CFG -7.5 over a 10-step DDIM grid, eta 0.3)
SDI_SCALE, SDI_INVERSION_SCALE, SDI_STEPS, SDI_ETA = 7.5, -7.5, 10, 0.3


def sdi_latent(eps_fn, z: Tensor, t: int, alphas: Tensor, cond, uncond, scale: float, n_steps: int, eta: float,
               generator) -> Tensor:
    """SDI's z_t: ``z`` DDIM-inverted to ``t`` (levels ``alphas``) with CFG ``scale`` (the core's ``ddim_invert_noise``
    on the ``inversion_timesteps`` grid, delta 0), the inversion's noise from ``generator``; the first step's prediction,
    at the clean level (a negative timestep on the grid), is taken at t = 0 (the mixture's exact eps needs a level)."""

    def guided(z_, s):
        return distill.guided_prediction(eps_fn, z_, torch.full((z_.shape[0],), max(s, 0), device=z_.device), cond, uncond, scale)

    randn = lambda like: torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
    return ddim_invert_noise(guided, z, inversion_timesteps(t, n_steps), alphas, 1.0, eta, randn)[0]


# ----------------------------------------------------------------- (a) cost on the tiny UNet
@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's C++ start/stop lines (fd 2) while it runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_bytes(step, device: torch.device) -> int:
    """Peak of the memory allocated during ``step()`` above what was held before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def guidance_steps(device: torch.device, seed: int):
    """One callable per mode doing a guidance-like step on the tiny UNet, and the model sizes."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = build_tiny_pipeline(default_location())
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet").to(device).eval().requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").to(device).eval()
    target = "a photo of a cat"
    prompts = [target, "", source_prompt(target), "a photo of a dog"]
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tgt, null, bridge_src, dds_src = enc(ids.input_ids.to(device))[0].chunk(4)
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.to(device)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 4, 64, 64, generator=g).to(device).requires_grad_(True)  # the render's latent
    z_src = torch.randn(1, 4, 64, 64, generator=g).to(device)  # dds: the source latent, encoded once
    torch.manual_seed(seed)
    k = lmc.CorrectiveUNet().to(device).eval().requires_grad_(False)
    fixed = lmc.FixedNoise(seed)
    ds = DreamSampler(alphas.cpu(), decreasing_timesteps(1000, 20, 980))
    index = iter(range(len(ds)))
    calls = {"unet": 0, "k_psi": 0}  # network evaluations (batch rows), counted as the steps run
    k.register_forward_hook(lambda module, args, out: calls.update(k_psi=calls["k_psi"] + out.shape[0]))

    def eps(z_t, t, emb):
        calls["unet"] += z_t.shape[0]
        return unet(z_t, t, encoder_hidden_states=emb).sample

    def draw():
        t = torch.randint(20, 981, (1,), generator=g).to(device)
        return t, alphas[t].view(-1, 1, 1, 1), torch.randn(z.shape, generator=g).to(device)

    def w(a):
        return distill.weighting("sds", a)  # the guidance's default weighting_strategy

    def apply(grad):
        z.grad = None
        distill.surrogate_loss(z, grad).backward()

    def sds():
        t, a, e = draw()
        with torch.no_grad():
            grad, _ = score_distillation(eps, forward_noise(z, e, a), t, tgt, null, e, 100.0, w(a))
        apply(grad)

    def dreamsampler():
        i = next(index)
        t = ds.timesteps[i].view(1).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        with torch.no_grad():
            z_t = ds.add_noise(z.detach(), i, generator=g)
            grad, eps_hat = score_distillation(eps, z_t, t, tgt, null, ds.noise_tilde(i), 100.0, w(a))
            ds.step(z_t, eps_hat, i)
        apply(grad)

    def sdi():
        t, a, _ = draw()
        with torch.no_grad():
            z_t = sdi_latent(eps, z.detach(), int(t), alphas, tgt, null, SDI_INVERSION_SCALE, SDI_STEPS, SDI_ETA, g)
            grad = sdi_gradient(z.detach(), z_t, distill.guided_prediction(eps, z_t, t, tgt, null, SDI_SCALE), a)
        apply(grad)

    def bridge():
        t, a, e = draw()
        with torch.no_grad():
            grad, _ = bridge_distillation(eps, forward_noise(z, e, a), t, tgt, bridge_src, 25.0, w(a))
        apply(grad)

    def dds():
        t, a, e = draw()
        with torch.no_grad():
            grad, _ = dds_distillation(eps, forward_noise(z, e, a), forward_noise(z_src, e, a), t, tgt, dds_src, 7.5, w(a))
        apply(grad)

    def lmc_step(fixed_noise: bool):
        def step():
            t, a, e = draw()
            with torch.no_grad():
                z_t_fixed = forward_noise(z, fixed(z.shape, device=device), a) if fixed_noise else None
                grad, _ = lmc_distillation(eps, k, z, forward_noise(z, e, a), t, a, tgt, null, 7.5, w(a), z_t_fixed=z_t_fixed)
            apply(grad)
        return step

    steps = {"sds": sds, "dreamsampler": dreamsampler, "sdi": sdi, "bridge": bridge, "dds": dds,
             "lmc": lmc_step(False), "lmc + fixed eps": lmc_step(True)}
    sizes = {"unet": sum(p.numel() for p in unet.parameters()), "k_psi": sum(p.numel() for p in k.parameters())}
    return steps, sizes, calls


def measure_cost(device: torch.device, reps: int, seed: int):
    """{mode: (best seconds, peak bytes, flops, network evaluations)}; the first call of each mode counts
    FLOPs and UNet / k_psi evaluations, the second profiles memory (both also warm up), then ``reps``
    rounds of one timed call per mode, in a seeded random order per round so that load changes and
    order effects spread over all modes."""
    from torch.utils.flop_counter import FlopCounterMode

    steps, sizes, calls = guidance_steps(device, seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    flops, peaks, evals = {}, {}, {}
    for m, step in steps.items():
        calls.update(unet=0, k_psi=0)
        with FlopCounterMode(display=False) as fc:
            step()
        flops[m] = fc.get_total_flops()
        evals[m] = f"{calls['unet']}" + (f" + {calls['k_psi']} k_psi" if calls["k_psi"] else "")
        peaks[m] = peak_bytes(step, device)
    times = {m: [] for m in steps}
    order = list(steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(reps):
        for m in (order[i] for i in torch.randperm(len(order), generator=g).tolist()):
            step = steps[m]
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[m].append(time.perf_counter() - t0)
    return {m: (min(times[m]), peaks[m], flops[m], evals[m]) for m in steps}, sizes


# ---------------------------------------------------------------------- (b) the mixture
GM = GaussianMixture(torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]]), torch.tensor(0.3))
TARGET, SOURCE = [0, 1], [2, 3]  # c: the upper two modes; the edit starts from the lower two
STEPS, LR, T_RANGE = 1000, 0.05, (20, 500)  # every random-t mode: SGD, weighting "sds" = 1 - abar
SCALE = 1.0  # CFG / difference scale: eps(c) is exact here, so scale 1 targets p(x | c) itself
BRIDGE_STAGE1 = 200  # the bridge paper's SDS stage (2D: 500 of 2,500 steps), generation only


class MixtureCorrective(nn.Module):
    """k_psi for 2-D points: k(x, t) = s(t) x + b(t), s and b from the 10-d frequency encoding of t.

    The 2-D analogue of the time-dependent frequency bias b_t of eq. 8: a t-dependent linear filter
    that, like the paper's small U-Net, cannot represent where the modes are (pi), only the
    denoiser's t-dependent shrinkage.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, width), nn.SiLU(), nn.Linear(width, 3))

    def forward(self, x: Tensor, t) -> Tensor:
        t = torch.as_tensor(t).flatten()
        p = self.net(lmc.timestep_encoding(t.expand(x.shape[0]) if t.numel() == 1 else t).to(x.dtype))
        return p[:, :1] * x + p[:, 1:]


def train_mixture_corrective(alphas: Tensor, seed: int, steps: int = 1500, batch: int = 512) -> MixtureCorrective:
    """Regress Tweedie(z_t, eps_u) on samples of the unconditional mixture (eq. 10, no normalization)."""
    torch.manual_seed(seed)
    k = MixtureCorrective().double()
    g = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            t = torch.randint(20, 981, (1,), generator=g).expand(batch)
            yield GM.sample(batch, generator=g), t, torch.randn(batch, 2, generator=g, dtype=torch.float64)

    lmc.train_corrective(k, lambda z_t, t: GM.eps(z_t, alphas[t[0]]), batches(), alphas, steps, lr=1e-3,
                         normalize_target=False)
    return k.requires_grad_(False)


def run_random_t(grad_fn, z0: Tensor, alphas: Tensor, seed: int) -> Tensor:
    """SGD on the SDS-form gradient with t ~ U{T_RANGE} and fresh noise every step."""
    g = torch.Generator().manual_seed(seed)
    z = z0.clone()
    for i in range(STEPS):
        t = int(torch.randint(T_RANGE[0], T_RANGE[1] + 1, (1,), generator=g))
        a = alphas[t]
        e = torch.randn(z.shape, generator=g, dtype=torch.float64)
        z = z - LR * grad_fn(i, z, torch.full((z.shape[0],), t), a, forward_noise(z, e, a), e)
    return z


def run_dreamsampler(z0: Tensor, alphas: Tensor, seed: int, steps: int = 100) -> Tensor:
    """Alg. 2 with an identity generator: reverse schedule 980 -> 20, carried noise, one SGD step of
    size 1 with the Tweedie weighting per timestep (the exact argmin of eq. 13)."""
    g = torch.Generator().manual_seed(seed)
    ts = decreasing_timesteps(steps, 20, 980)
    ds = DreamSampler(alphas, ts)
    eps_fn, n = GM.eps_fn(alphas), z0.shape[0]
    tgt, null = GM.embedding(TARGET, n), GM.embedding(None, n)
    z = z0.clone()
    for i in range(steps):
        a = alphas[ts[i]]
        z_t = ds.add_noise(z, i, generator=g)
        grad, eps_hat = score_distillation(eps_fn, z_t, ts[i].expand(n), tgt, null, ds.noise_tilde(i), SCALE,
                                           distill.weighting("tweedie", a))
        ds.step(z_t, eps_hat, i)
        z = z - grad
    return z


def mixture_runs(n: int, seed: int):
    """{(task, mode): (particles or None when the mode does not apply, settings)}."""
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()
    g = torch.Generator().manual_seed(seed)
    blank = torch.zeros(n, 2, dtype=torch.float64)
    source = GM.sample(n, generator=g, cond=SOURCE)
    k = train_mixture_corrective(alphas, seed)
    fixed = lmc.FixedNoise(seed + 1)
    eps_fn = GM.eps_fn(alphas)
    tgt, null, src = GM.embedding(TARGET, n), GM.embedding(None, n), GM.embedding(SOURCE, n)

    def w(a):
        return distill.weighting("sds", a)

    def sds(i, z, t, a, z_t, e):
        return score_distillation(eps_fn, z_t, t, tgt, null, e, SCALE, w(a))[0]

    g_sdi = torch.Generator().manual_seed(seed + 2)

    def sdi(i, z, t, a, z_t, e):  # z_t from inverting z with the exact eps(c) (scale 1) and SDI's eta
        z_t = sdi_latent(eps_fn, z, int(t[0]), alphas, tgt, null, SCALE, SDI_STEPS, SDI_ETA, g_sdi)
        return sdi_gradient(z, z_t, distill.guided_prediction(eps_fn, z_t, t, tgt, null, SCALE), a)

    def bridge_generate(i, z, t, a, z_t, e):
        if i < BRIDGE_STAGE1:
            return sds(i, z, t, a, z_t, e)
        return bridge_distillation(eps_fn, z_t, t, tgt, null, SCALE, w(a))[0]

    def bridge_edit(i, z, t, a, z_t, e):
        return bridge_distillation(eps_fn, z_t, t, tgt, src, SCALE, w(a))[0]

    def dds(i, z, t, a, z_t, e):
        return dds_distillation(eps_fn, z_t, forward_noise(source, e, a), t, tgt, src, SCALE, w(a))[0]

    def lmc_grad(manifold_weight=None, fixed_noise=False):
        def grad(i, z, t, a, z_t, e):
            z_t_fixed = forward_noise(z, fixed(z.shape, dtype=z.dtype), a) if fixed_noise else None
            return lmc_distillation(eps_fn, k, z, z_t, t, a, tgt, null, SCALE, w(a), manifold_weight=manifold_weight,
                                    z_t_fixed=z_t_fixed, normalize_target=False)[0]
        return grad

    def run(fn, start):
        return lambda: run_random_t(fn, start, alphas, seed)

    common = f"{STEPS} SGD steps, lr {LR}, t ~ U{list(T_RANGE)}, w = 1 - abar, scale {SCALE:g}"
    eq9 = "c = w sqrt(abar/(1-abar)) (eq. 9 as derived; k = id would be SDS)"
    plan = {
        ("generate", "sds"): (run(sds, blank), common),
        ("generate", "dreamsampler"): (lambda: run_dreamsampler(blank, alphas, seed),
                                       "100 steps t 980 -> 20, carried noise (eta 0), lr 1, w = tweedie, scale 1"),
        ("generate", "sdi"): (run(sdi, blank), common.replace(", w = 1 - abar", "") + f"; z_t by DDIM inversion of z "
                              f"({SDI_STEPS}-step grid, eta {SDI_ETA}, scale {SCALE:g}), gradient z - Tweedie(z_t) (no w)"),
        ("generate", "bridge"): (run(bridge_generate, blank), common + f"; SDS for the first {BRIDGE_STAGE1} steps, then y_src = null"),
        ("generate", "dds"): (None, "needs a source image and a source prompt"),
        ("generate", "lmc"): (run(lmc_grad(), blank), common + "; " + eq9),
        ("generate", "lmc (c = 1)"): (run(lmc_grad(manifold_weight=1.0), blank), common + "; c = 1 (the paper drops the weighting)"),
        ("generate", "lmc + fixed eps"): (run(lmc_grad(fixed_noise=True), blank),
                                          common + "; " + eq9 + "; eps fixed per particle inside L_lmc only"),
        ("edit", "sds"): (run(sds, source), common),
        ("edit", "dreamsampler"): (None, "edits by DDIM inversion + CFG gamma_t (Alg. 3), not this task"),
        ("edit", "sdi"): (run(sdi, source), common.replace(", w = 1 - abar", "") + "; as in generate"),
        ("edit", "bridge"): (run(bridge_edit, source), common + "; y_src = the source condition, no SDS stage (editing)"),
        ("edit", "dds"): (run(dds, source), common + "; source prompt = the source condition, source image = the start"),
        ("edit", "lmc"): (run(lmc_grad(), source), common + "; " + eq9),
        ("edit", "lmc (c = 1)"): (run(lmc_grad(manifold_weight=1.0), source), common + "; c = 1"),
        ("edit", "lmc + fixed eps"): (run(lmc_grad(fixed_noise=True), source), common + "; " + eq9 + "; fixed eps in L_lmc"),
    }
    results = {key: (fn() if fn is not None else None, settings) for key, (fn, settings) in plan.items()}
    results[("edit", "start")] = (source, "the lower modes {2,3}, before any step")
    return results


def mixture_metrics(x: Tensor, true: Tensor) -> dict:
    """Sliced W1 to true target samples, covered target modes, share within 4 std of a target mode,
    within-mode std / true std, and the mean distance of the target modes' particle means to their centres."""
    covered, spread = GM.mode_stats(x, cond=TARGET)
    centres = GM.means[TARGET]
    near = (torch.cdist(x, centres).min(1).values < 4 * GM.stds[TARGET].max()).double().mean()
    assign = GM.assign(x)
    offsets = [float((x[assign == m].mean(0) - GM.means[m]).norm()) for m in TARGET if (assign == m).any()]
    return dict(sw=sliced_wasserstein(x, true), covered=covered, near=float(near), spread=spread,
                offset=sum(offsets) / len(offsets) if offsets else float("nan"))


# ---------------------------------------------------------------------------------- output
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Compare the guidance modes in one seeded run.")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per mode in (a)")
    p.add_argument("--particles", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for (a); 1 keeps ratios stable on a shared machine ((b) always uses 1)")
    args = p.parse_args(argv)
    t_start = time.time()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    cost, sizes = measure_cost(device, args.reps, args.seed)
    cost["lmc (c = 1)"] = cost["lmc"]  # the same computation; c only rescales L_lmc

    torch.set_num_threads(1)  # (b) bit-for-bit repeatable
    runs = mixture_runs(args.particles, args.seed)
    true = GM.sample(args.particles, generator=torch.Generator().manual_seed(args.seed + 100), cond=TARGET)
    floor = sliced_wasserstein(GM.sample(args.particles, generator=torch.Generator().manual_seed(args.seed + 200),
                                         cond=TARGET), true)
    metrics = {key: (mixture_metrics(x, true) if x is not None else None) for key, (x, _) in runs.items()}

    def cell(key):
        m = metrics[key]
        if m is None:
            return "n/a"
        return f"{m['sw']:.3f} · {m['covered']}/{len(TARGET)} · {100 * m['near']:.0f}% · {m['spread']:.2f}"

    base_t, base_m, base_f, _ = cost["sds"]
    print(f"## Guidance modes compared (`python benchmarks/compare.py`, seed {args.seed})\n")
    print(f"Device: {device.type} (CPU threads for the step cost: {args.threads}), torch {torch.__version__}. Step cost on the tiny UNet "
          f"({sizes['unet'] / 1e6:.2f} M parameters; k_psi {sizes['k_psi'] / 1e6:.2f} M), 4x64x64 latents, batch 1. "
          f"Mixture: {args.particles} particles, target c = modes {TARGET} of 4; cells read "
          f"sliced W1 to p(x|c) · target modes covered · share within 4 std of a target mode · within-mode std / true "
          f"(noise floor of W1: {floor:.3f}).\n")
    print("| mode | UNet (+ k_psi) evals / step | time ÷ sds | peak memory ÷ sds | GFLOP ÷ sds | generate from z = 0 "
          "| edit {2,3} → {0,1} |")
    print("|---|---|---|---|---|---|---|")
    for mode in MODES:
        t, m, f, evals = cost[mode]
        print(f"| {mode} | {evals} | {t / base_t:.2f} | {m / base_m:.2f} | {f / base_f:.2f} | "
              f"{cell(('generate', mode))} | {cell(('edit', mode))} |")
    print(f"| (edit start) | | | | | | {cell(('edit', 'start'))} |")

    print("\n### Details\n\n(a) one guidance-like step (timings depend on the machine and its load: on a busy shared "
          "CPU the ratios move by up to ~10% between runs; memory and FLOPs are exact)\n")
    print(f"| mode | ms / step (best of {args.reps}) | peak MiB during the step | GFLOP (matmul/conv) |")
    print("|---|---|---|---|")
    for mode in MODES:
        t, m, f, _ = cost[mode]
        print(f"| {mode} | {1e3 * t:.1f} | {m / 2**20:.1f} | {f / 1e9:.2f} |")
    print("\n(b) the mixture, with the mean distance of target-mode particle means to the true centres\n")
    print("| task | mode | sliced W1 | modes | within 4 std | within-mode std / true | centre offset | settings |")
    print("|---|---|---|---|---|---|---|---|")
    for (task, mode), (_, settings) in runs.items():
        m = metrics[(task, mode)]
        if m is None:
            print(f"| {task} | {mode} | n/a | | | | | {settings} |")
        else:
            print(f"| {task} | {mode} | {m['sw']:.3f} | {m['covered']}/{len(TARGET)} | {100 * m['near']:.1f}% | "
                  f"{m['spread']:.2f} | {m['offset']:.3f} | {settings} |".replace("| nan |", "| n/a |"))
    print("\nk_psi on the mixture: k(x, t) = s(t) x + b(t) fit by `lmc.train_corrective` (1,500 Adam steps) on "
          "unconditional samples. The bridge direction does not vanish at the target (nothing anchors the particles "
          "to the data), so with this step budget it overshoots; dds's source term cancels once the edit is done (here the "
          "target modes are translates of the source modes). sdi's noise is a function of the particle (its inversion), "
          "so particles that start at one point move as one (the inversion's eta term barely separates them): from "
          "z = 0 they settle at the target modes' mean, where z = Tweedie(inversion(z)); from the edit's spread-out "
          "start they reach the modes. "
          f"Total time {time.time() - t_start:.0f} s.")


if __name__ == "__main__":
    main()
