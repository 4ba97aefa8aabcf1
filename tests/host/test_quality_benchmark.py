"""benchmarks/quality.py --quick in real threestudio (CPU): the shipped restoration config on the trained
mini model restores a held-out blurred icon better than the blurred input, and the table is written."""
import json
import math
import subprocess
import sys

import pytest

from .runner import REPO, assert_sane_image

pytestmark = pytest.mark.threestudio


def test_quick_quality_row(tmp_path):
    out = tmp_path / "quality"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = json.loads((out / "quality.json").read_text())["table"]
    rows = {r["id"]: r for r in table["restore-blur"]}
    assert set(rows) == {"degraded-input", "dreamsampler", "dps-only", "init-noise", "dc-only"}
    for r in rows.values():
        assert r["scenes"] == 1 and set(r) >= {"psnr", "ssim", "unet_evals"}
    ours, degraded = rows["dreamsampler"]["psnr"], rows["degraded-input"]["psnr"]
    assert math.isfinite(ours) and ours > degraded, (ours, degraded)
    md = (out / "quality.md").read_text()
    assert "| method | scenes | unet_evals | psnr | ssim |" in md and "| dreamsampler | 1 |" in md  # one icon: no _se
    assert_sane_image(out / "restore-blur.png")
    # a second call resumes: every run is found in the output folder, none is repeated
    again = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality.py"), "--quick", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "restore-blur/dreamsampler/0:" not in again.stdout
    assert json.loads((out / "quality.json").read_text())["table"] == table
