"""The degraded-view NeRF's prior settings by rule (``dreamsampler.inverse.prior_settings``, ``scripts/prior_settings.py``)
and the inconsistent views of the world's object scenes (``world.scenes.Inconsistency``): against diffusers'
scheduler, hand arithmetic, brute-force solutions and the clean renders."""
import json

import pytest
import torch
import torch.nn.functional as F

from dreamsampler.inverse.operators import build_operator
from dreamsampler.inverse.prior_settings import (consistent_with, dc_estimate, dc_latent_error, per_pixel_weights,
                                                 residual_latent_error, rounded, start_timestep, start_with_residual)

BLUR = {"type": "blur", "kernel_size": 5, "sigma": 10.0}


def test_start_timestep_is_where_diffusers_noise_to_signal_ratio_first_reaches_the_error():
    from diffusers import DDPMScheduler

    abar = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    for error in (0.05, 0.2, 0.5, 0.93, 3.0):
        t = start_timestep(abar, error)
        brute = min(k for k in range(1000) if ((1 - abar[k]) / abar[k]) ** 0.5 >= error)
        assert t == brute
    assert start_timestep(abar, 1e9) == 999  # an error no noise level reaches: the whole schedule


def test_per_pixel_weights_give_the_papers_weights_at_its_resolution_and_scale_by_hand_elsewhere():
    assert per_pixel_weights(4 * 64 * 64, 3 * 512 * 512) == {"lambda_sds": 1.0, "lambda_pixel": 3932.0}
    # the mini model: 4x16x16 latents, 32 px renders. SDS: (16384 / 786432) / (1024 / 3072) = 1/16;
    # pixel: 3932 / 786432 per rendered element x 3072 elements = 15.359...
    got = per_pixel_weights(4 * 16 * 16, 3 * 32 * 32)
    assert got["lambda_sds"] == pytest.approx(1 / 16) and got["lambda_pixel"] == pytest.approx(3932 * 3072 / 786432)
    assert rounded(got["lambda_pixel"]) == 15.4 and rounded(0.33333) == 0.333


def smooth_images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def test_dc_estimate_is_the_least_squares_solution_of_a_brute_force_solve():
    """For x4 down-sampling on 8 px images the normal equations are small enough to solve densely."""
    op = build_operator({"type": "downsample", "factor": 4})
    x = smooth_images(1, 8)
    a = torch.stack([op(e.view(1, 3, 8, 8)).flatten() for e in torch.eye(3 * 64)], 1)  # A as a matrix
    y = a @ (x * 2 - 1).flatten()
    lam = 1e-3  # prior_settings.DC_WEIGHT
    exact = torch.linalg.solve(a.T @ a + lam * torch.eye(3 * 64), a.T @ y).view(1, 3, 8, 8)
    assert torch.allclose(dc_estimate(x, op), (exact / 2 + 0.5).clamp(0, 1), atol=2e-3)


def test_dc_latent_error_vanishes_without_degradation_and_grows_with_the_null_space():
    encode = lambda x: x * 2 - 1  # pixels as their own "latents"
    x = smooth_images(size=64)
    # A = I: the estimate is x / (1 + lambda), lambda = 1e-3, so the error is about lambda |x| / std(x)
    assert dc_latent_error(encode, x, build_operator({"type": "identity"}), 32, 64) < 5e-3
    errors = [dc_latent_error(encode, x, build_operator(spec), 32, 64)
              for spec in (BLUR, {"type": "downsample", "factor": 4}, {"type": "downsample", "factor": 8})]
    assert 0 < errors[0] < errors[1] < errors[2]


