"""dreamsampler-guidance inside real threestudio (CPU, tiny pipeline, real prompt processor)."""
import math

import pytest
import torch


pytestmark = pytest.mark.threestudio

PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def prompt_utils(ts, tiny_sd, tmp_path_factory):
    return make_prompt_utils(ts, tiny_sd, tmp_path_factory, PROMPT)


def make_prompt_utils(ts, model, tmp_path_factory, prompt, processor="stable-diffusion-prompt-processor"):
    """threestudio's prompt processor's output for ``prompt`` (its cache in a fresh folder)."""
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("pp"))
    try:
        return ts.find(processor)({"pretrained_model_name_or_path": model, "prompt": prompt, "spawn": False})()
    finally:
        os.chdir(cwd)


def make_guidance(ts, tiny_sd, **cfg):
    base = {"pretrained_model_name_or_path": tiny_sd, "guidance_scale": 7.5, "trainer_max_steps": 10}
    base.update(cfg)
    return ts.find("dreamsampler-guidance")(base)


def latents(b=1):
    """A latent passed as ``rgb`` with ``rgb_as_latents=True`` (skips the 512x512 VAE encode)."""
    return dict(rgb=torch.randn(b, 64, 64, 4), rgb_as_latents=True)


def cams(b=1):
    return dict(elevation=torch.zeros(b), azimuth=torch.zeros(b), camera_distances=torch.full((b,), 2.0))


def test_outputs_keys_shapes_and_fp32_on_cpu(ts, tiny_sd, prompt_utils):
    g = make_guidance(ts, tiny_sd, half_precision_weights=True, pixel_loss=True, return_target=True)
    assert g.weights_dtype == torch.float32 and next(g.unet.parameters()).dtype == torch.float32
    rgb = torch.rand(2, 64, 64, 3, requires_grad=True)
    g.update_step(0, 0)
    out = g(rgb, prompt_utils, **cams(2))
    assert {"loss_sds", "grad_norm", "min_step", "max_step", "timestep", "loss_pixel", "target_rgb"} <= set(out)
    assert out["loss_sds"].dim() == 0 and torch.isfinite(out["loss_sds"]) and torch.isfinite(out["loss_pixel"])
    assert out["target_rgb"].shape == (2, 512, 512, 3)
    assert out["timestep"] == g.max_step == 980 and out["min_step"] == 20
    (out["loss_sds"] + out["loss_pixel"]).backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.unet.parameters()), "gradient flowed into the UNet"
    assert all(p.grad is None for p in g.vae.parameters()), "gradient flowed into the VAE weights"


@pytest.mark.parametrize("schedule", ["linear", "sqrt", "cosine"])
def test_timestep_decreases_over_the_run(ts, tiny_sd, prompt_utils, schedule):
    g = make_guidance(ts, tiny_sd, timestep_schedule=schedule)
    seen = []
    for step in range(12):  # two steps past trainer_max_steps: the schedule holds its last value
        g.update_step(0, step)
        seen.append(g(prompt_utils=prompt_utils, **latents(), **cams())["timestep"])
    assert seen[0] == 980 and seen[9] == 20 and seen[-1] == 20
    assert all(b <= a for a, b in zip(seen, seen[1:])) and len(set(seen)) >= 9


def test_running_past_the_schedule_warns_once(ts, tiny_sd, monkeypatch):
    """A drop-in config whose trainer.max_steps exceeds guidance.trainer_max_steps is told how to fix it."""
    import threestudio

    messages = []
    monkeypatch.setattr(threestudio, "warn", lambda msg, *a, **k: messages.append(msg))
    g = make_guidance(ts, tiny_sd)
    for step in range(9, 11):  # the last step, then test / validation at global_step == trainer_max_steps
        g.update_step(0, step)
    assert messages == []
    for step in range(11, 14):
        g.update_step(0, step)
    assert len(messages) == 1 and "trainer_max_steps=10" in messages[0] and "${trainer.max_steps}" in messages[0]
    sds = make_guidance(ts, tiny_sd, mode="sds")  # random timesteps: no schedule to outlive
    sds.update_step(0, 20)
    assert len(messages) == 1


