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
