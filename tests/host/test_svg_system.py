"""The shipped SVG-restoration configs run in real threestudio (launch.py through run_threestudio.py,
CPU, tiny pipeline, 3 steps) and leave the outputs a user looks at: the SVG, its PNG renders next to
the measurement, the optimisation strip and animation, the metrics."""
import glob
import io
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ..conftest import REPO
from .runner import RUN

pytestmark = pytest.mark.threestudio

SIZE, PATHS, STEPS = 64, 16, 3
# the tiny tokenizer is character-level (77 tokens): the paper's suffix would not fit, a short one does
SUFFIX = ", icon"


def launch(config, tiny_sd, out_dir, *overrides):
    cmd = [
        sys.executable, *RUN, "--config", str(REPO / "configs" / config), "--train", "--cpu",
        f"exp_root_dir={out_dir}", f"trainer.max_steps={STEPS}", "trainer.val_check_interval=2",
        f"system.canvas_size={SIZE}", f"system.num_paths={PATHS}", "system.snapshot_every=1",
        f"system.guidance.pretrained_model_name_or_path={tiny_sd}",
        f"system.prompt_processor.pretrained_model_name_or_path={tiny_sd}", "system.prompt_processor.spawn=false",
        f"system.prompt_suffix='{SUFFIX}'", *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def save_dir(out_dir):
    (path,) = glob.glob(os.path.join(out_dir, "*", "*", "save"))
    return path


def read_png(path):
    import imageio.v3 as iio

    return iio.imread(path)


@pytest.mark.parametrize(
    "config, prompt",
    [("dreamsampler-svg-deblur.yaml", "a cup of coffee"), ("dreamsampler-svg-sr.yaml", "a cat"),
     ("dreamsampler-svg-deblur-no-sds.yaml", "a cup of coffee")],
)
def test_config_runs_and_writes_outputs(config, prompt, tiny_sd, tmp_path):
    run = launch(config, tiny_sd, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    assert f"Using prompt [{prompt}{SUFFIX}]" in run.stdout + run.stderr
    save = save_dir(tmp_path)

    root = ET.parse(os.path.join(save, "final.svg")).getroot()
    assert root.get("version") == "1.1" and len(root.findall("{http://www.w3.org/2000/svg}path")) == PATHS
    assert "nan" not in open(os.path.join(save, "final.svg")).read().lower()

    final = read_png(os.path.join(save, "final.png"))
    assert final.shape == (SIZE, SIZE, 3) and final.std() > 5  # paths visible, not a blank or black image
    panels = read_png(os.path.join(save, "final-measurement.png"))
    assert panels.shape == (SIZE, 4 * SIZE, 3)  # y | A(g) | g | clean
    assert np.array_equal(panels[:, 2 * SIZE : 3 * SIZE], final)
    assert all(panels[:, k * SIZE : (k + 1) * SIZE].std() > 1 for k in range(4))
    strip = read_png(os.path.join(save, "progress-strip.png"))
    assert strip.shape == (SIZE, STEPS * SIZE, 3)
    assert os.path.getsize(os.path.join(save, "progress.mp4")) > 0
    assert sorted(os.listdir(os.path.join(save, "progress"))) == [f"{k:06d}.png" for k in range(STEPS)]
    assert os.path.exists(os.path.join(save, "it2-val.png"))

    metrics = json.load(open(os.path.join(save, "metrics.json")))
    assert metrics["step"] == STEPS and math.isfinite(metrics["psnr_measurement"]) and math.isfinite(metrics["psnr_target"])

    # the SVG file itself, rendered by an independent renderer, is the image we saved
    resvg_py = pytest.importorskip("resvg_py")
    ref = read_png(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_path=os.path.join(save, "final.svg")))))[..., :3]
    mse = ((ref.astype(float) - final.astype(float)) ** 2).mean() / 255.0**2
    assert 10 * math.log10(1 / mse) > 30.0

    log = open(glob.glob(os.path.join(save, "..", "csv_logs", "*", "metrics.csv"))[0]).read()
    assert "train/loss_dc" in log and "train/gamma" in log
    assert ("train/loss_sds" in log) == ("no-sds" not in config)


def test_measurement_from_file_and_size_check(tiny_sd, tmp_path):
    import imageio.v3 as iio

    y = np.full((SIZE // 8, SIZE // 8, 3), 200, np.uint8)
    y[2:6, 2:6] = (30, 90, 200)
    iio.imwrite(tmp_path / "y.png", y)
    run = launch("dreamsampler-svg-sr.yaml", tiny_sd, tmp_path / "ok", f"system.measurement={tmp_path / 'y.png'}")
    assert run.returncode == 0, run.stderr[-4000:]
    save = save_dir(tmp_path / "ok")
    panels = read_png(os.path.join(save, "final-measurement.png"))
    assert panels.shape == (SIZE, 3 * SIZE, 3)  # y | A(g) | g: no clean image is known
    assert np.array_equal(panels[::8, :SIZE:8], y)  # y is the file's, upsampled x8 (nearest)
    metrics = json.load(open(os.path.join(save, "metrics.json")))
    assert "psnr_target" not in metrics and metrics["measurement"].endswith("y.png")

    iio.imwrite(tmp_path / "bad.png", np.zeros((16, 16, 3), np.uint8))
    run = launch("dreamsampler-svg-sr.yaml", tiny_sd, tmp_path / "bad", f"system.measurement={tmp_path / 'bad.png'}")
    assert run.returncode != 0 and "measurement size 16x16 does not match the operator's output size 8x8" in run.stderr