@pytest.mark.parametrize("carry", ["guided", "unconditional"])
def test_next_step_noise_is_the_previous_prediction(ts, tiny_sd, prompt_utils, carry):
    """Alg. 2: at step 1 the noise added is eps^ predicted at step 0 (eta = 0), computed here by hand;
    with guidance.carry=unconditional it is eps(z_t, null) (as Alg. 3 and 4 carry); the target stays eps^."""
    g = make_guidance(ts, tiny_sd, view_dependent_prompting=False, carry=carry, return_target=True)
    z = torch.randn(1, 4, 64, 64)
    g.update_step(0, 0)
    first = g(z.permute(0, 2, 3, 1), prompt_utils, rgb_as_latents=True, **cams())
    t0 = g.sampler.timesteps[0]
    a0 = g.alphas[t0]
    z_t = a0.sqrt() * z + (1 - a0).sqrt() * g.sampler.noise_tilde(0)
    emb = prompt_utils.get_text_embeddings(**cams(), view_dependent_prompting=False)
    with torch.no_grad():
        cond = g.unet(z_t, t0, encoder_hidden_states=emb[:1]).sample
        uncond = g.unet(z_t, t0, encoder_hidden_states=emb[1:]).sample
    eps_hat = uncond + 7.5 * (cond - uncond)
    carried = eps_hat if carry == "guided" else uncond
    # the guidance's batched UNet call and these two single calls differ by float32 rounding, about 1e-6 of the
    # predictions' scale; CFG multiplies that by up to 1 + 2 * 7.5
    tol = (1 + 2 * 7.5) * 1e-6 * max(cond.abs().max(), uncond.abs().max())
    assert torch.allclose(first["carried_rms"], carried.pow(2).mean().sqrt(), rtol=0, atol=tol)
    z0_hat = (z_t - (1 - a0).sqrt() * eps_hat) / a0.sqrt()  # Tweedie with the guided prediction either way
    target = (g.vae.decode(z0_hat / g.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(first["target_rgb"], target.permute(0, 2, 3, 1), atol=1e-4)
    g.update_step(0, 1)
    g(z.permute(0, 2, 3, 1), prompt_utils, rgb_as_latents=True, **cams())
    assert torch.allclose(g.sampler.noise_tilde(1), carried, rtol=0, atol=tol)


def test_per_view_noise_keys_follow_the_batch_index(ts, tiny_sd, prompt_utils):
    g = make_guidance(ts, tiny_sd, per_view_noise=True)
    g.update_step(0, 0)
    g(prompt_utils=prompt_utils, index=torch.tensor([4, 7]), **latents(2), **cams(2))
    g.update_step(0, 1)
    g(prompt_utils=prompt_utils, index=torch.tensor([7]), **latents(), **cams())
    assert g.sampler.noise_tilde(1, key=[7]).shape == (1, 4, 64, 64)
    with pytest.raises(RuntimeError, match="view key 4"):
        g.sampler.noise_tilde(1, key=[4])


def test_camera_bins_key_the_carried_noise_by_azimuth_sector(ts, tiny_sd, prompt_utils):
    """Random cameras: a view carries the prediction last made in its own azimuth sector (eta 0: exactly it)."""
    g = make_guidance(ts, tiny_sd, camera_bins=4)
    g.update_step(0, 0)
    view = dict(elevation=torch.zeros(2), camera_distances=torch.full((2,), 2.0))
    g(prompt_utils=prompt_utils, azimuth=torch.tensor([10.0, 100.0]), **latents(2), **view)
    stored = {k: m["eps"] for k, m in g.sampler.state_dict()["memory"].items()}
    assert set(stored) == {0, 1}
    g.update_step(0, 1)
    g(prompt_utils=prompt_utils, azimuth=torch.tensor([-170.0, -20.0]), **latents(2), **view)  # back, front
    assert torch.allclose(g.sampler.noise_tilde(1, key=[0]), stored[0])  # front carries front's prediction
    tilde_back = g.sampler.noise_tilde(1, key=[2])  # the first back view starts from fresh noise
    assert not any(torch.allclose(tilde_back, e) for e in stored.values())
    assert abs(float(tilde_back.std()) - 1) < 0.1


def test_camera_bins_reject_negative_and_per_view_noise(ts, tiny_sd):
    for cfg in ({"camera_bins": -1}, {"camera_bins": 4, "per_view_noise": True}):
        with pytest.raises(ValueError, match="guidance.camera_bins"):
            make_guidance(ts, tiny_sd, **cfg)


def test_four_azimuth_bins_are_threestudios_view_directions(ts, prompt_utils):
    """Bins 0 / 2 are the prompt processor's front / back, 1 and 3 its sides (its thresholds of 45 degrees)."""
    from dreamsampler.multiview.cameras import azimuth_bin

    azimuth = torch.rand(2000, generator=torch.Generator().manual_seed(0)) * 720 - 360
    wrapped = torch.remainder(azimuth + 180, 360) - 180  # threestudio's range
    elevation, distance = torch.zeros_like(azimuth), torch.full_like(azimuth, 2.0)
    name = {}
    for d in prompt_utils.directions:
        if d.name != "overhead":
            for k in torch.nonzero(d.condition(elevation, wrapped, distance)).flatten().tolist():
                name[k] = d.name  # later directions win, as threestudio assigns them
    expected = [{"front": 0, "back": 2}.get(name[k], -1) for k in range(len(azimuth))]
    bins = azimuth_bin(azimuth, 4)
    for k, e in enumerate(expected):
        assert bins[k] == e if e >= 0 else bins[k] in (1, 3), (float(azimuth[k]), name[k], int(bins[k]))
    assert set(bins.tolist()) == {0, 1, 2, 3}
    assert torch.equal(azimuth_bin(torch.tensor([0.0, 44.0, 46.0, 179.0, -179.0, -46.0]), 4), torch.tensor([0, 0, 1, 2, 2, 3]))


def test_state_round_trip_continues_identically(ts, tiny_sd, prompt_utils):
    a, b = make_guidance(ts, tiny_sd, eta=0.5), make_guidance(ts, tiny_sd, eta=0.5)
    x = latents()
    for step in range(3):
        a.update_step(0, step)
        a(prompt_utils=prompt_utils, **x, **cams())
    b.load_state_dict(a.state_dict())
    outs = []
    for g in (a, b):
        g.update_step(0, 3)
        torch.manual_seed(5)  # eta's fresh noise
        outs.append(g(prompt_utils=prompt_utils, **x, **cams())["loss_sds"])
    assert torch.equal(outs[0], outs[1])


def test_a_start_set_at_run_time_rebuilds_the_schedule_and_survives_the_checkpoint(ts, tiny_sd, prompt_utils):
    """start_schedule_at (the degraded system's residual rule): the schedule runs from the new start to
    min_step as diffusers-free arithmetic says, and a fresh guidance that loads the state follows it; SDS mode
    draws up to it."""
    from dreamsampler.diffusion import decreasing_timesteps

    a, b = make_guidance(ts, tiny_sd), make_guidance(ts, tiny_sd)
    a.start_schedule_at(300)
    assert a.sampler.timesteps.tolist() == decreasing_timesteps(10, 20, 300, a.cfg.timestep_schedule).tolist()
    assert a.sampler.timesteps[0] == 300 and a.sampler.timesteps[-1] == 20
    x = latents()
    a.update_step(0, 0)
    assert a(prompt_utils=prompt_utils, **x, **cams())["timestep"] == 300
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.sampler.timesteps, a.sampler.timesteps) and b.max_step == 300
    sds = make_guidance(ts, tiny_sd, mode="sds")
    sds.start_schedule_at(100)
    torch.manual_seed(0)
    draws = []
    for step in range(20):
        sds.update_step(0, step)
        draws.append(sds(prompt_utils=prompt_utils, **x, **cams())["timestep"])
    assert max(draws) <= 100 and sds.max_step == 100


def test_a_validation_call_with_test_info_leaves_the_carried_noise_alone(ts, tiny_sd, prompt_utils):
    """threestudio's sdi-system calls the guidance at each validation view with ``test_info``: the images it shows
    come back at the render's size, and the next training step runs as if the call had not happened."""
    a, b = make_guidance(ts, tiny_sd), make_guidance(ts, tiny_sd)
    rgb = torch.rand(1, 32, 32, 3)
    outs = []
    for g, peek in ((a, False), (b, True)):
        g.update_step(0, 0)
        torch.manual_seed(0)
        g(rgb, prompt_utils, **cams())
        if peek:
            info = g(torch.rand(1, 32, 32, 3), prompt_utils, **cams(), test_info=True)
            assert {k: tuple(info[k].shape) for k in ("target", "noisy_img", "noise_img")} == dict.fromkeys(
                ("target", "noisy_img", "noise_img"), (32, 32, 3))
        g.update_step(0, 1)
        torch.manual_seed(1)
        outs.append(g(rgb, prompt_utils, **cams())["loss_sds"])
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"min_step_percent": 0.5, "max_step_percent": 0.5}, "min_step_percent"),
        ({"eta": 1.5}, "eta"),
        ({"carry": "fresh"}, "guidance.carry="),
        ({"timestep_schedule": "exponential"}, "timestep_schedule"),
        ({"weighting_strategy": "nope"}, "weighting_strategy"),
        ({"mode": "magic"}, "guidance.mode"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite"),
        ({"mode": "sdi", "inversion_n_steps": 0}, "guidance.inversion_n_steps"),
        ({"mode": "sdi", "inversion_eta": -0.3}, "guidance.inversion_eta"),
    ],
)
def test_bad_config_names_the_field(ts, tiny_sd, cfg, match):
    with pytest.raises(ValueError, match=match):
        make_guidance(ts, tiny_sd, **cfg)


