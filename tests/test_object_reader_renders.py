"""The world's object reader on the world's own renders of every primitive, seen as the quality benchmark
sees a text-to-NeRF run: threestudio's test orbit of the text-to-NeRF config (``scenes.eval_orbit_cameras``),
rendered at the benchmark's 32 px and brought to 64 px as ``benchmarks/quality.py`` brings the saved views
(``scenes.render_resized``); held-out seeds (the eval split)."""
import importlib.util
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
import yaml

from dreamsampler.image_io import to_uint8
from dreamsampler.world.cameras import ORBIT_DISTANCE, ORBIT_ELEVATION, ORBIT_FOVY
from dreamsampler.world.evaluator import orbit_objects, orbit_reader_accuracy
from dreamsampler.world.palette import COLOUR_NAMES, OBJECT_SHAPES
from dreamsampler.world.scenes import eval_orbit_cameras, render_cameras, render_resized

REPO = Path(__file__).resolve().parents[1]


def quality():
    """``benchmarks/quality.py`` as a module (shared with the other tests that load it)."""
    if "quality" not in sys.modules:
        spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
        sys.modules["quality"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
        spec.loader.exec_module(sys.modules["quality"])
    return sys.modules["quality"]


def test_orbit_cameras_are_the_text_to_nerf_config_s_test_views():
    data = yaml.safe_load((REPO / "configs" / "dreamsampler-text-to-nerf.yaml").read_text())["data"]
    assert data["eval_camera_distance"] == ORBIT_DISTANCE
    assert data["eval_fovy_deg"] == ORBIT_FOVY
    assert "eval_elevation_deg" not in data and ORBIT_ELEVATION == 15.0  # threestudio's default (host test)
    assert "data.n_test_views=8" in quality().text_to_nerf.T2N_SIZE and "data.eval_width=32" in quality().text_to_nerf.T2N_SIZE
    cams = eval_orbit_cameras(8)
    assert [round(c.azimuth, 3) for c in cams] == [round(360 * k / 7, 3) for k in range(8)]  # linspace(0, 360, 8)
    assert {(c.elevation, c.distance, c.fovy) for c in cams} == {(ORBIT_ELEVATION, ORBIT_DISTANCE, ORBIT_FOVY)}
    assert [c.azimuth for c in eval_orbit_cameras(4, "val")] == [0.0, 90.0, 180.0, 270.0]


def test_render_resized_is_the_benchmark_s_path_of_a_saved_view(tmp_path):
    """A 32 px render saved as threestudio saves a test view (rgb | normal | opacity) and read back by the
    benchmark's ``render_views`` is ``render_resized`` exactly."""
    attrs = orbit_objects(1)[3]
    cams = eval_orbit_cameras(8)[:2]
    views, _ = render_cameras(attrs, cams, 32)
    paths = []
    for k, v in enumerate(views):
        paths.append(tmp_path / f"{k}.png")
        iio.imwrite(paths[-1], to_uint8(torch.cat([v, torch.zeros_like(v), torch.ones_like(v)], -1)))
    assert torch.equal(quality().text_to_nerf.render_views(paths), render_resized(attrs, cams, 32))


def test_object_reader_on_held_out_renders_at_the_benchmark_s_views_and_size():
    """Every shape in every colour, two held-out objects each, the 8 test views: 320 renders at 32 px -> 64,
    read right at least 95% of the time for each attribute, and so for each true shape and each true colour
    (the classifier trained on the world's cameras at 64 px alone read 90% of these cylinders, 87.5% of the
    green objects' shapes)."""
    acc = orbit_reader_accuracy(draws=2, size=32)
    assert acc["images"] == 2 * len(OBJECT_SHAPES) * len(COLOUR_NAMES) * 8
    assert acc["colour"] >= 0.95 and acc["shape"] >= 0.95, acc
    for group in ("by_shape", "by_colour"):
        assert all(min(v.values()) >= 0.95 for v in acc[group].values()), acc[group]


@pytest.mark.parametrize("background", [0.9, (0.89, 0.88, 0.87)])
def test_object_reader_on_the_light_grey_background_of_the_text_to_nerf_renders(background):
    """The runs' learned background (``neural-environment-map-background``) comes out light grey, not the
    world's white: the reader still reads (trained on white alone it read nearly every object a black cube)."""
    acc = orbit_reader_accuracy(draws=1, size=32, background=background)
    assert acc["colour"] >= 0.95 and acc["shape"] >= 0.95, acc
