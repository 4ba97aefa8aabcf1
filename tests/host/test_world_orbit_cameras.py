"""The world's ``eval_orbit_cameras`` are threestudio's val / test cameras of the text-to-NeRF config at the
quality benchmark's settings (``T2N_SIZE``): the same c2w, field of view and ray directions, so the world's
renders through them are the views the benchmark scores."""
import importlib.util
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from dreamsampler.world import camera_to_world
from dreamsampler.world.cameras import camera_rays
from dreamsampler.world.scenes import eval_orbit_cameras

from .runner import REPO

pytestmark = pytest.mark.threestudio


def t2n_size():
    if "quality" not in sys.modules:
        spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
        sys.modules["quality"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["quality"])
    return sys.modules["quality"].text_to_nerf.T2N_SIZE


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_orbit_cameras_are_threestudio_s(ts, split, tmp_path):
    from threestudio.data.uncond import RandomCameraDataModuleConfig, RandomCameraDataset
    from threestudio.utils.config import load_config, parse_structured

    cfg = load_config(str(REPO / "configs" / "dreamsampler-text-to-nerf.yaml"),
                      cli_args=["system.prompt_processor.prompt=a red sphere", *t2n_size(), f"exp_root_dir={tmp_path}"])
    data = parse_structured(RandomCameraDataModuleConfig, cfg.data)
    ds = RandomCameraDataset(data, split)
    cams = eval_orbit_cameras(ds.n_views, split)
    assert len(cams) == ds.n_views == (data.n_val_views if split == "val" else data.n_test_views)
    size = data.eval_height
    for k, cam in enumerate(cams):
        c2w = camera_to_world(cam)
        assert torch.allclose(c2w, ds.c2w[k], atol=1e-5), (k, c2w, ds.c2w[k])
        assert math.isclose(cam.fovy, data.eval_fovy_deg) and math.isclose(cam.distance, data.eval_camera_distance)
        _, d = camera_rays(c2w, cam.fovy, size, data.eval_width)
        assert torch.allclose(d, F.normalize(ds.rays_d[k], dim=-1), atol=1e-5)
