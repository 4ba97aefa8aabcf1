"""DeepFloyd IF (stage I, pixel space) in real threestudio on the CPU, on the tiny IF-shaped pipeline:
threestudio's own deep-floyd-prompt-processor (on transformers 5) and deep-floyd-guidance, and
dreamsampler-guidance as their drop-in."""
import pytest
import torch

from ..conftest import threestudio_root
from .runner import DEFAULT_SCHEDULE_3_STEPS, assert_finite_losses, assert_sane_image, run_config
from .test_guidance import cams, make_guidance, make_prompt_utils

pytestmark = pytest.mark.threestudio

PROMPT = "a red circle"
STEPS = 3


@pytest.fixture(scope="module")
def prompt_utils(ts, tiny_if, tmp_path_factory):
    return make_prompt_utils(ts, tiny_if, tmp_path_factory, PROMPT, "deep-floyd-prompt-processor")


def test_threestudios_deep_floyd_prompt_processor_encodes_with_t5(ts, tiny_if, prompt_utils):
    """threestudio's own processor (its 8-bit loading fails on transformers 5) caches the core's T5
    embeddings: the prompt's and the empty negative prompt's, [1, 77, 32] each."""
    from dreamsampler.diffusion.t5_text import encode_t5, load_t5

    reference = encode_t5(*load_t5(tiny_if), [PROMPT, ""])
    assert prompt_utils.text_embeddings.shape == (1, 77, 32)
    torch.testing.assert_close(prompt_utils.text_embeddings[0].float(), reference[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(prompt_utils.uncond_text_embeddings[0].float(), reference[1], rtol=0, atol=1e-6)


def test_a_dreamsampler_step_on_if_diffuses_the_renders_pixels(ts, tiny_if, prompt_utils):
    g = make_guidance(ts, tiny_if, pixel_loss=True, return_target=True, guidance_scale=20.0, carry="guided")
    assert g.pixel_space and g.vae is None and g.resolution == 64 and g.prediction_type == "epsilon"
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)  # resized to IF's 64x64, as threestudio's guidance does
    g.update_step(0, 0)
    out = g(rgb, prompt_utils, **cams(2))
    assert out["timestep"] == 980 and out["target_rgb"].shape == (2, 64, 64, 3)
    (out["loss_sds"] + out["loss_pixel"]).backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.unet.parameters())
    # the next step's noise is the guided prediction made at this one (Alg. 2), in pixel space
    x = torch.nn.functional.interpolate(rgb.detach().permute(0, 3, 1, 2), (64, 64), mode="bilinear") * 2 - 1
    a0 = g.alphas[980]
    x_t = a0.sqrt() * x + (1 - a0).sqrt() * g.sampler.noise_tilde(0)
    emb = prompt_utils.get_text_embeddings(**cams(2), view_dependent_prompting=True)
    with torch.no_grad():
        cond, uncond = g.unet(torch.cat([x_t] * 2), torch.tensor([980] * 4), encoder_hidden_states=emb).sample[:, :3].chunk(2)
    eps_hat = uncond + 20.0 * (cond - uncond)
    g.update_step(0, 1)
    g(rgb.detach(), prompt_utils, **cams(2))
    torch.testing.assert_close(g.sampler.noise_tilde(1), eps_hat, rtol=0, atol=1e-4)
    # checkpoint state: schedule position and carried noise
    h = make_guidance(ts, tiny_if, guidance_scale=20.0, carry="guided")
    h.load_state_dict(g.state_dict())
    assert torch.equal(h.sampler.noise_tilde(1), g.sampler.noise_tilde(1))


