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


def test_trainer_quick_run_learns_and_saves_a_loadable_folder(tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    out, work = tmp_path / "model", tmp_path / "work"
    cmd = [sys.executable, str(REPO / "scripts/train_mini_sd.py"), "--out", str(out), "--work", str(work),
           "--quick", "--threads", "2"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    s = json.loads((work / "summary.json").read_text())
    assert s["args"]["unet_steps"] == s["args"]["vae_steps"] == 20
    assert s["vae_val_end"] < s["vae_val_start"] and s["unet_val_end"] < s["unet_val_start"], s
    p = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None, local_files_only=True)
    assert isinstance(p.unet, UNet2DConditionModel) and (out / "README.md").exists()
    # resuming a finished run changes nothing and writes the folder again
    subprocess.run(cmd + ["--resume"], check=True, capture_output=True, timeout=300)
    assert json.loads((work / "summary.json").read_text())["unet_val_end"] == s["unet_val_end"]
