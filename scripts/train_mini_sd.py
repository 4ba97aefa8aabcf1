"""Train a miniature Stable Diffusion (VAE, CLIP text encoder, UNet) on the procedural world.

Two phases on a fixed pool of the first ``--pool`` training images of ``dreamsampler.world``: the
AutoencoderKL (64x64 RGB <-> 4 x 16 x 16 latent), then the UNet2DConditionModel together with a small
CLIPTextModel (word-level tokenizer: one token per grammar word, bytes for anything else) on the
frozen VAE's latents, epsilon prediction under SD's scaled-linear schedule, captions dropped to ""
10% of the time for classifier-free guidance, EMA weights saved. Between the phases the VAE's latent
space is centred on the pool (``center_latents``). Two knobs of the UNet phase:
``--icon-fraction`` draws that share of every batch from the pool's icons (the rest from its objects),
and ``--snr-gamma`` weights the loss by Min-SNR-gamma (Hang et al.,
"Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV 2023: min(SNR_t, gamma) / SNR_t
for epsilon prediction, as diffusers' text-to-image example's ``--snr_gamma``). The result is a diffusers folder
written with ``save_pretrained`` (safetensors) plus a model card (``mini_sd_card.md.in`` next to this
script, filled by ``model_card``).

Threads: torch's own choice, or ``--threads``. OpenMP's default wait policy (threads spin between
parallel regions) is 1.3x faster here than ``OMP_WAIT_POLICY=PASSIVE`` on an idle machine (a UNet step of
batch 64 on 2 cores: 0.26 s against 0.34 s); on a machine shared with other jobs, set PASSIVE.

Resumable: a checkpoint goes to ``<work>/checkpoint.pt`` every ``--ckpt-minutes``; ``--resume`` picks
it up (the batch indices and noise of step k depend only on the seed and k, so a resumed run sees
the same data as an uninterrupted one).

    python scripts/train_mini_sd.py --out DIR --work WORK_DIR [--resume]
    python scripts/train_mini_sd.py --out DIR --work WORK_DIR --quick   # 20+20 steps in seconds
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from tqdm import tqdm

from dreamsampler.metrics import psnr
from dreamsampler.testing.tiny_pipeline import SCHEDULER_CONFIG, tiny_vocabulary
from dreamsampler.world import WORDS, WorldDataset

MAX_TOKENS = 32
CAPTION_DROPOUT = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="diffusers folder to write")
    p.add_argument("--work", required=True, help="checkpoint, pool cache and log folder")
    p.add_argument("--resume", action="store_true", help="continue from <work>/checkpoint.pt")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny pool, 20 steps per phase")
    p.add_argument("--max-steps", type=int, default=None, help="stop each phase after this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=30000, help="training images (the first N of the train split)")
    p.add_argument("--eval-images", type=int, default=256, help="held-out images for PSNR and validation loss")
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-channels", default="16,32,64", help="encoder/decoder widths; n levels -> /2^(n-1)")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--center-latents", action=argparse.BooleanOptionalAction, default=True,
                   help="centre the latent space on the pool before the UNet phase (see center_latents)")
    p.add_argument("--vae-from", default=None, help="skip the VAE phase: take the VAE of this folder (one this script wrote)")
    p.add_argument("--unet-steps", type=int, default=16000)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=5e-4)
    p.add_argument("--icon-fraction", type=float, default=0.75, help="share of icons in a UNet batch (0.5: the world's mix)")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="Min-SNR-gamma loss weighting (0: plain MSE)")
    p.add_argument("--unet-channels", default="32,64,96")
    p.add_argument("--unet-attn", default="0,1,1", help="1 where a UNet level has cross-attention")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--text-width", type=int, default=64)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.quick:  # a tiny architecture and batch, so the smoke run takes seconds
        args.pool, args.eval_images, args.max_steps = 128, 32, args.max_steps or 20
        args.vae_steps = args.unet_steps = args.max_steps
        args.vae_channels, args.unet_channels, args.unet_attn, args.text_width = "8,16,16", "16,32", "0,1", 32
        args.vae_batch = args.unet_batch = 8
    if not 0.0 <= args.icon_fraction <= 1.0:
        p.error(f"--icon-fraction must lie in [0, 1], got {args.icon_fraction}")
    if args.max_steps is not None:
        args.vae_steps, args.unet_steps = min(args.vae_steps, args.max_steps), min(args.unet_steps, args.max_steps)
    return args


def ints(s: str):
    return tuple(int(v) for v in s.split(","))


# ----------------------------------------------------------------------------- models


def build_models(args):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed)
    vch = ints(args.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=vch,
        down_block_types=("DownEncoderBlock2D",) * len(vch),
        up_block_types=("UpDecoderBlock2D",) * len(vch),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=1.0,  # set from the latents' spread after the VAE phase
    )
    vocab, merges = tiny_vocabulary(WORDS)  # every grammar word one token
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.text_width,
            intermediate_size=2 * args.text_width,
            num_hidden_layers=args.text_layers,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    uch, attn = ints(args.unet_channels), ints(args.unet_attn)
    unet = UNet2DConditionModel(
        sample_size=64 // 2 ** (len(vch) - 1),
        in_channels=4,
        out_channels=4,
        block_out_channels=uch,
        layers_per_block=args.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=args.text_width,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    return vae, tokenizer, text_encoder, unet


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- data


def load_pool(work: Path, n: int, split: str = "train"):
    """The first ``n`` images of ``split`` as uint8 [n,3,64,64], their captions and a bool [n] mask of
    the icons (cached in ``work``)."""
    cache = work / f"pool-{split}-{n}.pt"
    if cache.exists():
        d = torch.load(cache)
        return d["images"], d["captions"], d["is_icon"]
    images, captions, is_icon = [], [], []
    ds = WorldDataset(split, batch_size=250 if n >= 250 else n)
    for k in tqdm(range((n + ds.batch_size - 1) // ds.batch_size), desc=f"world {split} pool", mininterval=30):
        x, c, attrs = ds.batch(k)
        images.append((x * 255).round().to(torch.uint8))
        captions += c
        is_icon += [a.domain == "icon" for a in attrs]
    d = {"images": torch.cat(images)[:n], "captions": captions[:n], "is_icon": torch.tensor(is_icon[:n])}
    torch.save(d, cache)
    return d["images"], d["captions"], d["is_icon"]


class DomainSampler:
    """Pool indices drawn with replacement, ``round(icon_fraction * batch)`` of a batch among the icons
    and the rest among the objects (the index lists built once, the fraction checked once)."""

    def __init__(self, is_icon: torch.Tensor, batch: int, icon_fraction: float):
        n_icon, self.draws = round(icon_fraction * batch), []
        for mask, k, name in ((is_icon, n_icon, "icons"), (~is_icon, batch - n_icon, "objects")):
            indices = torch.nonzero(mask).flatten()
            if k and not len(indices):
                raise ValueError(f"--icon-fraction {icon_fraction} needs {name} in the pool")
            if k:
                self.draws.append((indices, k))

    def __call__(self, g: torch.Generator) -> torch.Tensor:
        return torch.cat([indices[torch.randint(len(indices), (k,), generator=g)] for indices, k in self.draws])


def to_model(x_uint8):
    return x_uint8.float() / 127.5 - 1.0


def tokenize(tokenizer, captions):
    return tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids


def step_generator(seed: int, phase: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + phase * 100_000_007 + step)


# ----------------------------------------------------------------------------- training


def lr_at(step, total, base):
    """Linear warmup (200 steps, or a tenth of a short run), then cosine decay to 10% of ``base``."""
    warmup = min(200, max(1, total // 10))
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def vae_loss(vae, x, g, kl_weight):
    post = vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(x.device)
    rec = vae.decode(z).sample
    mse = F.mse_loss(rec, x)
    kl = post.kl().mean() / x[0].numel()
    return mse + kl_weight * kl, mse


@torch.no_grad()
def vae_round_trip_psnr(vae, images_uint8):
    """Mean PSNR (dB, images in [0,1]) of the VAE round trip (posterior mean)."""
    vals = []
    for i in range(0, len(images_uint8), 64):
        x = to_model(images_uint8[i : i + 64]).to(vae.device)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        vals.append(psnr((rec + 1) / 2, (x + 1) / 2))
    return torch.cat(vals).mean().item()


@torch.no_grad()
def center_latents(vae, mu: torch.Tensor) -> None:
    """Move the VAE's latent origin to ``mu`` [4] (per channel), folded into its two 1x1 convolutions so
    the decoder's output is unchanged: the encoder's mean loses ``mu`` (quant_conv's bias), the decoder adds
    it back (post_quant_conv's bias gains ``W mu``).

    Why: SD's scaled-linear schedule keeps sqrt(alpha_bar) = 0.076 of the signal at the first DDIM
    step (t = 981), so a model trained on latents whose mean is far from 0 (this VAE's white has channel
    means near -1.6 and -2.1) learns to read the image's mean from x_t there, while sampling starts
    from zero-mean noise: the model reads "less white background" and draws shapes too large (the
    non-zero terminal SNR flaw, Lin et al., "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", WACV 2024). SD3's VAE has a ``shift_factor`` for this, but ``StableDiffusionPipeline``
    ignores that field, so the shift is folded into the weights and the folder loads as plain SD."""
    vae.quant_conv.bias[: len(mu)] -= mu.to(vae.quant_conv.bias)
    w = vae.post_quant_conv.weight[:, :, 0, 0]
    vae.post_quant_conv.bias += w @ mu.to(w)


@torch.no_grad()
def encode_pool(vae, images_uint8):
    means, stds = [], []
    for i in range(0, len(images_uint8), 128):
        post = vae.encode(to_model(images_uint8[i : i + 128]).to(vae.device)).latent_dist
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
    return torch.cat(means), torch.cat(stds)


def unet_loss(unet, text_encoder, sched, z0, ids, g, snr_gamma=0.0):
    """Epsilon-prediction MSE; with ``snr_gamma`` > 0, each sample weighted by min(SNR_t, gamma) / SNR_t."""
    noise = torch.randn(z0.shape, generator=g).to(z0.device)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=g).to(z0.device)
    zt = sched.add_noise(z0, noise, t)
    cond = text_encoder(ids)[0]
    err = (unet(zt, t, encoder_hidden_states=cond).sample - noise).pow(2).flatten(1).mean(1)
    if not snr_gamma:
        return err.mean()
    snr = compute_snr(sched, t)
    return (err * snr.clamp(max=snr_gamma) / snr).mean()


def ema_update(ema_modules, modules, decay):
    with torch.no_grad():
        for em, m in zip(ema_modules, modules):
            torch._foreach_lerp_(list(em.parameters()), list(m.parameters()), 1 - decay)


class Trainer:
    """Both phases, checkpointing and the final save."""

    def __init__(self, args):
        from diffusers import DDPMScheduler

        self.args, self.work = args, Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.vae, self.tokenizer, self.text_encoder, self.unet = build_models(args)
        for m in (self.vae, self.text_encoder, self.unet):
            m.to(self.device)
        self.sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")})
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        self.opt = torch.optim.AdamW(
            list(self.unet.parameters()) + list(self.text_encoder.parameters()), lr=args.unet_lr, weight_decay=0.01
        )
        self.ema = [copy.deepcopy(self.unet).requires_grad_(False), copy.deepcopy(self.text_encoder).requires_grad_(False)]
        self.state = dict(phase=0, step=0, wall_s=0.0, cpu_s=0.0, history=[], scaling_factor=None, vae_psnr=None)
        self.ckpt = self.work / "checkpoint.pt"
        if args.resume and self.ckpt.exists():
            self.load()

    # -- checkpoints
    def save(self):
        blob = dict(
            state=self.state,
            vae=self.vae.state_dict(),
            vae_opt=self.vae_opt.state_dict(),
            unet=self.unet.state_dict(),
            text=self.text_encoder.state_dict(),
            opt=self.opt.state_dict(),
            ema_unet=self.ema[0].state_dict(),
            ema_text=self.ema[1].state_dict(),
            args=vars(self.args),
        )
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.ckpt)

    def load(self):
        blob = torch.load(self.ckpt, weights_only=False)
        self.state = blob["state"]
        self.vae.load_state_dict(blob["vae"])
        self.vae_opt.load_state_dict(blob["vae_opt"])
        self.unet.load_state_dict(blob["unet"])
        self.text_encoder.load_state_dict(blob["text"])
        self.opt.load_state_dict(blob["opt"])
        self.ema[0].load_state_dict(blob["ema_unet"])
        self.ema[1].load_state_dict(blob["ema_text"])
        print(f"resumed: phase {self.state['phase']} step {self.state['step']} ({self.state['wall_s'] / 60:.1f} min so far)")

    def load_vae(self, folder):
        """Skip the VAE phase: the VAE of a diffusers folder written by this script (same --vae-channels)."""
        from diffusers import AutoencoderKL

        try:
            self.vae.load_state_dict(AutoencoderKL.from_pretrained(folder, subfolder="vae").state_dict())
        except (OSError, RuntimeError) as e:
            raise SystemExit(f"--vae-from {folder}: no VAE of --vae-channels {self.args.vae_channels} there ({e})")

    def train_vae(self, pool, held_out, tick):
        """The VAE phase: ``--vae-steps`` steps on the pool, the held-out reconstruction MSE before and after."""
        a = self.args
        fixed = to_model(held_out[:64]).to(self.device)

        @torch.no_grad()
        def val() -> float:  # the same posterior draws every time
            return vae_loss(self.vae, fixed, step_generator(a.seed, 9, 0), a.kl_weight)[1].item()

        self.state.setdefault("vae_val_start", val())
        while self.state["step"] < a.vae_steps:
            s = self.state["step"]
            g = step_generator(a.seed, 0, s)
            for group in self.vae_opt.param_groups:
                group["lr"] = lr_at(s, a.vae_steps, a.vae_lr)
            x = to_model(pool[torch.randint(len(pool), (a.vae_batch,), generator=g)]).to(self.device)
            loss, mse = vae_loss(self.vae, x, g, a.kl_weight)
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.vae_opt.step()
            tick(mse.item())
        self.state["vae_val_end"] = val()

    # -- main loop, by phase
    def run(self):
        """Both phases (or what a resumed run has left of them), the final evaluation and the saved folder."""
        self.start_clock()
        pool, captions, draw, held_out, held_caps = self.load_data()
        self.open_progress_bar()
        if self.state["phase"] == 0:
            self.vae_phase(pool, held_out)
        means, stds, sf = self.encode_latents(pool)
        ids, empty = self.tokenize_captions(captions)
        fixed = self.validation_batch(held_out, held_caps, sf)
        self.state.setdefault("unet_val_start", self.validation_loss(fixed))
        self.train_unet(draw, means, stds, sf, ids, empty)
        self.bar.close()
        self.evaluate_unet(fixed)
        self.state["done"] = True
        self.save()
        self.export()

    def start_clock(self):
        """Start the wall and CPU clocks (adding to a resumed run's) and the checkpoint timer."""
        self.t_start, self.c_start, self.last_ckpt = time.time(), time.process_time(), time.time()
        self.wall0, self.cpu0 = self.state["wall_s"], self.state["cpu_s"]

    def load_data(self):
        """The training pool (images, captions, the UNet's icon/object sampler) and the held-out images and captions."""
        a = self.args
        pool, captions, is_icon = load_pool(self.work, a.pool)
        draw = DomainSampler(is_icon, a.unet_batch, a.icon_fraction)
        held_out, held_caps, _ = load_pool(self.work, a.eval_images, "eval")
        return pool, captions, draw, held_out, held_caps

    def open_progress_bar(self):
        """One progress bar over both phases' steps (none for the VAE with --vae-from), at the resumed step."""
        a = self.args
        vae_steps = 0 if a.vae_from else a.vae_steps
        self.bar = tqdm(total=vae_steps + a.unet_steps, initial=self.state["step"] + (vae_steps if self.state["phase"] == 1 else 0),
                        mininterval=30 if not sys.stderr.isatty() else 0.5, desc="mini-sd")

    def tick(self, loss):
        """After a training step: count it, update the clocks, bar and loss history, checkpoint when due."""
        self.state["step"] += 1
        self.state["wall_s"] = self.wall0 + time.time() - self.t_start
        self.state["cpu_s"] = self.cpu0 + time.process_time() - self.c_start
        self.bar.update(1)
        self.bar.set_postfix(phase=("vae", "unet")[self.state["phase"]], loss=f"{loss:.4f}", refresh=False)
        if self.state["step"] % 50 == 0:
            self.state["history"].append((self.state["phase"], self.state["step"], loss))
        if time.time() - self.last_ckpt > 60 * self.args.ckpt_minutes:
            self.save()
            self.last_ckpt = time.time()

    def vae_phase(self, pool, held_out):
        """Phase 0: train the VAE (or take --vae-from's), measure its round trip, centre its latents, checkpoint."""
        a = self.args
        if a.vae_from:
            self.load_vae(a.vae_from)
        else:
            self.train_vae(pool, held_out, self.tick)
        self.state["vae_psnr"] = vae_round_trip_psnr(self.vae, held_out)
        print(f"VAE held-out round-trip PSNR {self.state['vae_psnr']:.2f} dB")
        if a.center_latents:
            self.centre_latent_space(pool)
        self.state.update(phase=1, step=0)
        self.save()
        self.last_ckpt = time.time()

    def centre_latent_space(self, pool):
        """Fold the pool's per-channel latent mean (first 4096 images) into the VAE (``center_latents``)."""
        self.vae.eval()
        mu = encode_pool(self.vae, pool[:4096])[0].mean((0, 2, 3))  # the pool's latent mean, per channel
        center_latents(self.vae, mu)
        self.state["latent_shift"] = mu.tolist()

    def encode_latents(self, pool):
        """Freeze the VAE, encode the pool (posterior means and stds) and fix the scaling factor from their spread."""
        self.vae.requires_grad_(False).eval()
        means, stds = encode_pool(self.vae, pool)
        if self.state["scaling_factor"] is None:
            self.state["scaling_factor"] = 1.0 / means.std().item()
        return means, stds, self.state["scaling_factor"]

    def tokenize_captions(self, captions):
        """The pool's captions as token ids, and the empty caption's (what a dropped caption becomes)."""
        return tokenize(self.tokenizer, captions), tokenize(self.tokenizer, [""])

    def validation_batch(self, held_out, held_caps, sf):
        """The fixed held-out batch of the UNet's validation loss: 128 scaled latents, their tokens, a generator."""
        hm, _ = encode_pool(self.vae, held_out[:128])
        fixed_z, fixed_ids = (hm * sf).to(self.device), tokenize(self.tokenizer, held_caps[:128]).to(self.device)
        return fixed_z, fixed_ids, step_generator(self.args.seed, 8, 0)

    @torch.no_grad()
    def validation_loss(self, fixed, ema=False) -> float:
        """The denoising loss on the fixed held-out batch (the same noise every time), of the live or the EMA weights."""
        fixed_z, fixed_ids, fixed_g = fixed
        unet, text_encoder = self.ema if ema else (self.unet, self.text_encoder)
        return unet_loss(unet, text_encoder, self.sched, fixed_z, fixed_ids, copy.deepcopy(fixed_g)).item()

    def train_unet(self, draw, means, stds, sf, ids, empty):
        """Phase 1: the UNet and text encoder jointly on the frozen VAE's latents, ``--unet-steps`` steps, EMA kept."""
        a = self.args
        self.unet.train()
        self.text_encoder.train()
        while self.state["step"] < a.unet_steps:
            s = self.state["step"]
            g = step_generator(a.seed, 1, s)
            for group in self.opt.param_groups:
                group["lr"] = lr_at(s, a.unet_steps, a.unet_lr)
            idx = draw(g)
            z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * sf
            drop = torch.rand(len(idx), generator=g) < CAPTION_DROPOUT
            batch_ids = torch.where(drop[:, None], empty, ids[idx]).to(self.device)
            z0 = z0.to(self.device)
            loss = unet_loss(self.unet, self.text_encoder, self.sched, z0, batch_ids, g, a.snr_gamma)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(self.unet.parameters()) + list(self.text_encoder.parameters()), 1.0)
            self.opt.step()
            ema_update(self.ema, (self.unet, self.text_encoder), min(a.ema, (1 + s) / (10 + s)))
            self.tick(loss.item())

    def evaluate_unet(self, fixed):
        """The held-out denoising loss at the end, of the live and of the EMA weights."""
        self.state["unet_val_end"] = self.validation_loss(fixed)
        self.state["unet_val_end_ema"] = self.validation_loss(fixed, ema=True)

    # -- output
    def export(self):
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        a, out = self.args, Path(self.args.out)
        for m in (self.vae, *self.ema):
            m.to("cpu")
        self.vae.register_to_config(scaling_factor=self.state["scaling_factor"])
        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.ema[1],
            tokenizer=self.tokenizer,
            unet=self.ema[0],
            scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(str(out), safe_serialization=True)
        summary = dict(
            args=vars(a),
            params=dict(vae=n_params(self.vae), text_encoder=n_params(self.text_encoder), unet=n_params(self.unet)),
            **{k: v for k, v in self.state.items() if k != "history"},
            torch_threads=torch.get_num_threads(),
            device=str(self.device),
        )
        (self.work / "summary.json").write_text(json.dumps(summary, indent=1))
        (self.work / "history.json").write_text(json.dumps(self.state["history"]))
        (out / "README.md").write_text(model_card(summary))
        print(json.dumps({k: summary[k] for k in ("params", "vae_psnr", "unet_val_start", "unet_val_end", "unet_val_end_ema", "wall_s", "cpu_s")}))


QUALITY_MARK = "<!-- measured-quality -->"


def command_flags(a: dict) -> str:
    """The recipe flags of a run, as its command line spells them."""
    keys = ("seed", "pool", "vae_channels", "vae_steps", "vae_from", "center_latents", "unet_channels", "unet_attn", "unet_steps",
            "icon_fraction", "snr_gamma", "threads")
    flag = lambda k, v: f"--{'' if v else 'no-'}{k}" if isinstance(v, bool) else f"--{k} {v}"
    return " ".join(flag(k.replace("_", "-"), a[k]) for k in keys if a[k] is not None)


CARD_TEMPLATE = Path(__file__).with_name("mini_sd_card.md.in")  # str.format fields, filled by model_card


def card_fields(s) -> dict:
    """The model card's fields (``CARD_TEMPLATE``'s placeholders) from a run's summary."""
    a, p = s["args"], s["params"]
    snr = f" weighted by Min-SNR-{a['snr_gamma']:g} (min(SNR, {a['snr_gamma']:g}) / SNR)" if a["snr_gamma"] else ""
    centre = (f"Its latent space then centred on the pool (channel means {', '.join(f'{v:.3f}' for v in s['latent_shift'])} "
              "moved to 0, folded into the VAE's 1x1 convolutions; see `center_latents`)." if "latent_shift" in s else
              "Latent space not centred (`--no-center-latents`).")
    vae = (f"taken from `{Path(a['vae_from']).name}` (`--vae-from`: not trained in this run)" if a.get("vae_from") else
           f"{a['vae_steps']} steps, batch {a['vae_batch']}, AdamW lr {a['vae_lr']} (warmup, cosine), MSE + {a['kl_weight']} KL")
    return dict(
        {k: a[k] for k in ("pool", "vae_channels", "text_width", "text_layers", "unet_channels", "unet_attn", "layers_per_block",
                           "seed", "unet_steps", "unet_batch", "unet_lr", "ema", "icon_fraction")},
        last_seed=a["pool"] - 1,
        scaling_factor=s["scaling_factor"],
        vae_params=p["vae"],
        text_encoder_params=p["text_encoder"],
        unet_params=p["unet"],
        max_tokens=MAX_TOKENS,
        vae=vae,
        centre=centre,
        snr=snr,
        wall_min=s["wall_s"] / 60,
        cpu_min=s["cpu_s"] / 60,
        device=s["device"],
        torch_threads=s["torch_threads"],
        command_flags=command_flags(a),
        **{k: s[k] for k in ("vae_psnr", "unet_val_start", "unet_val_end", "unet_val_end_ema")},
        quality_mark=QUALITY_MARK,
    )


def model_card(s) -> str:
    """The folder's README.md: ``CARD_TEMPLATE`` filled from a run's summary (``card_fields``)."""
    return CARD_TEMPLATE.read_text().format(**card_fields(s))


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    Trainer(args).run()


if __name__ == "__main__":
    main()
