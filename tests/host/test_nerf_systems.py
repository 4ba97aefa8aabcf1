"""The NeRF systems in real threestudio on CPU with the tiny pipeline: both shipped configs run through
launch.py (run_threestudio.py) for a few steps at tiny resolution and leave sane outputs; a resumed
degraded-view run continues exactly as the uninterrupted one; the data module's batches and errors."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from dreamsampler import metrics
from dreamsampler.inverse.operators import build_operator
from dreamsampler.multiview import cameras, procedural, views
from dreamsampler.multiview.views import RingSpec

from .runner import REPO, RUN, assert_finite_losses, assert_sane_image, run_config

pytestmark = pytest.mark.threestudio

TEXT_TO_NERF = REPO / "configs" / "dreamsampler-text-to-nerf.yaml"
DEGRADED = REPO / "configs" / "dreamsampler-degraded-nerf.yaml"
CAPTION = "a cube"  # the tiny tokenizer's vocabulary is small: short prompts
TINY_NERF = [  # a small hash grid and few samples: about a second per step on CPU
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.renderer.num_samples_per_ray=16",
    "system.prompt_processor.spawn=false",
]
TEXT_TO_NERF_SMALL = TINY_NERF + [f"system.prompt_processor.prompt={CAPTION}", "system.geometry.pos_encoding_config.start_level=2"]


def assert_visible(path):
    """A saved image with content: not black, not flat (stricter than runner.assert_sane_image)."""
    img = assert_sane_image(path)
    assert img.ndim == 3 and img.max() > 20 and img.std() > 1, f"{path} is black or flat"
    return img


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The procedural box on a 4-view ring, 16 px, blurred as in the paper, written as folders."""
    return procedural.make_scene(str(tmp_path_factory.mktemp("scene")), size=16, ring=RingSpec(n_views=4))


def degraded_overrides(scene, *extra):
    return TINY_NERF + [
        f"data.dataroot={scene['degraded']}", f"data.gt_root={scene['clean']}", f"data.caption={CAPTION}",
        f"data.operator={json.dumps(scene['operator'])}", "data.ring_views=4", *extra,
    ]


# ------------------------------------------------------------- text-to-NeRF
def test_text_to_nerf_config_trains_validates_tests_and_checkpoints_the_guidance(tiny_sd, tmp_path):
    run = run_config(TEXT_TO_NERF, tmp_path, tiny_sd, 3, TEXT_TO_NERF_SMALL + ["data.n_test_views=4"])
    save = run.trial_dir / "save"
    assert_visible(save / "it3-0.png")  # validation: rgb | normal | opacity
    frames = run.images("save/it3-test/*.png")
    assert len(frames) == 4 and all(assert_visible(f) is not None for f in frames)
    assert (save / "it3-test.mp4").stat().st_size > 0

    losses = assert_finite_losses(run)
    for key in ("train/loss_sds", "train/loss_pixel", "train/loss_sparsity"):
        assert len(losses[key]) == 3, key
    assert all(math.isfinite(v) for v in run.series("train/grad_norm"))
    assert run.series("train/timestep") == [980.0, 500.0, 20.0]  # decreasing over the run

    state = run.checkpoint()["dreamsampler_guidance"]
    assert state["index"] == 2 and state["sampler"]["timesteps"].tolist() == [980, 500, 20]
    (memory,) = state["sampler"]["memory"].values()  # one memory: random cameras, no per-view keys
    assert memory["idx"] == 2 and memory["eps"].shape == (1, 4, 64, 64) and torch.isfinite(memory["eps"]).all()


def test_text_to_nerf_mesh_export(ts, tiny_sd, tmp_path):
    """threestudio's --export path: an untextured .obj of the trained field (no rasterization needed)."""
    run = run_config(TEXT_TO_NERF, tmp_path, tiny_sd, 1, TEXT_TO_NERF_SMALL + ["system.geometry.isosurface_resolution=32"])
    cmd = [
        sys.executable, *RUN, "--config", str(run.trial_dir / "configs" / "parsed.yaml"), "--export", "--cpu",
        f"resume={run.trial_dir / 'ckpts' / 'last.ckpt'}", "system.exporter.fmt=obj", "system.exporter.save_uv=false",
        "system.exporter.save_texture=false", "system.geometry.isosurface_threshold=auto",
    ]
    export = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert export.returncode == 0, export.stderr[-4000:]
    (obj,) = run.images("save/it1-export/*.obj")
    assert sum(line.startswith("v ") for line in open(obj)) > 3


