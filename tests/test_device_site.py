"""scripts/device_site/sitecustomize.py, the start-up of the GPU check's processes: stand-ins only for what is
absent, OpenCV's mp4 writer in place of imageio-ffmpeg, nerfacc's packed scans through PyTorch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from .conftest import REPO

SITE = REPO / "scripts" / "device_site"


def run_with_site(code: str, **env) -> dict:
    """``code`` in a fresh interpreter with the check's start-up on its path; its last line read as JSON."""
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]), **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_stand_ins_serve_only_what_no_package_provides():
    import importlib.metadata

    def installed(dist):  # asked of the installed distributions: sys.modules may hold the CPU back end's stand-ins
        try:
            return bool(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            return False

    absent = [n for n in ("nvdiffrast",) if not installed(n)]  # the light ones of each kind
    present = [n for n, dist in (("IPython", "ipython"),) if installed(dist)]
    if not absent or not present:
        pytest.skip("needs nvdiffrast absent and IPython installed here")
    got = run_with_site(
        "import importlib, json, sys\n"
        f"mods = {{n: importlib.import_module(n) for n in {absent + present!r}}}\n"
        "served = lambda m: bool(getattr(m, 'STAND_IN', False) or getattr(m, 'STUB', False))\n"
        "print(json.dumps({n: served(m) for n, m in mods.items()}))"
    )
    assert got == {**{n: True for n in absent}, **{n: False for n in present}}


def test_mp4_frames_written_by_opencv_read_back(tmp_path):
    """Without imageio-ffmpeg, imageio.mimsave of an .mp4 writes it through cv2: every frame, its size, its
    colour (RGB in, as imageio takes it; mp4v is lossy, so within a few levels)."""
    import cv2

    frames = [np.zeros((32, 48, 3), np.uint8) + np.array([200, 40, 10 * i], np.uint8) for i in range(12)]
    np.save(tmp_path / "frames.npy", np.stack(frames))
    run_with_site(
        "import json, numpy as np, imageio, sitecustomize\n"
        "sitecustomize.cv2_mp4()  # what it does at start-up where imageio-ffmpeg is absent\n"
        f"imageio.mimsave({str(tmp_path / 'v.mp4')!r}, list(np.load({str(tmp_path / 'frames.npy')!r})), fps=10)\n"
        "print(json.dumps({}))"
    )
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    read = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        read.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    assert len(read) == len(frames) and read[0].shape == (32, 48, 3)
    for a, b in zip(read, frames):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 6


def test_nerfacc_packed_scans_through_pytorch_equal_per_ray_scans():
    """With DREAMSAMPLER_NERFACC_TORCH=1, nerfacc's packed scans (the ones its CUDA kernels compute) are per-ray
    cumulative sums and products, computed here ray by ray."""
    x = torch.rand(9, generator=torch.Generator().manual_seed(0))
    packed = [[0, 4], [4, 0], [4, 5]]  # a ray of 4 samples, an empty ray, a ray of 5
    got = run_with_site(
        "import json, torch, nerfacc\n"
        f"x = torch.tensor({x.tolist()}); p = torch.tensor({packed}, dtype=torch.int32)\n"
        "print(json.dumps({n: getattr(nerfacc, n)(x, p).tolist() for n in "
        "('inclusive_sum', 'exclusive_sum', 'inclusive_prod', 'exclusive_prod')} | "
        "{'torch_paths': nerfacc.exclusive_sum.torch_paths}))",
        DREAMSAMPLER_NERFACC_TORCH="1",
    )
    assert got.pop("torch_paths") is True
    rays = [x[s:s + n] for s, n in packed]
    expected = {
        "inclusive_sum": torch.cat([r.cumsum(0) for r in rays]),
        "exclusive_sum": torch.cat([r.cumsum(0) - r for r in rays]),
        "inclusive_prod": torch.cat([r.cumprod(0) for r in rays]),
        "exclusive_prod": torch.cat([torch.cat([r.new_ones(1), r.cumprod(0)[:-1]]) if len(r) else r for r in rays]),
    }
    for name, value in expected.items():
        torch.testing.assert_close(torch.tensor(got[name]), value, rtol=1e-6, atol=1e-6, msg=name)