def test_unloadable_model_says_how_to_pass_a_local_path(ts, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="pretrained_model_name_or_path='no-such/model'.*local directory"):
        ts.find("dreamsampler-guidance")({"pretrained_model_name_or_path": "no-such/model"})


def test_non_finite_prediction_raises_or_skips_without_touching_state(ts, tiny_sd, prompt_utils, monkeypatch):
    g = make_guidance(ts, tiny_sd)
    g.update_step(0, 0)
    g(prompt_utils=prompt_utils, **latents(), **cams())
    before = g.sampler.state_dict()["memory"][None]["eps"].clone()
    monkeypatch.setattr(g, "forward_unet", lambda z, t, e: torch.full_like(z, float("nan")))
    g.update_step(0, 1)
    with pytest.raises(FloatingPointError, match="on_nonfinite=skip"):
        g(prompt_utils=prompt_utils, **latents(), **cams())
    g.cfg.on_nonfinite = "skip"
    rgb = torch.randn(1, 64, 64, 4, requires_grad=True)
    out = g(rgb, prompt_utils, rgb_as_latents=True, **cams())
    out["loss_sds"].backward()
    assert out["loss_sds"].item() == 0.0 and torch.equal(rgb.grad, torch.zeros_like(rgb))
    assert torch.equal(g.sampler.state_dict()["memory"][None]["eps"], before)