# ------------------------------------------------------------ degraded views
def test_degraded_config_trains_and_writes_metrics_images_video(scene, tiny_sd, tmp_path):
    run = run_config(DEGRADED, tmp_path, tiny_sd, 4, degraded_overrides(
        scene, "system.warmup_steps=2", "data.n_val_views=2", "data.n_test_orbit_views=3"))
    save = run.trial_dir / "save"
    # validation and test grids: render | A(render) | measurement | ground truth, at 16 px
    grids = run.images("save/it4-val/*.png") + run.images("save/it4-views/*.png")
    assert len(grids) == 2 + 4 and all(assert_visible(p).shape == (16, 64, 3) for p in grids)
    assert sorted(p.name for p in run.images("save/it4-views/*.png")) == [f"{i}.png" for i in range(4)]
    assert len(run.images("save/it4-test/*.png")) == 3  # the orbit
    assert (save / "it4-test.mp4").stat().st_size > 0

    result = json.loads((save / "metrics.json").read_text())
    assert result["step"] == 4 and result["n_views"] == 4 and len(result["per_view"]) == 4
    assert all(math.isfinite(result[k][m]) for k in ("renders", "degraded_input") for m in ("psnr", "ssim"))
    # the baseline is the degraded input against the clean views, computed here independently
    clean = views.load_views(scene["clean"]).images  # [N, 3, H, W]
    degraded = views.load_views(scene["degraded"]).images
    assert abs(result["degraded_input"]["psnr"] - float(metrics.psnr(degraded, clean).mean())) < 1e-3
    assert (save / "it4-val" / "metrics.json").is_file()

    assert_finite_losses(run)
    dc_steps = sorted(int(r["step"]) for r in run.metrics() if r.get("train/loss_dc"))
    assert dc_steps[:2] == [0, 1]  # warm-up: data consistency on data views
    assert all(math.isfinite(v) for v in run.series("train/loss_sds") + run.series("train/loss_pixel"))
    # the schedule starts after the warm-up, at the configured 980 raised by the warm-up's residual (logged)
    prior = json.loads((save / "prior-start.json").read_text())
    assert prior["step"] == 2 and prior["configured_start"] == 980 and prior["residual_error"] > 0
    assert prior["start_timestep"] >= 980 and run.series("train/timestep") == [prior["start_timestep"], 20.0]
    assert run.log.count(f"the schedule starts at t={prior['start_timestep']} (configured 980)") == 1
    # a run that ends normally never outlives its schedule (guidance.schedule_start_step = the warm-up)
    assert "is past the schedule" not in run.log, "schedule warning on a run that ends normally"
    gammas = run.series("train/gamma")
    assert gammas[0] < 0.01 and gammas[1] > 0.95  # gamma = abar_t

    state = run.checkpoint()["dreamsampler_guidance"]
    keys = set(state["sampler"]["memory"])
    assert keys and keys <= set(range(8))  # per-view memory: 4 data views (0-3) and 4 novel views (4-7)


