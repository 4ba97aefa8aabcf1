"""Text-to-image: DreamSampler's identity generator (= DDIM) against latents optimized by score distillation."""
from __future__ import annotations

import functools
import os
import tempfile
from collections import defaultdict
from typing import Dict, List

import numpy as np
import torch
import yaml

from dreamsampler.world import MINI_SD

from .common import (SCENE_SEED, Method, Settings, Task, cached_image, mini_corrective, quantized, read_png, row,
                     run)

T2I_CAPTIONS = ("a red circle", "a blue square", "a green triangle", "a yellow star", "a black circle")
T2I_CFG = 4.0  # the mini model's sampling scale (its model card)
SDS_CFG = 100.0  # DreamFusion's
LMC_CFG = 10.0  # the -lmc variants' scale (LMC-SDS sec. 5: a tenth of DreamFusion's)
# the bridge's y_src: the null prompt, as in text-to-NeRF (text_to_nerf.BRIDGE_NULL says why)
BRIDGE_2D_CFG, BRIDGE_2D_SCALE = 40.0, 25.0  # the bridge paper's text-to-image: s = 40 in stage 1 (the first 20%), then w = 25
# The DreamSampler row is a run of the shipped config (``t2i_nfe`` DDIM steps); the others are latents optimized by
# ``sds_latent`` for ``t2i_steps`` steps, their overrides the guidance's fields (``field=value``, values read as
# YAML; ``{k_psi}``: k_psi for the mini model, ``{bridge_start}``: the first 20% of the steps). The folders
# (a run's, a latent's cached PNGs) predate slug(label): named here.
T2I_METHODS = (
    Method("dreamsampler", "dreamsampler (identity generator = ddim)", "dreamsampler-text-to-image",
           (f"system.guidance_scale={T2I_CFG}",), folder="ddim", unet_per_step=2),
    Method("sds", "sds latent", folder="sds-latent", unet_per_step=2),
    Method("lmc-sds", "lmc-sds latent", overrides=("mode=lmc", f"guidance_scale={LMC_CFG}", "lmc_checkpoint={k_psi}"),
           folder="lmc-latent", unet_per_step=2),
    Method("sds-lmc-cfg", "sds latent at lmc's cfg", overrides=(f"guidance_scale={LMC_CFG}",), folder="sds-latent-lmc-cfg",
           unet_per_step=2),
    Method("bridge", "bridge latent (y_src = null)", overrides=(
        "mode=bridge", "source_prompt=''", f"guidance_scale={BRIDGE_2D_CFG}", f"bridge_scale={BRIDGE_2D_SCALE}",
        "bridge_start_step={bridge_start}"), folder="bridge-latent", unet_per_step=2),
)


@functools.lru_cache(maxsize=1)
def world_spread(n: int = 500) -> Dict[str, float]:
    """Standard deviation of a single shape's x, y and size over the world's own icons (eval split)."""
    from dreamsampler.world import sample_icon_attrs

    attrs = [sample_icon_attrs(torch.Generator().manual_seed(SCENE_SEED + 500_000 + k), count=1) for k in range(n)]
    return {"x": float(np.std([a.positions[0][0] for a in attrs])), "y": float(np.std([a.positions[0][1] for a in attrs])),
            "size": float(np.std([a.sizes[0] for a in attrs]))}