def test_sds_mode_is_threestudios_random_timestep(ts, tiny_sd, prompt_utils):
    g = make_guidance(ts, tiny_sd, mode="sds")
    torch.manual_seed(0)
    seen = set()
    for step in range(6):
        g.update_step(0, step)
        seen.add(g(prompt_utils=prompt_utils, **latents(), **cams())["timestep"])
    assert len(seen) > 3 and all(20 <= t <= 980 for t in seen)


def test_bridge_runs_sds_first_then_the_source_prompt_gradient(ts, tiny_sd, prompt_utils, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("bridge"))
    pp = {"pretrained_model_name_or_path": tiny_sd, "prompt": PROMPT, "spawn": False}
    g = make_guidance(ts, tiny_sd, mode="bridge", bridge_start_step=2, bridge_scale=3.0, prompt_processor=pp,
                      view_dependent_prompting=False, weighting_strategy="uniform")
    src = make_prompt_utils(ts, tiny_sd, tmp_path_factory, PROMPT + distill_suffix())
    z = torch.randn(1, 4, 64, 64)
    calls = []
    real = g.forward_unet
    monkeypatch.setattr(g, "forward_unet", lambda zz, tt, ee: calls.append(ee) or real(zz, tt, ee))
    g.update_step(0, 1)
    g(z.permute(0, 2, 3, 1), prompt_utils, rgb_as_latents=True, **cams())
    emb = prompt_utils.get_text_embeddings(**cams(), view_dependent_prompting=False)
    assert torch.equal(calls[-1], emb)  # stage 1: SDS with (cond, uncond)
    g.update_step(0, 2)
    z.requires_grad_(True)
    torch.manual_seed(1)
    out = g(z.permute(0, 2, 3, 1), prompt_utils, rgb_as_latents=True, **cams())
    src_emb = src.get_text_embeddings(**cams(), view_dependent_prompting=False)
    assert torch.allclose(calls[-1], torch.cat([emb[:1], src_emb[:1]]))  # stage 2: (target, source)
    # the gradient is bridge_scale * (eps(tgt) - eps(src)) on the latent
    out["loss_sds"].backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_an_empty_source_prompt_bridges_from_the_null_prompt(ts, tiny_sd, prompt_utils, tmp_path_factory, monkeypatch):
    """source_prompt "" : y_src is threestudio's own unconditional embedding, so the bridge is the CFG direction."""
    monkeypatch.chdir(tmp_path_factory.mktemp("bridge-null"))
    pp = {"pretrained_model_name_or_path": tiny_sd, "prompt": PROMPT, "spawn": False}
    g = make_guidance(ts, tiny_sd, mode="bridge", prompt_processor=pp, source_prompt="", view_dependent_prompting=False)
    src = g.source_prompt_utils.get_text_embeddings(**cams(), view_dependent_prompting=False)
    emb = prompt_utils.get_text_embeddings(**cams(), view_dependent_prompting=False)
    assert torch.equal(src[:1], emb[1:])


