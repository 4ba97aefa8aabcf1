"""DeepFloyd IF in the core, against diffusers: the tiny IF-shaped pipeline loads as IF does, its T5 text
embeddings are diffusers' IFPipeline.encode_prompt's, and DreamSampler with an identity generator solved
exactly is DDIM sampling under IF's scheduler configuration, with the UNet's learned variance dropped."""
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, IFPipeline

from dreamsampler import DreamSampler
from dreamsampler.diffusion import process
from dreamsampler.diffusion.latent_model import is_pixel_space, model_resolution
from dreamsampler.diffusion.t5_text import encode_t5, load_t5


@pytest.fixture(scope="module")
def pipe(tiny_if):
    return IFPipeline.from_pretrained(tiny_if, safety_checker=None, watermarker=None, feature_extractor=None,
                                      requires_safety_checker=False)


def test_the_tiny_if_pipeline_is_shaped_like_if_stage_one(tiny_if, tiny_sd, pipe):
    assert pipe.unet.config.in_channels == 3 and pipe.unet.config.out_channels == 6
    assert isinstance(pipe.scheduler, DDPMScheduler) and pipe.scheduler.config.variance_type == "learned_range"
    assert is_pixel_space(tiny_if) and not is_pixel_space(tiny_sd)
    assert model_resolution(tiny_if) == 64 and model_resolution(tiny_sd) == 512
    fp16 = IFPipeline.from_pretrained(tiny_if, text_encoder=None, safety_checker=None, watermarker=None,
                                      feature_extractor=None, requires_safety_checker=False, variant="fp16",
                                      torch_dtype=torch.float16)
    assert fp16.unet.dtype == torch.float16  # the files threestudio's deep-floyd-guidance loads
    # the SentencePiece vocabulary keeps the grammar's and threestudio's view words whole
    pieces = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer("a red circle, front view").input_ids)
    assert pieces == ["▁a", "▁red", "▁circle", ",", "▁front", "▁view", "</s>"]


def test_t5_embeddings_are_diffusers_encode_prompt(tiny_if, pipe):
    prompts = ["a blue square, side view", ""]
    tokenizer, encoder = load_t5(tiny_if)
    ours = encode_t5(tokenizer, encoder, prompts)
    reference, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, clean_caption=False)
    assert ours.shape == (2, 77, 32)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_the_learned_variance_is_dropped_and_a_wrong_width_is_named():
    z = torch.randn(1, 3, 4, 4)
    out = torch.randn(1, 6, 4, 4)
    assert torch.equal(process.to_epsilon(out, z, 0.5, "epsilon"), out[:, :3])
    with pytest.raises(ValueError, match="predicts 5 channels for a 3-channel sample"):
        process.to_epsilon(torch.randn(1, 5, 4, 4), z, 0.5, "epsilon")


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_identity_generator_on_the_tiny_if_unet_is_ddim_under_ifs_scheduler(tiny_if, pipe, eta):
    """float64, 25 steps: every z_t of DreamSampler equals diffusers' DDIM iterate (IF's betas from its own
    scheduler config; thresholding and clipping off: the Tweedie estimate is not clipped), the UNet's 6
    channels read by process.to_epsilon on our side and split by hand on diffusers'."""
    unet = pipe.unet.double()
    config = dict(DDPMScheduler.from_pretrained(tiny_if, subfolder="scheduler").config)
    sched = DDIMScheduler.from_config({**config, "thresholding": False, "clip_sample": False})
    sched.set_timesteps(25)
    ts = sched.timesteps.clone()
    alphas = sched.alphas_cumprod.double()
    emb = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shape = (2, 3, 32, 32)  # the UNet is convolutional; 32 px keeps the float64 run short
    g = torch.Generator().manual_seed(0)
    fresh = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in ts]

    def model(x, t):
        with torch.no_grad():
            return unet(x, t, encoder_hidden_states=emb).sample

    ds = DreamSampler(alphas, ts, eta=eta)
    ours, x0 = [], torch.zeros(shape, dtype=torch.float64)
    for i, t in enumerate(ts):
        x_t = ds.add_noise(x0, i, noise=fresh[i])
        ours.append(x_t)
        x0 = ds.step(x_t, process.to_epsilon(model(x_t, t), x_t, alphas[t], "epsilon"), i)

    x = ours[0].clone()
    for i, t in enumerate(ts):
        err = (x - ours[i]).abs().max().item()
        assert err < 1e-5, f"step {i} (t={int(t)}): max abs difference {err}"
        noise = fresh[i + 1] if i + 1 < len(ts) else None
        x = sched.step(model(x, t)[:, :3], t, x, eta=eta, variance_noise=noise).prev_sample
