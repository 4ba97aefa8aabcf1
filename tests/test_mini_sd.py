"""The miniature Stable Diffusion trained on the procedural world, and its trainer."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dreamsampler.world import world_image

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "custom/threestudio-dreamsampler/dreamsampler/world/mini-sd"
needs_model = pytest.mark.skipif(
    not (MODEL / "model_index.json").exists(),
    reason="the trained mini-sd folder is not there yet: train it with scripts/train_mini_sd.py (see --help)",
)


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(str(MODEL), safety_checker=None, local_files_only=True)
    p.set_progress_bar_config(disable=True)
    return p


@needs_model
def test_committed_folder_loads_offline_with_sd_scheduler(pipe):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(str(MODEL), subfolder="vae", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(str(MODEL), subfolder="unet", local_files_only=True)
    sched = DDIMScheduler.from_pretrained(str(MODEL), subfolder="scheduler", local_files_only=True)
    c = sched.config
    assert (c.beta_schedule, c.beta_start, c.beta_end, c.num_train_timesteps) == ("scaled_linear", 0.00085, 0.012, 1000)
    assert (c.prediction_type, c.set_alpha_to_one, c.steps_offset, c.clip_sample) == ("epsilon", False, 1, False)
    assert unet.config.in_channels == vae.config.latent_channels == 4
    files = [f for f in MODEL.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".ckpt")]  # safetensors only
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    assert (MODEL / "README.md").exists()


@needs_model
def test_red_circle_prompt_gives_red(pipe):
    from dreamsampler.world.palette import COLOUR_NAMES, COLOURS

    g = torch.Generator().manual_seed(0)
    imgs = pipe("a red circle", num_images_per_prompt=4, num_inference_steps=10, guidance_scale=5.0,
                generator=g, output_type="pt", height=64, width=64).images.float()
    refs = torch.tensor([(1.0, 1.0, 1.0)] + [COLOURS[c] for c in COLOUR_NAMES])
    nearest = ((imgs.permute(0, 2, 3, 1)[..., None, :] - refs) ** 2).sum(-1).argmin(-1)
    counts = torch.bincount(nearest.flatten(), minlength=len(refs))[1:]
    assert COLOUR_NAMES[int(counts.argmax())] == "red", dict(zip(COLOUR_NAMES, counts.tolist()))


@needs_model
def test_vae_round_trip_of_world_images(pipe):
    vae = pipe.vae
    for domain in ("icon", "object"):
        x = torch.stack([world_image("eval", i, domain)[0] for i in range(8)]) * 2 - 1
        with torch.no_grad():
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        psnr = -10 * torch.log10(((rec - x) / 2).pow(2).mean())
        assert psnr > 30, (domain, psnr.item())


@needs_model
def test_committed_latent_space_is_centred(pipe):
    """The committed VAE has the trainer's centring folded in: world images encode near zero mean per
    channel (uncentred, this VAE's white sat near -1.6 and -2.1 in two channels), so zero-mean starting
    noise matches what the UNet saw at the first DDIM step."""
    vae = pipe.vae
    x = torch.stack([world_image("eval", i, d)[0] for i in range(16) for d in ("icon", "object")]) * 2 - 1
    with torch.no_grad():
        mu = vae.encode(x).latent_dist.mean.mean((0, 2, 3)) * vae.config.scaling_factor
    assert mu.abs().max() < 0.3, mu.tolist()


def test_trainer_quick_run_learns_and_saves_a_loadable_folder(tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    out, work = tmp_path / "model", tmp_path / "work"
    cmd = [sys.executable, str(REPO / "scripts/train_mini_sd.py"), "--out", str(out), "--work", str(work),
           "--quick", "--threads", "2", "--icon-fraction", "0.75", "--snr-gamma", "5"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    s = json.loads((work / "summary.json").read_text())
    assert s["args"]["unet_steps"] == s["args"]["vae_steps"] == 20
    assert s["vae_val_end"] < s["vae_val_start"] and s["unet_val_end"] < s["unet_val_start"], s
    p = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None, local_files_only=True)
    assert isinstance(p.unet, UNet2DConditionModel) and (out / "README.md").exists()
    # resuming a finished run changes nothing and writes the folder again
    subprocess.run(cmd + ["--resume"], check=True, capture_output=True, timeout=300)
    assert json.loads((work / "summary.json").read_text())["unet_val_end"] == s["unet_val_end"]
    # --vae-from: the UNet phase on that folder's VAE (already centred on the same pool: shift ~0)
    from diffusers import AutoencoderKL

    out2, work2 = tmp_path / "model2", tmp_path / "work2"
    subprocess.run(cmd[:2] + ["--out", str(out2), "--work", str(work2), "--quick", "--threads", "2", "--vae-from", str(out)],
                   check=True, capture_output=True, timeout=300)
    s2 = json.loads((work2 / "summary.json").read_text())
    assert "vae_val_end" not in s2 and s2["vae_psnr"] == pytest.approx(s["vae_psnr"], abs=1e-3)
    assert max(abs(v) for v in s2["latent_shift"]) < 1e-3 and "`--vae-from`" in (out2 / "README.md").read_text()
    a, b = (AutoencoderKL.from_pretrained(str(d), subfolder="vae").state_dict() for d in (out, out2))
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    bad = subprocess.run(cmd[:2] + ["--out", str(out2), "--work", str(work2), "--quick", "--vae-from", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--vae-from" in bad.stderr


def test_icon_fraction_sets_the_share_of_icons_in_every_batch(load_script):
    T = load_script("train_mini_sd")
    is_icon = torch.arange(1000) % 3 == 0  # a third of the pool
    for step in range(5):
        idx = T.DomainSampler(is_icon, 64, 0.75)(torch.Generator().manual_seed(step))
        assert len(idx) == 64 and int(is_icon[idx].sum()) == 48
    assert T.parse_args(["--out", "o", "--work", "w"]).icon_fraction == 0.75  # the shipped recipe
    assert bool(is_icon[T.DomainSampler(is_icon, 8, 1.0)(torch.Generator())].all())
    with pytest.raises(ValueError, match="objects"):
        T.DomainSampler(torch.ones(10, dtype=torch.bool), 8, 0.5)
    with pytest.raises(SystemExit):
        T.parse_args(["--out", "o", "--work", "w", "--icon-fraction", "1.5"])


def test_centring_the_latents_moves_the_origin_and_keeps_the_decoder(load_script):
    """center_latents folds a per-channel shift into the VAE: the folded encoder's mean is the original's
    minus mu, and the folded decoder of z is the original decoder of z + mu (checked against an unfolded copy)."""
    import copy

    T = load_script("train_mini_sd")
    vae = T.build_models(T.parse_args(["--out", "o", "--work", "w", "--quick"]))[0].eval()
    ref = copy.deepcopy(vae)
    assert "--center-latents" in T.command_flags(vars(T.parse_args(["--out", "o", "--work", "w"])))  # the default
    assert "--no-center-latents" in T.command_flags(vars(T.parse_args(["--out", "o", "--work", "w", "--no-center-latents"])))
    mu = torch.tensor([0.5, -1.5, 0.25, -2.0])
    T.center_latents(vae, mu)
    x = torch.stack([world_image("eval", i)[0] for i in range(4)]) * 2 - 1
    z = torch.randn(4, 4, 16, 16)
    with torch.no_grad():
        assert torch.allclose(vae.encode(x).latent_dist.mean, ref.encode(x).latent_dist.mean - mu[:, None, None], atol=1e-5)
        assert torch.allclose(vae.encode(x).latent_dist.std, ref.encode(x).latent_dist.std)
        assert torch.allclose(vae.decode(z).sample, ref.decode(z + mu[:, None, None]).sample, atol=1e-5)


def test_min_snr_weighting_matches_the_papers_weights(load_script):
    """Min-SNR-gamma for epsilon prediction: sample weight min(SNR, gamma) / SNR with SNR = abar / (1 - abar)
    (Hang et al. 2023, eq. 8 and Table 1), checked with a stand-in UNet whose error is known per sample."""
    from diffusers import DDPMScheduler

    T = load_script("train_mini_sd")
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
    out = torch.randn(256, 4, 4, 4)
    unet = lambda zt, t, encoder_hidden_states: type("O", (), {"sample": out})()
    text = lambda ids: (torch.zeros(len(ids), 3, 8),)
    z0, ids = torch.randn(256, 4, 4, 4), torch.zeros(256, 5, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, 1000, (256,), generator=g)
    err = (out - noise).pow(2).flatten(1).mean(1)
    abar = sched.alphas_cumprod[t]
    snr = abar / (1 - abar)
    assert (snr > 5).any() and (snr < 5).any()  # both branches of the min are exercised
    weighted = T.unet_loss(unet, text, sched, z0, ids, torch.Generator().manual_seed(3), snr_gamma=5.0)
    assert torch.allclose(weighted, (err * torch.clamp(snr, max=5.0) / snr).mean(), rtol=1e-5)
    plain = T.unet_loss(unet, text, sched, z0, ids, torch.Generator().manual_seed(3))
    assert torch.allclose(plain, err.mean(), rtol=1e-6)
    assert torch.allclose(T.unet_loss(unet, text, sched, z0, ids, torch.Generator().manual_seed(3), snr_gamma=1e9), plain)



def test_model_card_template_is_filled_with_every_field(load_script):
    """The card is scripts/mini_sd_card.md.in filled by str.format: every placeholder has a field, every field is
    used, and a summary's values appear in the card as formatted (none of the template's braces left)."""
    import string

    T = load_script("train_mini_sd")
    assert T.CARD_TEMPLATE == REPO / "scripts" / "mini_sd_card.md.in"
    a = vars(T.parse_args(["--out", "o", "--work", "w", "--pool", "777", "--seed", "13", "--unet-steps", "4321",
                           "--vae-steps", "1234", "--unet-batch", "48", "--unet-lr", "0.00037", "--ema", "0.9876",
                           "--text-width", "40", "--text-layers", "3", "--layers-per-block", "2", "--unet-channels", "24,48,72",
                           "--unet-attn", "0,0,1", "--vae-channels", "12,24,36", "--icon-fraction", "0.6",
                           "--snr-gamma", "2.5", "--threads", "3"]))
    s = dict(args=a, params=dict(vae=1234567, text_encoder=23456, unet=345678), scaling_factor=0.123456, latent_shift=[0.25, -1.5, 2.0, -0.125],
             vae_psnr=31.234, unet_val_start=1.23456, unet_val_end=0.54321, unet_val_end_ema=0.44444, wall_s=123.0, cpu_s=246.0,
             device="cpu", torch_threads=3)
    template = T.CARD_TEMPLATE.read_text()
    placeholders = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    assert placeholders == set(T.card_fields(s))
    card = T.model_card(s)
    assert "{" not in card and "}" not in card and "$" not in card
    assert card.startswith("---\nlibrary_name: diffusers\n") and card.endswith("`python scripts/eval_mini_sd.py --model <this folder>`.\n")
    for expected in (
        "the first 777 images of\nthe training split (seeds 0..776)",
        "widths 12,24,36, 4 latent channels, 64x64 -> 4x16x16, scaling factor 0.1235 | 1,234,567 |",
        "CLIPTextModel, width 40, 3 layers, 32 tokens;", "byte fallback | 23,456 |",
        "widths 24,48,72, cross-attention levels 0,0,1, 2 layer(s) per block | 345,678 |",
        "Seed 13. VAE: 1234 steps, batch 32, AdamW lr 0.001 (warmup, cosine), MSE + 1e-06 KL.",
        "channel means 0.250, -1.500, 2.000, -0.125 moved to 0",
        "4321 steps, batch 48,\nAdamW lr 0.00037 (warmup, cosine), epsilon MSE weighted by Min-SNR-2.5 (min(SNR, 2.5) / SNR),",
        "EMA 0.9876 (the saved weights); 60% of every UNet batch icons, the rest objects.",
        "Wall time 2.0 min on cpu (3 torch threads, 4.1 CPU-minutes;",
        "--seed 13 --pool 777 --vae-channels 12,24,36 --vae-steps 1234 --center-latents --unet-channels 24,48,72 "
        "--unet-attn 0,0,1 --unet-steps 4321 --icon-fraction 0.6 --snr-gamma 2.5 --threads 3`.",
        "PSNR 31.23 dB; held-out denoising loss 1.2346 -> 0.5432\n(EMA weights 0.4444).",
        "## Measured quality\n\n<!-- measured-quality -->\nNot measured yet",
    ):
        assert expected in card, expected
    # the other branches: VAE taken from a folder, latents not centred, plain MSE
    s2 = dict(s, args=dict(a, vae_from="/some/where/prev-model", snr_gamma=0.0, center_latents=False))
    del s2["latent_shift"]
    card2 = T.model_card(s2)
    assert "VAE: taken from `prev-model` (`--vae-from`: not trained in this run). Latent space not centred" in card2
    assert "epsilon MSE, 10% of captions" in card2 and "--no-center-latents" in card2 and "{" not in card2

@needs_model
def test_evaluator_script_quick_run_and_guidance_sweep(tmp_path):
    """scripts/eval_mini_sd.py end to end on the committed folder (a few samples and steps): the
    measurement and the guidance sweep write their JSON with rates in [0, 1]."""
    script = str(REPO / "scripts/eval_mini_sd.py")
    subprocess.run([sys.executable, script, "--quick", "--out", str(tmp_path / "e")], check=True, capture_output=True, timeout=600)
    r = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert r["psnr"]["icon"] > 25 and set(r["fidelity"]) == {"icon", "object"} and 0.5 <= r["vae_icon_shape"] <= 1
    assert all(0 <= r["fidelity"][d][k] <= 1 for d in r["fidelity"] for k in ("colour", "shape", "count"))
    assert (tmp_path / "e" / "samples.png").exists() and not (MODEL / "README.md").read_text().count("Not measured yet")
    subprocess.run([sys.executable, script, "--quick", "--sweep", "2,4", "--out", str(tmp_path / "s")], check=True,
                   capture_output=True, timeout=600)
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [row["cfg"] for row in rows] == [2.0, 4.0]
    assert all(0 <= row[k] <= 1 for row in rows for k in ("icon_shape", "object_colour"))
    assert all(row["spread_x"] > 0 for row in rows)