def distill_suffix():
    from dreamsampler.distill.modes import ARTIFACT_DESCRIPTORS

    return ARTIFACT_DESCRIPTORS


def test_dds_and_bridge_bad_input(ts, tiny_sd, prompt_utils, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("dds"))
    pp = {"pretrained_model_name_or_path": tiny_sd, "prompt": PROMPT, "spawn": False}
    with pytest.raises(ValueError, match="source_prompt"):
        make_guidance(ts, tiny_sd, mode="dds", prompt_processor=pp)
    with pytest.raises(ValueError, match="non-empty target prompt"):
        make_guidance(ts, tiny_sd, mode="bridge", prompt_processor={**pp, "prompt": " "})
    with pytest.raises(ValueError, match="prompt_processor"):
        make_guidance(ts, tiny_sd, mode="bridge")
    g = make_guidance(ts, tiny_sd, mode="dds", prompt_processor=pp, source_prompt="a photo of a dog")
    with pytest.raises(ValueError, match="source_rgb"):
        g(torch.rand(1, 32, 32, 3), prompt_utils, **cams())
    out = g(torch.rand(1, 32, 32, 3), prompt_utils, source_rgb=torch.rand(1, 32, 32, 3), **cams())
    assert math.isfinite(out["loss_sds"].item())


def test_lmc_needs_a_checkpoint_and_runs_with_one(ts, tiny_sd, prompt_utils, tmp_path):
    from dreamsampler.distill.lmc import CorrectiveUNet, save_corrective

    with pytest.raises(ValueError, match="lmc_checkpoint"):
        make_guidance(ts, tiny_sd, mode="lmc")
    ckpt = save_corrective(CorrectiveUNet(in_channels=4, base_channels=8, depth=2), tmp_path / "k.safetensors")
    g = make_guidance(ts, tiny_sd, mode="lmc", lmc_checkpoint=str(ckpt), lmc_fixed_noise=True)
    x = torch.randn(1, 64, 64, 4, requires_grad=True)
    g.update_step(0, 0)
    out = g(x, prompt_utils, rgb_as_latents=True, **cams())
    out["loss_sds"].backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # the fixed noise is part of the state, so a resumed run keeps the same eps inside L_lmc
    state = g.state_dict()
    assert "fixed_noise" in state
    h = make_guidance(ts, tiny_sd, mode="lmc", lmc_checkpoint=str(ckpt), lmc_fixed_noise=True)
    h.load_state_dict(state)
    shape = (1, 4, 64, 64)
    assert torch.equal(h.fixed_noise(shape), g.fixed_noise(shape))


@pytest.mark.parametrize("sample_size,native", [(64, 512), (8, 64)])
def test_renders_are_encoded_at_the_models_native_resolution(ts, tiny_sd, prompt_utils, tmp_path, sample_size, native):
    """The tiny pipeline (UNet latents 64, SD 1.5's shape) encodes at 512; a model whose UNet latents are
    8 (a 64 px model, like the miniature world model) encodes a 64x64 render as it is, without resizing."""
    from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline

    model = tiny_sd if sample_size == 64 else build_tiny_pipeline(tmp_path / "tiny-64", sample_size=sample_size)
    g = make_guidance(ts, model, pixel_loss=True, return_target=True)
    assert g.resolution == native
    seen = []
    encode = g.encode_images
    g.encode_images = lambda imgs: seen.append(tuple(imgs.shape[-2:])) or encode(imgs)
    g.update_step(0, 0)
    out = g(torch.rand(1, 64, 64, 3), prompt_utils, **cams(1))
    assert seen == [(native, native)]
    assert out["target_rgb"].shape == (1, native, native, 3) and torch.isfinite(out["loss_pixel"])


