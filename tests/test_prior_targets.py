"""benchmarks/prior_targets.py: the one-step targets against diffusers' own pieces (VAE, scheduler's noising and
x0 prediction, UNet called per prompt), the grids it reads, the schedule's grid."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if name not in sys.modules:  # quality.py registers benchmarks/quality_tasks, which prior_targets.py imports
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


_load("quality")
prior_targets = _load("prior_targets")


def test_one_step_targets_are_diffusers_x0_prediction_decoded(tiny_sd):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    model = prior_targets.load_model(tiny_sd)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t, scale = 333, 3.0
    got = prior_targets.one_step_targets(model, images, "a red cube", t, scale, torch.Generator().manual_seed(7))

    with torch.no_grad():
        up = F.interpolate(images, size=512, mode="bilinear", align_corners=False)
        z0 = pipe.vae.encode(up * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(7))
        sched = DDIMScheduler.from_config(pipe.scheduler.config)
        sched.set_timesteps(50)
        z_t = sched.add_noise(z0, noise, torch.tensor([t]))
        (null,), (cond,) = (pipe.encode_prompt(p, "cpu", 1, False)[:1] for p in ("", "a red cube"))
        eps_u = pipe.unet(z_t, t, encoder_hidden_states=null.expand(2, -1, -1)).sample
        eps_c = pipe.unet(z_t, t, encoder_hidden_states=cond.expand(2, -1, -1)).sample
        x0 = sched.step(eps_u + scale * (eps_c - eps_u), t, z_t).pred_original_sample
        want = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample / 2 + 0.5
    want = F.interpolate(want.clamp(0, 1), size=16, mode="area")
    assert got.shape == (2, 3, 16, 16)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_warmup_views_reads_first_and_last_columns_in_view_order(tmp_path):
    folder = tmp_path / "runs" / "nerf-x8" / "warm-up-alone" / "0" / "cfg" / "trial@1" / "save"
    (folder / "it100-views").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"step": 100}))
    size = 4
    for i in range(11):  # data views: render | A(render) | y | ground truth, each size x size, grey level = column
        cols = [np.full((size, size, 3), 10 * i + c, np.uint8) for c in range(4)]
        Image.fromarray(np.concatenate(cols, axis=1)).save(folder / "it100-views" / f"{i}.png")
    for i in range(2):  # held-out views: render | ground truth
        cols = [np.full((size, size, 3), 200 + 10 * i + c, np.uint8) for c in range(2)]
        Image.fromarray(np.concatenate(cols, axis=1)).save(folder / "it100-views" / f"heldout-{i}.png")
    views = prior_targets.warmup_views(tmp_path, "nerf-x8", 0)
    (renders, clean), (h_renders, h_clean) = views["data"], views["held-out"]
    assert renders.shape == clean.shape == (11, 3, size, size) and h_renders.shape == (2, 3, size, size)
    grey = lambda x: [round(float(v) * 255) for v in x[:, 0, 0, 0]]
    assert grey(renders) == [10 * i for i in range(11)] and grey(clean) == [10 * i + 3 for i in range(11)]
    assert grey(h_renders) == [200, 210] and grey(h_clean) == [201, 211]


def test_schedule_grid_runs_from_the_start_to_the_configs_end():
    assert prior_targets.schedule_grid(333) == [333, 255, 176, 98, 20]
    assert prior_targets.schedule_grid(20) == [20]


def test_repeated_targets_feed_each_estimate_back_in(tiny_sd):
    """k applications: the first is the one-step estimate's PSNR, each later one starts from the previous output."""
    from dreamsampler.metrics import psnr

    model = prior_targets.load_model(tiny_sd)
    images, clean = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    got = prior_targets.repeated_targets(model, images, clean, "a red cube", 200, 3.0, torch.Generator().manual_seed(3), 2)
    g = torch.Generator().manual_seed(3)
    once = prior_targets.one_step_targets(model, images, "a red cube", 200, 3.0, g)
    twice = prior_targets.one_step_targets(model, once, "a red cube", 200, 3.0, g)
    assert len(got) == 2
    assert got == [psnr(once, clean).mean().item(), psnr(twice, clean).mean().item()]


def test_target_views_keep_the_data_views_cameras_and_refuse_a_misordered_ground_truth(tmp_path, tiny_sd):
    """The refit's folders: the degraded folder's transforms.json, each frame's image the one-step estimate of that
    data view's render, and in the consistent folder that estimate moved to agree with the view's y; a grid whose
    ground truth is not the frame's clean view is refused."""
    from dreamsampler.inverse.operators import build_operator

    size, n, operator = 4, 3, {"type": "downsample", "factor": 2}
    save = tmp_path / "runs" / "nerf-x8" / "warm-up-alone" / "0" / "cfg" / "trial@1" / "save"
    (save / "it100-views").mkdir(parents=True)
    (save / "metrics.json").write_text(json.dumps({"step": 100}))
    scene = tmp_path / "scenes" / "nerf-x8-0"
    for d in ("clean", "degraded"):
        (scene / d).mkdir(parents=True)
    frames = [{"file_path": f"./r_{i}.png", "transform_matrix": [[float(i == j) for j in range(4)] for i in range(4)]}
              for i in range(n)]
    (scene / "degraded" / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.9, "frames": frames}))
    (scene / "scene.json").write_text(json.dumps({"caption": "a red cube", "clean": str(scene / "clean"),
                                                  "degraded": str(scene / "degraded"), "operator": operator}))
    rng = np.random.default_rng(0)
    for i in range(n):
        cols = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(4)]
        Image.fromarray(np.concatenate(cols, axis=1)).save(save / "it100-views" / f"{i}.png")
        Image.fromarray(cols[3]).save(scene / "clean" / f"r_{i}.png")
        Image.fromarray(rng.integers(0, 256, (size // 2, size // 2, 3), dtype=np.uint8)).save(scene / "degraded" / f"r_{i}.png")
    Image.fromarray(np.concatenate([cols[0], cols[3]], axis=1)).save(save / "it100-views" / "heldout-0.png")
    model = prior_targets.load_model(tiny_sd)
    folders = prior_targets.write_target_views(model, tmp_path, "nerf-x8", 0, 200, 3.0, torch.Generator().manual_seed(4))
    renders, _ = prior_targets.warmup_views(tmp_path, "nerf-x8", 0)["data"]
    want = prior_targets.one_step_targets(model, renders, "a red cube", 200, 3.0, torch.Generator().manual_seed(4))
    read = lambda folder, i: torch.from_numpy(np.asarray(Image.open(folder / f"r_{i}.png").convert("RGB"),
                                                         dtype=np.float32) / 255).permute(2, 0, 1)[None]
    A = build_operator(operator)
    for project, folder in folders.items():
        assert json.loads((folder / "transforms.json").read_text())["frames"] == frames
        for i in range(n):
            got, y = read(folder, i), read(scene / "degraded", i)
            if not project:
                assert (got[0] - want[i]).abs().max() <= 0.5 / 255 + 1e-6
            else:  # closer to y than the estimate it started from
                measure = lambda x: A(x * 2 - 1) / 2 + 0.5
                assert (measure(got) - y).abs().mean() < 0.5 * (measure(want[i: i + 1]) - y).abs().mean()
    Image.fromarray(cols[0]).save(scene / "clean" / "r_2.png")  # view 2's ground truth is no longer its clean view
    with pytest.raises(RuntimeError, match="data view 2's saved ground truth is not r_2.png"):
        prior_targets.write_target_views(model, tmp_path, "nerf-x8", 0, 200, 3.0, torch.Generator())