def test_prior_settings_script_prints_the_rules_overrides_for_a_model(tiny_sd, load_script, capsys):
    script = load_script("prior_settings")
    out = script.main(["--model", tiny_sd, "--cfg", "3", "--operator", "{type: downsample, factor: 8}", "--render-size", "32",
                       "--captions", "a hamburger", "--steps", "2", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["overrides"] == out["overrides"]
    o = out["overrides"]
    assert set(o) == {"system.guidance.guidance_scale", "system.guidance.max_step_percent", "system.loss.lambda_sds",
                      "system.loss.lambda_pixel"}
    assert o["system.guidance.guidance_scale"] == 3.0 and 0 < o["system.guidance.max_step_percent"] <= 1
    assert out["start_timestep"] == round(o["system.guidance.max_step_percent"] * 999) or \
        o["system.guidance.max_step_percent"] == rounded(out["start_timestep"] / 999)
    with pytest.raises(SystemExit):
        script.main(["--model", tiny_sd, "--cfg", "3", "--operator", "{type: blur}", "--render-size", "32"])  # no captions


def test_inconsistent_views_are_the_clean_renders_without_inconsistency_and_keep_the_white_background():
    from dreamsampler.world.scenes import Inconsistency, inconsistent_views, object_attrs, render_cameras, ring_cameras

    attrs, cams = object_attrs(5), ring_cameras()[:4]
    clean, _ = render_cameras(attrs, cams, 32)
    same = inconsistent_views(attrs, cams, 32, Inconsistency(pose_deg=0.0, gain=0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(same, clean, atol=1e-5)
    moved = inconsistent_views(attrs, cams, 32, Inconsistency(), torch.Generator().manual_seed(0))
    assert (moved - clean).abs().amax() > 0.05  # each view departs from the object
    corners = moved[..., :3, :3]  # far from the object: the background stays white
    assert torch.allclose(corners, torch.ones_like(corners), atol=1e-5)


def test_consistent_with_is_the_dense_regularized_solve_and_keeps_a_render_that_fits():
    """The image nearest x_ref with measurement y: (A^T A + lambda I) x = A^T y + lambda x_ref, solved densely
    (in [-1, 1]) for x4 down-sampling of 8 px images; a render whose A(render) is y comes back unchanged."""
    op = build_operator({"type": "downsample", "factor": 4})
    x, ref = smooth_images(1, 8, seed=1), smooth_images(1, 8, seed=2)
    a = torch.stack([op(e.view(1, 3, 8, 8)).flatten() for e in torch.eye(3 * 64)], 1)
    y = (a @ (x * 2 - 1).flatten()).view(1, 3, 2, 2) / 2 + 0.5
    lam = 1e-3
    exact = torch.linalg.solve(a.T @ a + lam * torch.eye(3 * 64), a.T @ (y * 2 - 1).flatten() + lam * (ref * 2 - 1).flatten())
    assert torch.allclose(consistent_with(y, op, ref), (exact.view(1, 3, 8, 8) / 2 + 0.5).clamp(0, 1), atol=2e-3)
    assert torch.allclose(consistent_with(y, op, x), x, atol=1e-5)


def test_residual_latent_error_is_zero_for_renders_that_fit_and_grows_with_the_misfit():
    encode = lambda x: x * 2 - 1
    op = build_operator(BLUR)
    renders = smooth_images(size=32)
    y = op(renders * 2 - 1) / 2 + 0.5
    assert residual_latent_error(encode, renders, y, op, 32) < 1e-4
    errors = [residual_latent_error(encode, renders, (y * gain).clamp(0, 1), op, 32) for gain in (1.02, 1.05, 1.1)]
    assert 0 < errors[0] < errors[1] < errors[2]


def test_start_with_residual_adds_the_errors_in_quadrature_on_diffusers_schedule():
    from diffusers import DDPMScheduler

    abar = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod.double()
    nsr = [((1 - float(abar[k])) / float(abar[k])) ** 0.5 for k in range(1000)]
    for start in (42, 206, 333):
        assert start_with_residual(abar, start, 0.0) == start
        for residual in (0.1, 0.3, 1.0):
            target = (nsr[start] ** 2 + residual ** 2) ** 0.5
            assert start_with_residual(abar, start, residual) == min(k for k in range(1000) if nsr[k] >= target - 1e-12)
