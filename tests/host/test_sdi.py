"""``mode: sdi`` against threestudio's own ``stable-diffusion-sdi-guidance``, and the UNet evaluations
every mode reports (``unet_evals``), on the tiny pipeline inside real threestudio (CPU)."""
import os
import random

import pytest
import torch

from .test_guidance import PROMPT, cams, make_guidance, make_prompt_utils

pytestmark = pytest.mark.threestudio


def perp_neg_prompt_utils(ts, model, tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("pp-perp-neg"))
    try:
        cfg = {"pretrained_model_name_or_path": model, "prompt": PROMPT, "spawn": False, "use_perp_neg": True}
        return ts.find("stable-diffusion-prompt-processor")(cfg)()
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    "perp_neg, min_step_percent, step",
    [(False, 0.25, 19), (True, 0.02, 19)],  # step 19 of 20: t = 286 (4 inversion steps), t = 68 (2, Perp-Neg's 4x batch)
    ids=["cfg", "perp-neg"],
)
def test_sdi_mode_is_threestudios_sdi_guidance(ts, tiny_sd, tmp_path_factory, perp_neg, min_step_percent, step):
    """Same seed, render, cameras and anneal state: ours (tiny pipeline at its native 512) and threestudio's
    SDI (fp32 on the CPU, sdi.yaml's fields) give the same loss, the same gradient on the render and the
    same timestep, and both leave torch's and Python's random streams at the same place. Our CFG scales
    are eq. 6's: threestudio's + 1 without Perp-Neg, the same with it. Tolerances, relative to the values'
    scale: loss 1e-5, gradient 1e-4 of its largest entry (measured here: about 1e-7 and 2e-5)."""
    pu = perp_neg_prompt_utils(ts, tiny_sd, tmp_path_factory) if perp_neg else make_prompt_utils(
        ts, tiny_sd, tmp_path_factory, PROMPT
    )
    common = {"pretrained_model_name_or_path": tiny_sd, "half_precision_weights": False, "trainer_max_steps": 20,
              "min_step_percent": min_step_percent, "max_step_percent": 0.98}
    sdi = {"inversion_n_steps": 10, "inversion_eta": 0.3, "t_anneal": True}
    theirs = ts.find("stable-diffusion-sdi-guidance")(
        dict(common, **sdi, guidance_scale=7.5, inversion_guidance_scale=-7.5, enable_sdi=True)
    )
    shift = 0.0 if perp_neg else 1.0
    ours = make_guidance(ts, tiny_sd, **common, **sdi, mode="sdi", guidance_scale=7.5 + shift,
                         inversion_guidance_scale=-7.5 + shift)
    for s in range(21):  # the annealed timestep, step by step
        theirs.update_step(0, s)
        ours.update_step(0, s)
        assert (ours.min_step, ours.max_step) == (theirs.min_step, theirs.max_step), s

    view = dict(elevation=torch.tensor([10.0]), azimuth=torch.tensor([30.0]), camera_distances=torch.tensor([2.0]))
    render = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    results = []
    for g, key in ((theirs, "loss_sdi"), (ours, "loss_sds")):
        g.update_step(0, step)
        rgb = render.clone().requires_grad_(True)
        torch.manual_seed(0)
        random.seed(0)
        out = g(rgb, pu, **view)
        out[key].backward()
        results.append((out[key].detach(), rgb.grad, out["grad_norm"], torch.rand(1), random.random()))
    (loss_t, grad_t, norm_t, rand_t, py_t), (loss_o, grad_o, norm_o, rand_o, py_o) = results
    assert out["timestep"] == theirs.min_step == int(1000 * ((0.98 - min_step_percent) * (1 - step / 20) + min_step_percent))
    assert torch.isfinite(loss_t) and grad_t.abs().max() > 0
    assert abs(float(loss_o - loss_t)) <= 1e-5 * abs(float(loss_t))
    assert abs(float(norm_o - norm_t)) <= 1e-5 * float(norm_t)
    assert float((grad_o - grad_t).abs().max()) <= 1e-4 * float(grad_t.abs().max())
    assert torch.equal(rand_o, rand_t) and py_o == py_t  # the same random numbers drawn, in the same order


def test_every_mode_reports_the_unet_evaluations_it_made(ts, tiny_sd64, tmp_path_factory, tmp_path, monkeypatch):
    """``unet_evals`` is the number of images the UNet saw in the step (its forward calls x their batch),
    counted here at the UNet's own forward, for a batch of 2."""
    from dreamsampler.distill.lmc import CorrectiveUNet, save_corrective

    monkeypatch.chdir(tmp_path_factory.mktemp("counts"))
    pu = make_prompt_utils(ts, tiny_sd64, tmp_path_factory, PROMPT)
    pu_perp = perp_neg_prompt_utils(ts, tiny_sd64, tmp_path_factory)
    pp = {"pretrained_model_name_or_path": tiny_sd64, "prompt": PROMPT, "spawn": False}
    ckpt = str(save_corrective(CorrectiveUNet(in_channels=4, base_channels=8, depth=2), tmp_path / "k.safetensors"))
    source = {"source_rgb": torch.rand(2, 64, 64, 3)}
    cases = [  # (label, config, prompt utils, extra batch keys, UNet evaluations per image)
        ("dreamsampler", {}, pu, {}, 2),  # CFG: eps(c) and eps(null)
        ("sds", {"mode": "sds"}, pu, {}, 2),
        ("sds + Perp-Neg", {"mode": "sds"}, pu_perp, {}, 4),  # cond, uncond and two negative prompts
        ("bridge", {"mode": "bridge", "prompt_processor": pp}, pu, {}, 2),
        ("dds", {"mode": "dds", "prompt_processor": pp, "source_prompt": "a photo of a dog"}, pu, source, 2),
        ("lmc", {"mode": "lmc", "lmc_checkpoint": ckpt}, pu, {}, 2),
        ("lmc fixed noise", {"mode": "lmc", "lmc_checkpoint": ckpt, "lmc_fixed_noise": True}, pu, {}, 3),
        # step 9 of 10 at sdi.yaml's 0.25 / 0.98: t = 322, inverted from -99 through 1, 101, 201, 301 to t + delta:
        # 5 inversion predictions and the target's, each a CFG pair (Perp-Neg: four)
        ("sdi", {"mode": "sdi", "min_step_percent": 0.25}, pu, {}, 12),
        ("sdi + Perp-Neg", {"mode": "sdi", "min_step_percent": 0.25}, pu_perp, {}, 24),
    ]
    counts = {}
    for label, cfg, prompt_utils, extra, per_image in cases:
        g = make_guidance(ts, tiny_sd64, **cfg)
        seen = []
        forward = g.unet.forward
        monkeypatch.setattr(g.unet, "forward", lambda sample, *a, **k: seen.append(sample.shape[0]) or forward(sample, *a, **k))
        g.update_step(0, 9)
        out = g(torch.rand(2, 64, 64, 3), prompt_utils, **cams(2), **extra)
        counts[label] = (out["unet_evals"], sum(seen))
        assert out["unet_evals"] == sum(seen) == 2 * per_image, (label, counts[label])