def test_consistent_targets_prior_fits_the_data_views_to_targets_consistent_with_y(scene, tiny_sd, tmp_path):
    """system.prior=consistent-targets: at the warm-up's end each data view gets a target (saved as render |
    estimate | target | y) whose measurement is its y, checked here with the operator; the steps after it fit the
    data views to the targets with no other UNet call; target_rounds=2 remakes them half-way, at the schedule's
    timestep of that step, and the checkpoint keeps the latest for a resumed run."""
    run = run_config(DEGRADED, tmp_path, tiny_sd, 4, degraded_overrides(
        scene, "system.warmup_steps=2", "system.prior=consistent-targets", "system.target_rounds=2",
        "data.novel_view_prob=0", "data.n_val_views=1", "data.n_test_orbit_views=0"))
    save = run.trial_dir / "save"
    start = json.loads((save / "prior-start.json").read_text())["start_timestep"]
    made = json.loads((save / "view-targets.json").read_text())
    assert made["views"] == 4 and [(r["step"], r["timestep"]) for r in made["rounds"]] == [(2, start), (3, 20)]
    assert [r["unet_evals"] for r in made["rounds"]] == [8, 8] and made["unet_evals"] == 16  # 4 views x CFG's 2
    blur = build_operator(scene["operator"])
    y = views.load_views(scene["degraded"]).images
    saved = run.checkpoint()["dreamsampler_view_targets"]
    assert saved["rounds"] == made["rounds"] and saved["targets"].shape == (4, 3, 16, 16)
    for step in (2, 3):
        grids = sorted(run.images(f"save/it{step}-targets/*.png"))
        assert [p.name for p in grids] == [f"{i}.png" for i in range(4)]
        for i, path in enumerate(grids):
            grid = torch.from_numpy(assert_visible(path)).float().permute(2, 0, 1) / 255  # [3, 16, 64]
            estimate, target = grid[:, :, 16:32], grid[:, :, 32:48]
            assert torch.allclose(grid[:, :, 48:], y[i], atol=1 / 255)
            # consistent with y: A(target) is y to within the CG solve and the clamp to [0, 1] (at the border),
            # while A(estimate) at the schedule's start is not (about 0.3 on this tiny random model)
            error = lambda x: (blur(x[None] * 2 - 1)[0] / 2 + 0.5 - y[i]).abs().mean()
            assert error(target) < 0.02
            if step == 2:
                assert error(estimate) > 5 * error(target)
            else:  # the last round's targets are the checkpoint's
                assert torch.allclose(target, saved["targets"][i], atol=1 / 255)
    target_steps = sorted(int(r["step"]) for r in run.metrics() if r.get("train/loss_target"))
    assert target_steps == [2, 3] and not run.series("train/loss_sds")
    assert all(math.isfinite(v) for v in run.series("train/loss_target"))
    assert run.log.count("consistent targets of the 4 data views at t=") == 2
    assert json.loads((save / "metrics.json").read_text())["step"] == 4


def test_consistent_targets_prior_refuses_novel_views_and_unknown_priors(ts, scene):
    system = ts.find("dreamsampler-degraded-nerf-system")
    dm = lambda prob: make_dm(ts, dataroot=scene["clean"], caption=CAPTION, ring_views=4, novel_view_prob=prob,
                              operator={"type": "downsample", "factor": 2})
    cfg = system.Config(prior="consistent-targets", start_from_residual=False)
    with pytest.raises(ValueError, match=r"set data.novel_view_prob=0 \(got 0.5\)"):
        system.check_datamodule(cfg, dm(0.5))
    system.check_datamodule(cfg, dm(0.0))
    with pytest.raises(ValueError, match=r"system.prior=consistent-targets renders the data views .*=RandomCameraDataModule lacks"):
        system.check_datamodule(cfg, ts.find("random-camera-datamodule")({}))
    with pytest.raises(ValueError, match=r"system.prior must be one of \('eq18', 'consistent-targets'\), got 'dc'"):
        system.check_config(system.Config(prior="dc", operator={"type": "identity"}))
    with pytest.raises(ValueError, match=r"system.target_rounds must be >= 1, got 0"):
        system.check_config(system.Config(prior="consistent-targets", target_rounds=0, operator={"type": "identity"}))


def test_degraded_config_scores_held_out_views_of_a_world_object(tiny_sd, tmp_path):
    """data.heldout_root: the test renders cameras never trained on and scores them against their clean views."""
    from dreamsampler.world.scenes import make_object_scene

    info = make_object_scene(str(tmp_path / "scene"), seed=1, size=16, operator={"type": "blur", "kernel_size": 5, "sigma": 10.0})
    run = run_config(DEGRADED, tmp_path / "run", tiny_sd, 2, TINY_NERF + [
        f"data.dataroot={info['degraded']}", f"data.gt_root={info['clean']}", f"data.heldout_root={info['heldout']}",
        f"data.caption={CAPTION}", f"data.operator={json.dumps(info['operator'])}", "system.warmup_steps=2",
        "data.n_val_views=1", "data.n_test_orbit_views=0"])
    result = json.loads((run.trial_dir / "save" / "metrics.json").read_text())
    held = result["heldout"]
    assert held["n_views"] == 8 and [r["view"] for r in held["per_view"]] == list(range(8))
    assert result["n_views"] == 16  # the data views are scored apart from them
    psnrs = []
    for k in range(8):  # each saved grid is render | ground truth; its PSNR, recomputed here, is the row's
        grid = torch.from_numpy(assert_sane_image(run.trial_dir / "save" / "it2-views" / f"heldout-{k}.png")).float() / 255
        render, gt = grid[:, :16].permute(2, 0, 1)[None], grid[:, 16:].permute(2, 0, 1)[None]
        assert torch.allclose(gt, views.load_views(info["heldout"]).images[k : k + 1], atol=1 / 255)
        psnrs.append(float(metrics.psnr(render, gt)))
        assert abs(psnrs[-1] - held["per_view"][k]["psnr"]) < 0.2
    assert abs(held["psnr"] - sum(psnrs) / 8) < 0.2 and 0 < held["ssim"] <= 1