def test_sds_mode_on_if_is_threestudios_deep_floyd_guidance(ts, tiny_if, prompt_utils):
    """mode=sds: the same loss and gradient norm as threestudio's deep-floyd-guidance for the same seed
    (its CFG scale s is our s + 1: eps(c) + s (eps(c) - eps(null)) = eps(null) + (s + 1)(eps(c) - eps(null)))."""
    theirs = ts.find("deep-floyd-guidance")(
        {"pretrained_model_name_or_path": tiny_if, "guidance_scale": 20.0, "half_precision_weights": False,
         "enable_channels_last_format": False}
    )
    ours = make_guidance(ts, tiny_if, mode="sds", guidance_scale=21.0, half_precision_weights=False)
    rgb = torch.rand(2, 64, 64, 3)
    outs = []
    for g in (theirs, ours):
        g.update_step(0, 0)
        torch.manual_seed(3)
        outs.append(g(rgb, prompt_utils, **cams(2)))
    torch.testing.assert_close(outs[1]["loss_sds"], outs[0]["loss_sds"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(outs[1]["grad_norm"], outs[0]["grad_norm"], rtol=1e-5, atol=1e-5)


def test_bridge_on_if_encodes_the_source_prompt_with_ifs_processor(ts, tiny_if, prompt_utils, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("if-bridge"))
    pp = {"pretrained_model_name_or_path": tiny_if, "prompt": PROMPT, "spawn": False}
    g = make_guidance(ts, tiny_if, mode="bridge", prompt_processor=pp)
    assert g.source_prompt_utils.text_embeddings.shape == (1, 77, 32)  # T5's, not CLIP's
    rgb = torch.rand(1, 64, 64, 3, requires_grad=True)
    g.update_step(0, 0)
    g(rgb, prompt_utils, **cams())["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_what_a_pixel_model_cannot_do_names_the_field(ts, tiny_if, prompt_utils, tmp_path):
    from dreamsampler.distill.lmc import CorrectiveUNet, save_corrective

    g = make_guidance(ts, tiny_if)
    g.update_step(0, 0)
    with pytest.raises(ValueError, match="pixel-space model .*rgb_as_latents"):
        g(torch.rand(1, 64, 64, 3), prompt_utils, rgb_as_latents=True, **cams())
    ckpt = save_corrective(CorrectiveUNet(in_channels=4, base_channels=8, depth=2), tmp_path / "k.safetensors")
    with pytest.raises(ValueError, match="guidance.lmc_checkpoint=.*4-channel.*diffuses 3 channels"):
        make_guidance(ts, tiny_if, mode="lmc", lmc_checkpoint=str(ckpt))


def test_lmc_on_if_with_a_corrective_trained_on_its_pixels(ts, tiny_if, prompt_utils, tmp_path, load_script):
    ckpt = load_script("train_lmc").main(["--model", tiny_if, "--world", "2", "--steps", "2", "--resolution", "64", "--batch-size", "1",
                        "--base-channels", "4", "--depth", "2", "--out", str(tmp_path / "k-if.safetensors")])
    g = make_guidance(ts, tiny_if, mode="lmc", lmc_checkpoint=str(ckpt), guidance_scale=7.5)
    rgb = torch.rand(1, 64, 64, 3, requires_grad=True)
    g.update_step(0, 0)
    g(rgb, prompt_utils, **cams())["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


@pytest.mark.parametrize("guidance", ["deep-floyd-guidance", "dreamsampler-guidance"])
def test_dreamfusion_if_trains_on_cpu(guidance, tiny_sd, tiny_if, tmp_path):
    """threestudio's configs/dreamfusion-if.yaml, 3 steps at 32x32: its own guidance, and ours by one override."""
    overrides = [f"system.guidance_type={guidance}"]
    if guidance == "deep-floyd-guidance":
        overrides.append("system.guidance.half_precision_weights=false")  # fp16 convolutions on a CPU are slow
    run = run_config(threestudio_root() / "configs" / "dreamfusion-if.yaml", tmp_path, tiny_sd, STEPS, overrides,
                     tiny_if=tiny_if)
    assert f"tiny DeepFloyd-IF-shaped pipeline {tiny_if}" in run.log
    assert_sane_image(run.images(f"save/it{STEPS}-0.png")[0])
    assert run.images(f"save/it{STEPS}-test.mp4")
    losses = assert_finite_losses(run)
    assert len(losses["train/loss_sds"]) == STEPS
    if guidance == "dreamsampler-guidance":
        assert "pixel space, epsilon prediction, 64 px" in run.log
        assert run.series("train/timestep") == DEFAULT_SCHEDULE_3_STEPS
