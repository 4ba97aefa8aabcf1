"""dreamsampler-image-system in real threestudio (CPU, tiny pipeline): each shipped 2D config runs
through launch.py's Trainer, text-to-image equals diffusers' DDIM pipeline, a resumed run continues
bit-for-bit, and bad input gets errors that name the field or file."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from .runner import REPO, assert_finite_losses, assert_sane_image, run_config

pytestmark = pytest.mark.threestudio

SIZE = 64  # image size of the smoke runs (the configs' `# smoke:` line; latent 8x8)


def launch(config, out_dir, tiny_sd, steps, *overrides):
    """Run ``configs/<config>`` for ``steps`` steps through launch.py on the CPU; returns its save dir."""
    run = run_config(REPO / "configs" / config, out_dir, tiny_sd, steps, overrides)
    assert_finite_losses(run)
    assert f"outputs in {run.trial_dir / 'save'}" in run.log  # the run says where to look
    return run.trial_dir / "save"


def check_png(path, size=SIZE):
    img = assert_sane_image(path)
    assert img.shape[0] == size and img.shape[-1] == 3, f"{path}: shape {img.shape}"
    assert img.std() > 2 and 5 < img.mean() < 250, f"{path} is nearly blank"
    return img


@pytest.mark.parametrize(
    "config,overrides,files,metrics",
    [
        ("dreamsampler-edit.yaml", [], ["source.png", "result.png"], ["psnr_source"]),
        ("dreamsampler-edit.yaml",  # a PNG source and a mask file (written by the test into TMP)
         ["system.image=TMP/photo.png",
          'system.regions=[{prompt: "a dog", mask: TMP/left.png}, {prompt: "glasses", rect: [0.5, 0.2, 1.0, 0.5]}]'],
         ["source.png", "result.png"], ["psnr_source", "psnr_source_outside_regions"]),
        ("dreamsampler-inpaint.yaml", [], ["source.png", "measurement.png", "result.png"], ["psnr_observed", "psnr_regions"]),
        ("dreamsampler-restore.yaml", ["system.operator=[{type: downsample, factor: 4}]", "system.init=inversion"],
         ["source.png", "measurement.png", "result.png"], ["psnr_measurement", "psnr_clean", "psnr_clean_of_measurement"]),
    ],
    ids=["edit", "edit-regions", "inpaint", "restore-sr"],
)
def test_config_runs_and_writes_its_outputs(tmp_path, tiny_sd, config, overrides, files, metrics):
    from skimage.data import chelsea

    photo = chelsea()  # 300x451, not square
    Image.fromarray(photo).save(tmp_path / "photo.png")
    left = np.zeros(photo.shape[:2], np.uint8)
    left[:, : photo.shape[1] // 2] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    overrides = [o.replace("TMP", str(tmp_path)) for o in overrides]
    save = launch(config, tmp_path, tiny_sd, 24, "trainer.val_check_interval=12", *overrides)
    for name in files + ["it12-val.png", "it24-val.png"]:
        check_png(save / name)
    strip = check_png(save / "strip.png")
    assert strip.shape[1] == 8 * SIZE
    found = json.loads((save / "metrics.json").read_text())
    assert found["nfe"] == 24 and all(np.isfinite(found[k]) for k in metrics), found
    result = torch.load(save / "result.pt")
    assert result["latent"].shape == (1, 4, SIZE // 8, SIZE // 8) and torch.isfinite(result["latent"]).all()
    print(config, overrides, {k: round(v, 2) for k, v in found.items() if k.startswith("psnr")})


def test_text_to_image_config_equals_diffusers_ddim(tmp_path, tiny_sd):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    prompt, nfe = "a photograph of an astronaut riding a horse", 20
    save = launch("dreamsampler-text-to-image.yaml", tmp_path, tiny_sd, nfe, f'system.prompt="{prompt}"')
    check_png(save / "result.png")
    ours = torch.load(save / "result.pt")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    with torch.no_grad():
        ref = pipe(prompt, height=SIZE, width=SIZE, num_inference_steps=nfe, guidance_scale=7.5,
                   latents=ours["initial_latent"].clone(), output_type="latent").images
        ref_img = (pipe.vae.decode(ref / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    assert torch.equal(ours["timesteps"], pipe.scheduler.timesteps.cpu())
    err = (ours["latent"] - ref).abs().max().item()
    err_img = (ours["image"] - ref_img).abs().max().item()
    print(f"text-to-image config vs StableDiffusionPipeline+DDIM, NFE {nfe}: latent {err:.2e}, image {err_img:.2e}")
    assert err < 1e-4 and err_img < 1e-4


def test_inpainting_resumes_bit_for_bit(tmp_path, tiny_sd):
    """The carried noise and psi are in the checkpoint; per-step noise is seeded by the step."""
    keep = "checkpoint.save_top_k=-1"  # every checkpoint (a smoke run keeps only last.ckpt)
    full = launch("dreamsampler-inpaint.yaml", tmp_path / "full", tiny_sd, 12, "checkpoint.every_n_train_steps=6", keep)
    ckpt = full.parent / "ckpts" / "epoch=0-step=6.ckpt"
    assert ckpt.is_file(), os.listdir(full.parent / "ckpts")
    resumed = launch("dreamsampler-inpaint.yaml", tmp_path / "resumed", tiny_sd, 12, "checkpoint.every_n_train_steps=6",
                     keep, f"resume={ckpt}")
    a, b = torch.load(full / "result.pt"), torch.load(resumed / "result.pt")
    assert torch.equal(a["latent"], b["latent"])


# ------------------------------------------------------------------ bad input
def make_system(ts, tiny_sd, **cfg):
    base = {"task": "edit", "pretrained_model_name_or_path": tiny_sd, "image_size": SIZE, "nfe": 4, "prompt": "a dog"}
    base.update(cfg)
    return ts.find("dreamsampler-image-system")(base)


def test_a_valid_system_builds(ts, tiny_sd):
    system = make_system(ts, tiny_sd)
    assert system.psi.shape == (1, 4, 8, 8) and len(system.schedule) == 4


@pytest.mark.parametrize(
    "cfg,error,match",
    [
        ({"task": "colorize"}, ValueError, r"system.task='colorize' is unknown"),
        ({"nfe": 0}, ValueError, r"system.nfe \(= trainer.max_steps\) must be >= 1, got 0"),
        ({"prompt": " "}, ValueError, r"system.prompt is empty: task 'edit' needs the target prompt"),
        ({"task": "text-to-image", "prompt": ""}, ValueError, "system.prompt is empty"),
        ({"task": "restore", "prompt": ""}, ValueError, "system.prompt is empty: task 'restore' needs a caption"),
        ({"task": "inpaint"}, ValueError, "system.regions is empty"),
        ({"task": "inpaint", "regions": [{"prompt": "", "rect": [0, 0, 0.5, 0.5]}]}, ValueError, r"system.regions\[0\].prompt is empty"),
        ({"task": "inpaint", "regions": [{"prompt": "a hat"}]}, ValueError, r"system.regions\[0\] needs exactly one of 'mask'"),
        ({"task": "inpaint", "regions": [{"prompt": "a hat", "rect": [0.5, 0, 0.2, 1]}]}, ValueError, r"system.regions\[0\].rect: rectangle"),
        ({"image": "/nonexistent/cat.png"}, FileNotFoundError, r"system.image: image file '/nonexistent/cat.png' does not exist"),
        ({"image_size": 60}, ValueError, "system.image_size=60 must be a multiple of the VAE factor 8"),
        ({"task": "restore", "operator": [{"type": "blurr"}]}, ValueError, r"system.operator=.*unknown operator type 'blurr'"),
        ({"task": "restore", "operator": {"type": "blur", "sigma": 2.0}}, ValueError, r"system.operator=.*missing parameter\(s\) \['kernel_size'\]"),
        ({"pretrained_model_name_or_path": "/nonexistent/model"}, ValueError, r"system.pretrained_model_name_or_path='/nonexistent/model'"),
    ],
)
def test_bad_config_names_the_field(ts, tiny_sd, cfg, error, match):
    with pytest.raises(error, match=match):
        make_system(ts, tiny_sd, **cfg)


def test_bad_files_name_the_file(ts, tiny_sd, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"system.image: cannot read image file '.*junk.png'"):
        make_system(ts, tiny_sd, image=str(junk))
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(ValueError, match=r"system.regions\[0\].mask: mask file '.*mask.png' is 40x30 but the image \(system.image\) is 300x451"):
        make_system(ts, tiny_sd, task="inpaint", image="skimage:chelsea", regions=[{"prompt": "a hat", "mask": str(tmp_path / "mask.png")}])
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "y.png")
    with pytest.raises(ValueError, match=r"system.measurement=.*measurement size 64x64 does not match the operator's output size 16x16 for image size 64x64"):
        make_system(ts, tiny_sd, task="restore", measurement=str(tmp_path / "y.png"), operator=[{"type": "downsample", "factor": 4}])


def test_trainer_max_steps_must_equal_nfe(ts, tiny_sd, tmp_path):
    import pytorch_lightning as pl

    system = make_system(ts, tiny_sd, nfe=4)
    system.set_save_dir(str(tmp_path))
    dm = ts.find("dreamsampler-steps-datamodule")({"train_length": 5})
    trainer = pl.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, num_sanity_val_steps=0)
    with pytest.raises(ValueError, match=r"trainer.max_steps \(5\) must equal system.nfe \(4\)"):
        trainer.fit(system, datamodule=dm)


def test_inpaint_config_and_table2_script_give_the_same_image(tmp_path, tiny_sd, load_script):
    """One seeding rule: the shipped inpainting config and ``scripts/table2_inpainting.py`` (its
    ``inpaint_all``), with the same image, mask, prompt, noise, seed and NFE, produce the same result."""
    import argparse

    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from skimage.data import astronaut

    from dreamsampler.diffusion.latent_model import LatentModel

    table2 = load_script("table2_inpainting")
    prompt, region = table2.TASKS["glasses"]
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(astronaut()).save(data / "face.png")
    steps, seed, noise = 6, 3, 0.01

    rect = "[" + ", ".join(map(str, table2.RECTS[region])) + "]"
    save = launch("dreamsampler-inpaint.yaml", tmp_path / "config", tiny_sd, steps, f"seed={seed}",
                  f"system.image={data / 'face.png'}", f"system.measurement_noise={noise}",
                  f'system.null_prompt="{table2.NULL_TEXT}"', f'system.regions=[{{prompt: "{prompt}", rect: {rect}}}]')

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    model = LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)
    args = argparse.Namespace(device="cpu", nfe=steps, size=SIZE, noise=noise, seed=seed)
    out = tmp_path / "script"
    out.mkdir()
    mask = table2.load_mask(None, region, SIZE)
    table2.inpaint_all(args, model, DDIMScheduler.from_config(pipe.scheduler.config), [data / "face.png"], "glasses", mask, out)

    by_config = np.asarray(Image.open(save / "result.png")).astype(np.int16)
    by_script = np.asarray(Image.open(out / "face.png")).astype(np.int16)
    assert by_config.shape == by_script.shape
    diff = np.abs(by_config - by_script)
    assert diff.max() <= 1 and diff.mean() < 0.05, f"config and script differ: max {diff.max()}, mean {diff.mean():.3f}"


def test_a_checkpoint_of_another_task_is_refused(tmp_path, tiny_sd):
    """An editing checkpoint resumed into the text-to-image config: an error naming the field, not a silent run."""
    from .runner import RunFailed

    edit = launch("dreamsampler-edit.yaml", tmp_path / "edit", tiny_sd, 2)
    ckpt = edit.parent / "ckpts" / "last.ckpt"
    with pytest.raises(RunFailed, match=r"the checkpoint is of another run \(system.task: 'edit' in the checkpoint, 'text-to-image' here\)"):
        launch("dreamsampler-text-to-image.yaml", tmp_path / "t2i", tiny_sd, 2, f"resume={ckpt}")