def sds_latent(caption: str, seed: int, steps: int, **guidance) -> torch.Tensor:
    """Baseline: a 8x8 latent optimized by score distillation through this project's ``dreamsampler-guidance``
    (mode ``sds``: random t, fresh noise, w = 1 - abar, CFG 100, as DreamFusion; ``guidance`` overrides the
    mode and its fields, e.g. LMC-SDS or the bridge), Adam lr 0.05; decoded with the VAE."""
    from dreamsampler_launcher.run_threestudio import load_threestudio

    ts = load_threestudio(cpu=True)
    cwd = os.getcwd()
    try:
        os.chdir(tempfile.mkdtemp())  # the prompt processor caches its embeddings in the working directory
        pp_cfg = {"pretrained_model_name_or_path": str(MINI_SD), "prompt": caption, "spawn": False}
        prompt_utils = ts.find("stable-diffusion-prompt-processor")(pp_cfg)()
        cfg = {"pretrained_model_name_or_path": str(MINI_SD), "mode": "sds", "weighting_strategy": "sds",
               "guidance_scale": SDS_CFG, "view_dependent_prompting": False, "trainer_max_steps": steps,
               "prompt_processor": pp_cfg, **guidance}
        guidance = ts.find("dreamsampler-guidance")(cfg)
    finally:
        os.chdir(cwd)
    torch.manual_seed(seed)
    latent = torch.randn(1, 8, 8, 4).requires_grad_(True)  # threestudio's [B, H, W, C]
    opt = torch.optim.Adam([latent], lr=0.05)
    zeros = torch.zeros(1)
    for step in range(steps):
        guidance.update_step(0, step)
        out = guidance(latent, prompt_utils, elevation=zeros, azimuth=zeros, camera_distances=zeros + 1, rgb_as_latents=True)
        opt.zero_grad()
        out["loss_sds"].backward()
        opt.step()
    with torch.no_grad():
        return quantized(guidance.decode_latents(latent.detach().permute(0, 3, 1, 2)))


def guidance_fields(overrides: List[str]) -> dict:
    """``field=value`` overrides of :func:`sds_latent`'s guidance as keyword arguments (values read as YAML)."""
    return {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}


def text_to_image(task: str = "text-to-image") -> Task:
    """Text-to-image: the identity generator with DreamSampler (= DDIM, the shipped config at CFG 4)
    against a latent optimized by SDS and one by LMC-SDS (k_psi trained for the mini model), and SDS at
    LMC's CFG (what L_lmc replaces, at the same scale), and one by the bridge as its paper ran text-to-image (SDS
    at s = 40 for the first 20% of the steps, then 25 (eps(y) - eps(y_src)), y_src the null prompt); attributes
    read back, spread over seeds."""

    def rows(s: Settings):
        out, figure, spreads = [], [], defaultdict(list)
        latents = {m: guidance_fields(m.args(k_psi=lambda: mini_corrective(s), bridge_start=s.t2i_steps // 5))
                   for m in T2I_METHODS if not m.config}
        for c, caption in enumerate(T2I_CAPTIONS):
            shown, reads = [], defaultdict(list)
            for seed in range(s.t2i_seeds):
                imgs = {}
                for m in T2I_METHODS:
                    if m.config:
                        imgs[m] = read_png(run(s, m.config, m.where(task, f"{c}-{seed}"), [
                            f"system.prompt={caption!r}", *m.args(), f"seed={seed}"], steps=s.t2i_nfe) / "result.png")
                    else:
                        imgs[m] = cached_image(s.out / "runs" / task / m.run_folder / f"{c}-{seed}.png",
                                               lambda: sds_latent(caption, seed, s.t2i_steps, **latents[m]))
                colour, shape = caption.split()[1:]
                for m, img in imgs.items():
                    read = s.reader(img, "icon")[0]
                    ok = read["count"] == 1
                    out.append(row(m, f"{c}-{seed}", prompt=caption,
                                   unet_evals=m.unet_per_step * (s.t2i_nfe if m.config else s.t2i_steps),
                                   colour_ok=ok and read["colours"][0] == colour, shape_ok=ok and read["shapes"][0] == shape))
                    if ok:
                        reads[m.id].append((*read["positions"][0], read["sizes"][0]))
                if seed < 2:
                    shown += list(imgs.values())
            for key, rs in reads.items():
                if len(rs) > 1:
                    spreads[key].append(np.std(np.array(rs), axis=0) / np.array(list(world_spread().values())))
            figure.append(shown)
        for r in out:  # the spread of position / size over seeds, as a fraction of the world's (mean over captions)
            sp = spreads.get(r["id"])
            r["spread_vs_world"] = float(np.mean(sp)) if sp else float("nan")
        return out, figure, [f"{m.label} seed {k}" for k in range(2) for m in T2I_METHODS]

    return Task(T2I_METHODS, rows)
