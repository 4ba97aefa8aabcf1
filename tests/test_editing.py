"""Editing (Alg. 3, eq. 18-19) and text-to-image against diffusers on the tiny pipeline."""
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionPipeline

from dreamsampler.diffusion.latent_model import LatentModel
from dreamsampler.diffusion.reverse import ddim_invert, sample
from dreamsampler.diffusion.schedules import ReverseSchedule
from dreamsampler.image.editing import edit, localized_cfg
from dreamsampler.image_io import latent_mask, read_image, rect_mask, square_resize
from dreamsampler.testing.tiny_pipeline import SCHEDULER_CONFIG


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    p = StableDiffusionPipeline.from_pretrained(tiny_sd, dtype=torch.float32, safety_checker=None)
    p.set_progress_bar_config(disable=True)
    assert isinstance(p.scheduler, DDIMScheduler)
    return p


@pytest.fixture(scope="module")
def model(pipe):
    return LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)


def _source_latent(model, size=64):
    x = square_resize(read_image("skimage:chelsea", "image"), size)[None] * 2 - 1
    with torch.no_grad():
        return model.encode(x)


@torch.no_grad()
def test_text_to_image_equals_diffusers_ddim_pipeline(pipe, model, tiny_sd):
    """Identity generator + carried CFG prediction = StableDiffusionPipeline with DDIMScheduler."""
    sched = DDIMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    schedule = ReverseSchedule.from_scheduler(sched, 12)
    z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    null, cond = model.text(["", "a photograph of a cat"]).chunk(2)
    ours = sample(model.eps, z_T, schedule, null, cond, 7.5)
    ref = pipe("a photograph of a cat", height=64, width=64, num_inference_steps=12, guidance_scale=7.5,
               latents=z_T.clone(), output_type="latent").images
    err = (ours - ref).abs().max().item()
    print(f"text-to-image vs diffusers, 12 steps: max |latent diff| = {err:.3e}")
    assert err < 1e-4
    img_ours = (model.decode(ours) / 2 + 0.5).clamp(0, 1)
    img_ref = pipe.vae.decode(ref / pipe.vae.config.scaling_factor).sample / 2 + 0.5
    assert (img_ours - img_ref.clamp(0, 1)).abs().max() < 1e-4


@torch.no_grad()
def test_edit_with_c0_reconstructs_the_source_as_well_as_diffusers_inversion(model, tiny_sd):
    """C = 0: inversion -> reverse loop is a DDIM round trip; compare with DDIMInverseScheduler + DDIMScheduler."""
    nfe = 20
    z0 = _source_latent(model)
    null, tgt = model.text(["", "a photograph of a dog"]).chunk(2)
    schedule = ReverseSchedule.from_scheduler(DDIMScheduler.from_pretrained(tiny_sd, subfolder="scheduler"), nfe)
    ours = edit(model.eps, z0, schedule, null, [tgt], scale=0.0)

    inv = DDIMInverseScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    inv.set_timesteps(nfe)
    z = z0.clone()
    for t in inv.timesteps:
        z = inv.step(model.eps(z, t, null), t, z).prev_sample
    assert (ddim_invert(model.eps, z0, schedule, null) - z).abs().max() < 1e-4
    fwd = DDIMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")
    fwd.set_timesteps(nfe)
    for t in fwd.timesteps:
        z = fwd.step(model.eps(z, t, null), t, z).prev_sample
    err_ours = (ours - z0).abs().max().item()
    err_ref = (z - z0).abs().max().item()
    print(f"round trip, NFE {nfe}: ours max |z - z0| = {err_ours:.4e}, diffusers = {err_ref:.4e}, "
          f"ours vs diffusers' round trip {(ours - z).abs().max().item():.2e}")
    assert err_ours <= err_ref * 1.001 + 1e-5
    assert (ours - z).abs().max() < 1e-4  # the same round trip, not just an equally large error
    edited = edit(model.eps, z0, schedule, null, [tgt], scale=0.3)
    assert (edited - ours).abs().max() > 1e-3  # C > 0 does edit


def _toy_eps(z, t, emb):
    """A pixel-wise eps-predictor: the prediction at a pixel depends only on that pixel."""
    c = emb.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    return torch.tanh(0.6 * z + 3 * c + float(t) / 1000.0)


