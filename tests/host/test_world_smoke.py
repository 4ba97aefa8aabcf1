"""``--smoke N`` runs a shipped config on the trained miniature world model with the config's world inputs
(``# smoke-world:`` lines): a new user's first CPU run, and its picture means what the prompt says."""
import subprocess
import sys

import pytest
import torch

from dreamsampler.image_io import read_image, rect_mask
from dreamsampler.metrics import masked_psnr
from dreamsampler.world.evaluator import Reader

from .runner import REPO, RUN, trial_dir

pytestmark = pytest.mark.threestudio


def test_smoke_edit_on_the_world_model_turns_the_red_circle_blue(tmp_path):
    cmd = [sys.executable, *RUN, "--config", str(REPO / "configs" / "dreamsampler-edit.yaml"), "--train", "--cpu",
           "--smoke", "200", f"exp_root_dir={tmp_path / 'outputs'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "miniature world model" in proc.stdout + proc.stderr
    save = trial_dir(tmp_path) / "save"
    source, result = read_image(str(save / "source.png"), "source")[None], read_image(str(save / "result.png"), "result")[None]
    assert torch.equal(source, torch.round(read_image("world:124", "icon")[None] * 255) / 255)  # the world input
    (read,) = Reader()(result, "icon")
    assert read["count"] == 1 and read["colours"] == ["blue"] and read["shapes"] == ["circle"], read
    keep = 1 - rect_mask([0.08, 0.35, 0.54, 0.81], 64, 64, "rect")[None]  # the circle's box
    assert masked_psnr(result, source, keep) > 30  # the white around it stays white


def smoke(tmp_path, config, steps, overrides=()):
    """``run_threestudio --cpu --smoke <steps>`` of a shipped config as the README gives it; its ``save/`` folder."""
    cmd = [sys.executable, *RUN, "--config", str(REPO / "configs" / f"{config}.yaml"), "--train", "--cpu",
           "--smoke", str(steps), f"exp_root_dir={tmp_path / 'outputs'}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return trial_dir(tmp_path) / "save"


def test_smoke_text_to_nerf_on_the_world_model_draws_the_prompted_colour(tmp_path):
    """README: `--smoke 200` of the text-to-NeRF config shows a red sphere; read in the 8 test views by the
    world's object reader (the panel of each test image that is the render)."""
    save = smoke(tmp_path, "dreamsampler-text-to-nerf", 200)
    grids = sorted(save.glob("it200-test/*.png"))
    assert len(grids) == 8
    views = []
    for path in grids:
        grid = read_image(str(path), "test view")
        h = grid.shape[-2]
        views.append(torch.nn.functional.interpolate(grid[None, :, :, :h], size=64, mode="bilinear", align_corners=False))
    reads = Reader()(torch.cat(views).clamp(0, 1), "object")
    assert sum(r["colours"][0] == "red" for r in reads) > len(reads) / 2, [r["colours"] for r in reads]


def test_smoke_degraded_nerf_on_a_world_object_beats_its_blurred_views(tmp_path):
    """README: `--smoke 200` of the degraded-view config reconstructs a held-out world object (a red sphere) from
    16 blurred views with the smoke file's prior (consistent targets made 4 times, each at the schedule's timestep
    of its step); its renders are closer to the clean views than the blurred inputs are (PSNR)."""
    import json

    save = smoke(tmp_path, "dreamsampler-degraded-nerf", 200)
    metrics = json.loads((save / "metrics.json").read_text())
    assert metrics["n_views"] == 16 and metrics["heldout"]["n_views"] == 8
    assert metrics["renders"]["psnr"] > metrics["degraded_input"]["psnr"], metrics
    rounds = json.loads((save / "view-targets.json").read_text())["rounds"]
    assert [r["step"] for r in rounds] == [100, 125, 150, 175] and all(r["unet_evals"] == 32 for r in rounds)
    assert [r["timestep"] for r in rounds] == sorted((r["timestep"] for r in rounds), reverse=True)