def test_a_v_prediction_model_is_read_as_v(ts, tiny_sd_v):
    """On an SD 2.x-shaped pipeline (v-predicting UNet) the guidance's eps is the one diffusers' DDIM
    step implies from v (via its pred_original_sample), not the raw output."""
    from diffusers import DDIMScheduler

    g = make_guidance(ts, tiny_sd_v)
    assert g.prediction_type == "v_prediction"
    gen = torch.Generator().manual_seed(0)
    z_t, emb = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 77, 32, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        v = g.unet(z_t, t, encoder_hidden_states=emb).sample
        ours = g.forward_unet(z_t, t, emb)
    sched = DDIMScheduler.from_pretrained(tiny_sd_v, subfolder="scheduler")
    sched.set_timesteps(20)
    x0 = sched.step(v, 500, z_t).pred_original_sample
    a = sched.alphas_cumprod[500]
    reference = (z_t - a.sqrt() * x0) / (1 - a).sqrt()
    assert torch.allclose(ours, reference, atol=1e-5) and not torch.allclose(ours, v, atol=1e-3)


MINI_SD = __import__("pathlib").Path(__file__).resolve().parents[2] / "custom/threestudio-dreamsampler/dreamsampler/world/mini-sd"


@pytest.mark.skipif(not (MINI_SD / "model_index.json").exists(), reason="the trained mini-sd folder is absent")
def test_a_source_prompt_longer_than_the_text_encoders_context_names_the_field(ts, tmp_path_factory):
    """The bridge's default y_src is 87 tokens for the mini model (unknown words split into characters), its context 32."""
    pp = {"pretrained_model_name_or_path": str(MINI_SD), "prompt": "a red circle", "spawn": False}
    with pytest.raises(ValueError, match=r"longer than the text encoder's 32 .*guidance.source_suffix"):
        make_guidance(ts, str(MINI_SD), mode="bridge", prompt_processor=pp)
    g = make_guidance(ts, str(MINI_SD), mode="bridge", prompt_processor=pp, source_suffix=", a blue square")
    assert g.source_prompt_utils is not None


@pytest.mark.skipif(not (MINI_SD / "model_index.json").exists(), reason="the trained mini-sd folder is absent")
def test_the_miniature_world_model_is_guided_at_its_native_64(ts, tmp_path_factory):
    """The trained mini-sd (64 px, 16x16 latents): a guidance step encodes the 64x64 render as it is."""
    pu = make_prompt_utils(ts, str(MINI_SD), tmp_path_factory, "a red circle")
    g = make_guidance(ts, str(MINI_SD), pixel_loss=True)
    assert g.resolution == 64 and g.prediction_type == "epsilon"
    seen = []
    encode = g.encode_images
    g.encode_images = lambda imgs: seen.append(tuple(imgs.shape[-2:])) or encode(imgs)
    g.update_step(0, 0)
    out = g(torch.rand(1, 64, 64, 3), pu, **cams(1))
    assert seen == [(64, 64)] and torch.isfinite(out["loss_sds"]) and torch.isfinite(out["loss_pixel"])


def test_one_step_estimates_are_diffusers_ddim_x0_decoded(ts, tiny_sd, prompt_utils):
    """The degraded-view system's per-view targets (``prior: consistent-targets``): a 16 px render encoded at the
    model's 512 (VAE posterior mean), noised to t with the generator's next draw, one CFG step, and diffusers'
    DDIM ``pred_original_sample`` decoded and area-resized back to 16 px."""
    import torch.nn.functional as F
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    g = make_guidance(ts, tiny_sd)
    rgb, t = torch.rand(2, 3, 16, 16), 500
    torch.manual_seed(3)
    estimates = g.one_step_estimates(rgb, t, prompt_utils, **cams(2))

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(50)
    scale = pipe.vae.config.scaling_factor
    with torch.no_grad():
        up = F.interpolate(rgb, size=512, mode="bilinear", align_corners=False)
        z0 = pipe.vae.encode(up * 2 - 1).latent_dist.mean * scale
        torch.manual_seed(3)
        ts_ = torch.full((2,), t)
        z_t = sched.add_noise(z0, torch.randn(z0.shape), ts_)
        emb = prompt_utils.get_text_embeddings(**cams(2), view_dependent_prompting=True)
        cond, uncond = pipe.unet(torch.cat([z_t] * 2), torch.cat([ts_] * 2), encoder_hidden_states=emb).sample.chunk(2)
        x0 = sched.step(uncond + 7.5 * (cond - uncond), t, z_t).pred_original_sample
        ref = F.interpolate((pipe.vae.decode(x0 / scale).sample / 2 + 0.5).clamp(0, 1), size=16, mode="area")
    assert estimates.shape == (2, 3, 16, 16)
    assert torch.allclose(estimates, ref, atol=1e-4), (estimates - ref).abs().max()
