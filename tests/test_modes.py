"""Guidance directions of modes.py against independent computations, on the tiny pipeline's UNet."""
import pytest
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from dreamsampler import distill
from dreamsampler.modes import ARTIFACT_DESCRIPTORS, bridge_direction, dds_direction, score_direction, source_prompt


@pytest.fixture(scope="module")
def model(tiny_sd):
    """eps(z_t, t, prompt) of the tiny pipeline, the prompt embedded by its own CLIP text encoder."""
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval().double()
    tok = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder").eval().double()
    sched = DDIMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")

    @torch.no_grad()
    def eps(z_t, t, prompt):
        ids = tok([prompt] * z_t.shape[0], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return unet(z_t, t, encoder_hidden_states=enc(ids)[0]).sample

    return eps, sched


def noised(sched, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    a = sched.alphas_cumprod.double()[t]
    return a.sqrt() * z + (1 - a).sqrt() * noise, noise, a


def test_bridge_with_the_null_source_is_the_cfg_term_of_sds(model):
    """w (eps(tgt) - eps(null)) = SDS direction at scale w minus the one at scale 0 (eq. 6 of seed 003)."""
    eps, sched = model
    t = torch.tensor(600)
    z_t, noise, _ = noised(sched, t)
    e_tgt, e_null = eps(z_t, t, "a photo of a cat"), eps(z_t, t, "")
    assert (e_tgt - e_null).abs().max() > 1e-4  # the prompt changes the prediction
    w = 25.0
    got = bridge_direction(e_tgt, e_null, w)
    sds_w = score_direction(e_tgt, e_null, noise, w)
    sds_0 = score_direction(e_tgt, e_null, noise, 0.0)
    assert torch.allclose(got, sds_w - sds_0, atol=1e-10, rtol=0)
    # the default source adds the artifact descriptors, which change the prediction
    src = source_prompt("a photo of a cat")
    assert src == "a photo of a cat" + ARTIFACT_DESCRIPTORS
    assert (bridge_direction(e_tgt, eps(z_t, t, src), w) - got).abs().max() > 1e-4


def test_dds_with_the_null_source_reproduces_theorem_1(model):
    """From z = z0^(null), a DDS step of size gamma sqrt(1-a)/sqrt(a) lands on Tweedie with CFG gamma
    (diffusers' DDIM x0 prediction) and on the brute-force argmin of eq. 17."""
    eps, sched = model
    t = torch.tensor(500)
    gamma = 0.3
    z_t, _, a = noised(sched, t, seed=1)
    e_tgt, e_null = eps(z_t, t, "a photo of a cat"), eps(z_t, t, "")
    z_null = distill.tweedie(z_t, e_null, a)
    stepped = z_null - (1 - a).sqrt() / a.sqrt() * dds_direction(e_tgt, e_null, gamma)

    sched.set_timesteps(50)
    reference = sched.step(e_null + gamma * (e_tgt - e_null), t, z_t).pred_original_sample
    assert torch.allclose(stepped, reference, atol=1e-5, rtol=0)  # diffusers keeps sqrt(abar) in float32

    z_tgt = distill.tweedie(z_t, e_tgt, a)
    z = z_null.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=0.25)
    for _ in range(200):  # eq. 17: ||z - z0^(null)||^2 + gamma / (1 - gamma) ||z - z0^(tgt)||^2
        opt.zero_grad()
        (((z - z_null) ** 2).sum() + gamma / (1 - gamma) * ((z - z_tgt) ** 2).sum()).backward()
        opt.step()
    assert torch.allclose(z.detach(), stepped, atol=1e-8, rtol=0)


@pytest.mark.parametrize("target", ["", "   ", None])
def test_source_prompt_needs_a_target(target):
    with pytest.raises(ValueError, match="non-empty target prompt"):
        source_prompt(target)


def test_source_prompt_prefers_a_user_source_and_takes_a_domain_descriptor():
    assert source_prompt("a cat", "a dog") == "a dog"
    assert source_prompt("a cat", "  ") == "a cat" + ARTIFACT_DESCRIPTORS
    assert source_prompt("a cat", suffix=", painting") == "a cat, painting"