# ------------------------------------------------------- the data module itself
def make_dm(ts, **cfg):
    dm = ts.find("dreamsampler-multiview-datamodule")(cfg)
    dm.setup()
    return dm


def test_the_residual_start_asks_for_the_multiview_data_module_at_fit_start(ts, scene):
    """system.start_from_residual renders the data views at the warm-up's end: another data module (threestudio's
    random cameras) is refused when the fit starts, naming both fields; off, or with our data module, it passes."""
    system = ts.find("dreamsampler-degraded-nerf-system")
    cfg = system.Config(start_from_residual=True)
    random_cameras = ts.find("random-camera-datamodule")({})
    with pytest.raises(ValueError, match=r"system.start_from_residual=true .* data_type=RandomCameraDataModule lacks"):
        system.check_datamodule(cfg, random_cameras)
    system.check_datamodule(system.Config(start_from_residual=False), random_cameras)
    system.check_datamodule(cfg, make_dm(ts, dataroot=scene["clean"], caption=CAPTION, ring_views=4,
                                         operator={"type": "downsample", "factor": 2}))


def test_train_batches_render_at_the_operator_input_size_with_per_view_keys(ts, scene):
    dm = make_dm(ts, dataroot=scene["clean"], caption=CAPTION, ring_views=4, apply_operator=True,
                 operator={"type": "downsample", "factor": 2}, novel_view_start_step=5, novel_view_prob=0.5)
    v = dm.views
    clean = views.load_views(scene["clean"]).images.permute(0, 2, 3, 1)  # threestudio's [N, H, W, 3]
    assert torch.equal(v.gt, clean) and v.measurements.shape == (4, 8, 8, 3)  # y = A(clean), clean = ground truth
    assert (v.height, v.width) == (16, 16) and v.novel.shape == (4, 4, 4)
    y = build_operator({"type": "downsample", "factor": 2})(clean.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.allclose(v.measurements, y.clamp(0, 1))
    train = dm.train_dataloader().dataset
    batches = [train.batch_at(s) for s in range(40)]
    assert all("measurement" in b for b in batches[:5])  # data views only before novel_view_start_step
    novel = [b for b in batches[5:] if "measurement" not in b]
    assert novel and all(4 <= int(b["index"][0]) < 8 for b in novel)
    for b in batches:
        assert b["rays_o"].shape == b["rays_d"].shape == (1, 16, 16, 3) and b["height"] == b["width"] == 16
        if "measurement" in b:
            i = int(b["index"][0])
            assert int(b["data_index"][0]) == i and torch.equal(b["measurement"][0], v.measurements[i])
            assert torch.equal(b["gt_rgb"][0], clean[i])
    # batches depend on the step only (so a resumed run gets the same ones)
    again = train.batch_at(17)
    assert all(torch.equal(again[k], batches[17][k]) for k in again if torch.is_tensor(again[k]))


def test_procedural_dataroot_measures_the_scene_here_and_keeps_its_clean_views(ts, tmp_path):
    blur_noise = {"type": "compose", "ops": [{"type": "blur", "kernel_size": 5, "sigma": 10.0}, {"type": "noise", "sigma": 0.05}]}
    dm = make_dm(ts, dataroot="procedural", procedural_size=16, ring_views=4, caption=CAPTION, operator=blur_noise, seed=3)
    v = dm.views
    clean = procedural.scene_views(16, RingSpec(n_views=4)).images.permute(0, 2, 3, 1)  # threestudio's layout
    assert torch.equal(v.gt, clean) and torch.allclose(v.c2w, cameras.ring_c2w(4, 30.0, 1.5))
    assert (v.height, v.width) == (16, 16) and v.measurements.shape == (4, 16, 16, 3)
    # y = A(clean) with the operator's noise drawn from data.seed: the same seed gives the same data
    y = build_operator(blur_noise).measure(clean.permute(0, 3, 1, 2), torch.Generator().manual_seed(3))
    assert torch.allclose(v.measurements, y.permute(0, 2, 3, 1).clamp(0, 1))
    batch = dm.val_dataloader().dataset[0]
    assert torch.equal(batch["gt_rgb"][0], clean[0]) and torch.equal(batch["measurement"][0], v.measurements[0])
    with pytest.raises(ValueError, match=r"data.gt_root=.* is not used with data.dataroot=procedural"):
        make_dm(ts, dataroot="procedural", gt_root=str(tmp_path), caption=CAPTION, operator=blur_noise)


def test_measurements_given_as_files_set_the_render_size(ts, tmp_path, scene):
    info = procedural.make_scene(str(tmp_path), size=16, ring=RingSpec(n_views=4), operator={"type": "downsample", "factor": 2})
    dm = make_dm(ts, dataroot=info["degraded"], gt_root=info["clean"], caption=CAPTION, ring_views=4,
                 operator=info["operator"])
    assert dm.views.measurements.shape == (4, 8, 8, 3) and (dm.views.height, dm.views.width) == (16, 16)
    full = views.load_views(info["clean"])
    assert abs(dm.views.focal - full.focal) < 1e-4  # intrinsics scaled to the render size
    with pytest.raises(ValueError, match="ground-truth images are 16x16 but renders are 32x32"):
        make_dm(ts, dataroot=info["clean"], gt_root=info["clean"], caption=CAPTION, operator={"type": "downsample", "factor": 2})
    with pytest.raises(ValueError, match=r"data.heldout_root: views are 8x8 .* but renders are 16x16"):
        make_dm(ts, dataroot=info["degraded"], heldout_root=info["degraded"], caption=CAPTION, ring_views=4,
                operator=info["operator"])


def test_data_module_errors_name_the_field_or_file(ts, scene, tmp_path):
    blur = scene["operator"]
    with pytest.raises(ValueError, match="data.caption is missing"):
        make_dm(ts, dataroot=scene["degraded"], caption=" ", operator=blur)
    with pytest.raises(ValueError, match=r"data.operator=.*unknown operator type 'motion'"):
        make_dm(ts, dataroot=scene["degraded"], caption=CAPTION, operator={"type": "motion"})
    with pytest.raises(ValueError, match=r"data.operator=\{\} is invalid"):
        make_dm(ts, dataroot=scene["degraded"], caption=CAPTION)
    with pytest.raises(ValueError, match="data.dataroot is missing"):
        make_dm(ts, caption=CAPTION, operator=blur)
    with pytest.raises(ValueError, match=r"holds 4 images but the camera ring has 16 cameras"):
        make_dm(ts, dataroot=scene["degraded"], caption=CAPTION, cameras="ring", operator=blur)
    os.makedirs(tmp_path / "v")
    for name in ("r_0.png", "r_1.png", "transforms.json"):
        os.symlink(os.path.join(scene["degraded"], name), tmp_path / "v" / name)
    with pytest.raises(FileNotFoundError, match=r"frames\[2\]\.file_path points to .*r_2\.png"):
        make_dm(ts, dataroot=str(tmp_path / "v"), caption=CAPTION, operator=blur)


def test_core_rays_are_threestudios_rays(ts):
    from threestudio.utils.ops import get_ray_directions, get_rays

    c2w = cameras.ring_c2w(3, 20.0, 2.0)
    o, d = cameras.rays(c2w, 12, 16, focal=13.0)
    ts_o, ts_d = get_rays(get_ray_directions(12, 16, 13.0)[None].expand(3, -1, -1, -1), c2w, keepdim=True)
    assert torch.allclose(o, ts_o) and torch.allclose(d, ts_d, atol=1e-6)