def test_localized_edits_change_nothing_outside_their_masks_with_a_pixelwise_model():
    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    schedule = ReverseSchedule.from_scheduler(sched, 25)
    z0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    null, a, b = (torch.full((1, 3, 2), v, dtype=torch.float64) for v in (0.0, 0.5, -0.5))
    masks = torch.stack([rect_mask([0.0, 0.0, 0.4, 0.5], 16, 16, "m"), rect_mask([0.6, 0.5, 1.0, 1.0], 16, 16, "m")])
    recon = edit(_toy_eps, z0, schedule, null, [a], scale=0.0)
    local = edit(_toy_eps, z0, schedule, null, [a, b], masks=masks.double(), scale=0.3)
    outside = masks.sum(0).expand_as(z0[0])[None] == 0
    assert (local - recon)[outside].abs().max() < 1e-12
    for m in masks:
        assert (local - recon)[m.expand_as(z0[0])[None] > 0].abs().mean() > 1e-3


@torch.no_grad()
def test_localized_edit_on_the_tiny_pipeline_reports_the_change_outside(model, tiny_sd):
    """With a UNet the change leaks only through its receptive field; report inside / outside."""
    z0 = _source_latent(model, 128)
    null, tgt = model.text(["", "a photograph of a dog"]).chunk(2)
    schedule = ReverseSchedule.from_scheduler(DDIMScheduler.from_pretrained(tiny_sd, subfolder="scheduler"), 20)
    mask = latent_mask(rect_mask([0.5, 0.5, 1.0, 1.0], 128, 128, "m")[None], 8)
    recon = edit(model.eps, z0, schedule, null, [tgt], scale=0.0)
    local = edit(model.eps, z0, schedule, null, [tgt], masks=mask, scale=1.0)
    change = (local - recon).abs()
    inside = change[mask.expand_as(change) > 0].mean().item()
    outside = change[mask.expand_as(change) == 0].mean().item()
    print(f"localized edit (tiny UNet, 16x16 latent, C=1): mean |change| inside {inside:.4e}, outside {outside:.4e}")
    assert outside < 0.5 * inside


def test_localized_cfg_is_eq18_without_masks_and_normalizes_overlaps():
    g = torch.Generator().manual_seed(2)
    e0, e1, e2 = (torch.randn(1, 4, 4, 4, generator=g) for _ in range(3))
    assert torch.allclose(localized_cfg(e0, [e1], None, 0.3), e0 + 0.3 * (e1 - e0))
    full = torch.ones(2, 1, 4, 4)
    assert torch.allclose(localized_cfg(e0, [e1, e2], full, 0.3), e0 + 0.3 * (0.5 * (e1 - e0) + 0.5 * (e2 - e0)))
    with pytest.raises(ValueError, match="2 target prompts need one mask each"):
        localized_cfg(e0, [e1, e2], None, 0.3)
    with pytest.raises(ValueError, match="got 1 masks for 2 target prompts"):
        localized_cfg(e0, [e1, e2], full[:1], 0.3)


def test_reverse_schedule_rejects_bad_nfe():
    with pytest.raises(ValueError, match="NFE"):
        ReverseSchedule.from_scheduler(DDIMScheduler(**SCHEDULER_CONFIG), 0)


@torch.no_grad()
def test_text_to_image_on_a_v_prediction_model_equals_diffusers(tiny_sd_v):
    """SD 2.x-shaped (v-predicting) tiny pipeline: LatentModel.eps converts v to epsilon, and the identity
    generator is still diffusers' DDIM pipeline, which reads v itself."""
    p = StableDiffusionPipeline.from_pretrained(tiny_sd_v, dtype=torch.float32, safety_checker=None)
    p.set_progress_bar_config(disable=True)
    assert p.scheduler.config.prediction_type == "v_prediction"
    model = LatentModel(p.vae, p.unet, p.tokenizer, p.text_encoder, p.scheduler)
    schedule = ReverseSchedule.from_scheduler(DDIMScheduler.from_pretrained(tiny_sd_v, subfolder="scheduler"), 10)
    z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    null, cond = model.text(["", "a photograph of a cat"]).chunk(2)
    ours = sample(model.eps, z_T, schedule, null, cond, 7.5)
    ref = p("a photograph of a cat", height=64, width=64, num_inference_steps=10, guidance_scale=7.5,
            latents=z_T.clone(), output_type="latent").images
    assert (ours - ref).abs().max().item() < 1e-4
    # read as epsilon (the silent misread this guards against), the same run lands elsewhere
    model.prediction_type = "epsilon"
    assert (sample(model.eps, z_T, schedule, null, cond, 7.5) - ref).abs().max().item() > 1e-2
