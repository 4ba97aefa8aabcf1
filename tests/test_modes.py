"""The guidance modes of ``distill/modes.py`` against independent computations, on the tiny pipeline's UNet."""
import pytest
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from dreamsampler.diffusion import process
from dreamsampler.distill import lmc
from dreamsampler.distill.modes import (
    ARTIFACT_DESCRIPTORS,
    bridge_distillation,
    dds_distillation,
    guided_prediction,
    lmc_distillation,
    score_distillation,
    source_prompt,
)


@pytest.fixture(scope="module")
def model(tiny_sd):
    """(eps_fn(z_t, t, emb), embed(prompt, n), scheduler) of the tiny pipeline, prompts embedded by its CLIP."""
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval().double()
    tok = CLIPTokenizer.from_pretrained(tiny_sd, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(tiny_sd, subfolder="text_encoder").eval().double()
    sched = DDIMScheduler.from_pretrained(tiny_sd, subfolder="scheduler")

    @torch.no_grad()
    def embed(prompt, n=2):
        ids = tok([prompt] * n, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return enc(ids)[0]

    @torch.no_grad()
    def eps_fn(z_t, t, emb):
        return unet(z_t, t, encoder_hidden_states=emb).sample

    return eps_fn, embed, sched


def noised(sched, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    a = sched.alphas_cumprod.double()[t]
    return a.sqrt() * z + (1 - a).sqrt() * noise, noise, a, z


def test_score_distillation_is_cfg_minus_the_noise(model):
    """sds / dreamsampler: w (eps(null) + s (eps(c) - eps(null)) - eps~), from separate UNet calls."""
    eps_fn, embed, sched = model
    t = torch.tensor([600, 600])
    z_t, noise, a, _ = noised(sched, 600)
    cond, null = embed("a photo of a cat"), embed("")
    grad, eps_hat = score_distillation(eps_fn, z_t, t, cond, null, noise, 7.5, 0.3)
    e_c, e_u = eps_fn(z_t, t, cond), eps_fn(z_t, t, null)
    assert torch.allclose(eps_hat, e_u + 7.5 * (e_c - e_u), atol=1e-10, rtol=0)
    assert torch.allclose(grad, 0.3 * (e_u + 7.5 * (e_c - e_u) - noise), atol=1e-10, rtol=0)
    assert torch.allclose(guided_prediction(eps_fn, z_t, t, cond, null, 7.5), e_u + 7.5 * (e_c - e_u), atol=1e-10, rtol=0)


def test_bridge_with_the_null_source_is_the_cfg_term_of_sds(model):
    """w (eps(tgt) - eps(null)) = SDS gradient at scale w minus the one at scale 0 (LMC-SDS eq. 6)."""
    eps_fn, embed, sched = model
    t = torch.tensor([600, 600])
    z_t, noise, _, _ = noised(sched, 600)
    cond, null = embed("a photo of a cat"), embed("")
    w = 25.0
    got, eps_tgt = bridge_distillation(eps_fn, z_t, t, cond, null, w, 1.0)
    assert (eps_tgt - eps_fn(z_t, t, null)).abs().max() > 1e-4  # the prompt changes the prediction
    sds_w, _ = score_distillation(eps_fn, z_t, t, cond, null, noise, w, 1.0)
    sds_0, _ = score_distillation(eps_fn, z_t, t, cond, null, noise, 0.0, 1.0)
    assert torch.allclose(got, sds_w - sds_0, atol=1e-10, rtol=0)
    # the default source adds the artifact descriptors, which change the prediction
    src = source_prompt("a photo of a cat")
    assert src == "a photo of a cat" + ARTIFACT_DESCRIPTORS
    assert (bridge_distillation(eps_fn, z_t, t, cond, embed(src), w, 1.0)[0] - got).abs().max() > 1e-4


def test_dds_with_the_null_source_reproduces_theorem_1(model):
    """From z = z0^(null), a DDS step of size gamma sqrt(1-a)/sqrt(a) lands on Tweedie with CFG gamma
    (diffusers' DDIM x0 prediction) and on the brute-force argmin of eq. 17."""
    eps_fn, embed, sched = model
    t = torch.tensor([500, 500])
    gamma = 0.3
    z_t, _, a, _ = noised(sched, 500, seed=1)
    cond, null = embed("a photo of a cat"), embed("")
    e_tgt, e_null = eps_fn(z_t, t, cond), eps_fn(z_t, t, null)
    z_null = process.tweedie(z_t, e_null, a)
    direction, _ = dds_distillation(eps_fn, z_t, z_t, t, cond, null, gamma, 1.0)
    stepped = z_null - (1 - a).sqrt() / a.sqrt() * direction

    sched.set_timesteps(50)
    reference = sched.step(e_null + gamma * (e_tgt - e_null), 500, z_t).pred_original_sample
    assert torch.allclose(stepped, reference, atol=1e-5, rtol=0)  # diffusers keeps sqrt(abar) in float32

    z_tgt = process.tweedie(z_t, e_tgt, a)
    z = z_null.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=0.25)
    for _ in range(200):  # eq. 17: ||z - z0^(null)||^2 + gamma / (1 - gamma) ||z - z0^(tgt)||^2
        opt.zero_grad()
        (((z - z_null) ** 2).sum() + gamma / (1 - gamma) * ((z - z_tgt) ** 2).sum()).backward()
        opt.step()
    assert torch.allclose(z.detach(), stepped, atol=1e-8, rtol=0)


def test_lmc_batches_the_fixed_noise_prediction_with_the_others(model):
    """lmc_distillation's one batched call (fixed noise included) equals lmc_gradient on separate calls."""
    eps_fn, embed, sched = model
    t = torch.tensor([400, 400])
    z_t, _, a, z = noised(sched, 400, seed=2)
    z_t_fixed = process.forward_noise(z, torch.ones_like(z), a)
    cond, null = embed("a photo of a cat"), embed("")
    k = lambda x, t: 0.5 * x  # any corrective
    grad, _ = lmc_distillation(eps_fn, k, z, z_t, t, a, cond, null, 7.5, 0.2, z_t_fixed=z_t_fixed)
    reference = lmc.lmc_gradient(k, z, t, a, z_t, eps_fn(z_t, t, cond), eps_fn(z_t, t, null), 7.5, 0.2,
                                 z_t_fixed=z_t_fixed, eps_uncond_fixed=eps_fn(z_t_fixed, t, null))
    assert torch.allclose(grad, reference, atol=1e-10, rtol=0)


@pytest.mark.parametrize("target", ["", "   ", None])
def test_source_prompt_needs_a_target(target):
    with pytest.raises(ValueError, match="non-empty target prompt"):
        source_prompt(target)


def test_source_prompt_prefers_a_user_source_and_takes_a_domain_descriptor():
    assert source_prompt("a cat", "a dog") == "a dog"
    assert source_prompt("a cat", "  ") == source_prompt("a cat", "") == ""  # the null prompt
    assert source_prompt("a cat") == "a cat" + ARTIFACT_DESCRIPTORS
    assert source_prompt("a cat", suffix=", painting") == "a cat, painting"
