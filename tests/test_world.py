"""The procedural world: determinism per seed, captions that match the ground truth, the reader."""
import math

import pytest
import torch

from dreamsampler.world import (
    SPLIT_OFFSETS,
    SPLIT_SIZE,
    WorldDataset,
    camera_to_world,
    icon_caption,
    object_caption,
    renderer_for,
    view_name,
    world_image,
)
from dreamsampler.world.cameras import camera_rays
from dreamsampler.world.evaluator import Reader, reader_accuracy


def test_same_seed_same_image_and_disjoint_splits():
    a, cap_a, attrs_a = world_image("train", 123)
    b, cap_b, attrs_b = world_image("train", 123)
    assert torch.equal(a, b) and cap_a == cap_b and attrs_a == attrs_b
    c, _, _ = world_image("eval", 123)
    assert not torch.equal(a, c)
    assert SPLIT_OFFSETS["eval"] >= SPLIT_OFFSETS["train"] + SPLIT_SIZE
    # a batch is the same images whatever the batch size
    x4, caps4, _ = WorldDataset("train", 4).batch(1)
    x2, caps2, _ = WorldDataset("train", 2).batch(3)
    assert torch.equal(x4[2:], x2) and caps4[2:] == caps2


def test_images_in_range_and_captions_match_attributes():
    for i in range(40):
        img, cap, attrs = world_image("train", i)
        assert img.shape == (3, 64, 64) and 0 <= img.min() and img.max() <= 1
        if attrs.domain == "icon":
            assert cap == icon_caption(attrs.colours, attrs.shapes)
            assert cap.count(" and ") == attrs.count - 1
            xs = [p[0] for p in attrs.positions]
            assert xs == sorted(xs)
        else:
            cam = attrs.camera
            assert cap == object_caption(attrs.colours[0], attrs.shapes[0], cam.elevation, cam.azimuth)
            assert cap.startswith(f"a {attrs.colours[0]} {attrs.shapes[0]}, ")
        d = attrs.to_dict()
        assert d["count"] == len(d["shapes"]) == len(d["colours"])


@pytest.mark.parametrize(
    "elevation,azimuth,view",
    [(30, 0, "front"), (30, 44.9, "front"), (30, 45, "side"), (30, -45, "side"), (30, 135, "side"),
     (30, 135.1, "back"), (30, -180, "back"), (30, 200, "back"), (61, 0, "overhead"), (60, 0, "front")],
)
def test_threestudio_view_rules(elevation, azimuth, view):
    assert view_name(elevation, azimuth) == view


def test_camera_convention_and_renderer():
    # azimuth 0, elevation 0: the camera sits on +x and looks back along -x
    from dreamsampler.world import Camera

    c2w = camera_to_world(Camera(0.0, 0.0, 2.0, 60.0))
    assert torch.allclose(c2w[:3, 3], torch.tensor([2.0, 0, 0]), atol=1e-6)
    o, d = camera_rays(c2w, 60.0, 8, 8)
    assert torch.allclose(d.mean((0, 1)) / d.mean((0, 1)).norm(), torch.tensor([-1.0, 0, 0]), atol=1e-5)
    _, _, attrs = world_image("eval", 1, "object")
    img = renderer_for(attrs)(c2w, 60.0, 32, 48)
    assert img.shape == (3, 32, 48)
    assert img[:, 16, 24].sum() < 2.9 and img[:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # object centred, white corner


def test_reader_on_held_out_icons():
    acc = reader_accuracy("icon", n=120)
    assert all(acc[k] >= 0.98 for k in ("colour", "shape", "count", "position", "size")), acc


def test_reader_on_warped_held_out_icons():
    """Shapes with a wobble of 0.75 px RMS (``evaluator.warp``) still read right: the template fit
    does not hinge on a perfect outline, as generated shapes never have one."""
    acc = reader_accuracy("icon", n=120, warp_px=0.75)
    assert all(acc[k] >= 0.98 for k in ("colour", "shape", "count")), acc


def test_reader_on_held_out_objects():
    acc = reader_accuracy("object", n=120)
    assert all(acc[k] >= 0.98 for k in ("colour", "shape", "count")), acc


def test_reader_reads_what_it_is_given():
    img, _, attrs = world_image("eval", 5, "icon")
    read = Reader()(img, "icon")[0]
    assert sorted(read["colours"]) == sorted(attrs.colours) and read["count"] == attrs.count
    assert all(math.isfinite(s) for s in read["sizes"])


def test_object_scene_folders_hold_the_renders_their_operator_and_unseen_cameras(tmp_path):
    """``world.scenes``: clean / degraded / held-out folders as the NeRF data module reads them."""
    from dreamsampler.inverse.operators import build_operator
    from dreamsampler.multiview.cameras import novel_c2w, spherical
    from dreamsampler.multiview.views import load_views
    from dreamsampler.world.objects import ObjectRenderer
    from dreamsampler.world.scenes import make_object_scene

    op = {"type": "downsample", "factor": 4}
    info = make_object_scene(str(tmp_path), seed=5, size=32, operator=op)
    clean, degraded, held = (load_views(info[k]) for k in ("clean", "degraded", "heldout"))
    assert clean.images.shape == (16, 3, 32, 32) and degraded.images.shape == (16, 3, 8, 8) and held.n == 8
    assert info["caption"] == f"a {info['colour']} {info['shape']}"
    render = ObjectRenderer(info["shape"], info["colour"], info["size"])
    for views in (clean, held):  # the PNGs are the analytic renders through their own cameras, to 8 bits
        fovy = math.degrees(2 * math.atan(0.5 * views.height / views.focal))
        for k in (0, views.n - 1):
            assert (views.images[k] - render(views.c2w[k], fovy, 32, 32)).abs().max() <= 0.5 / 255 + 1e-6
    y = build_operator(op)(clean.images).clamp(0, 1)  # y = A(clean), from the written clean views
    assert (degraded.images - y).abs().max() <= 1.5 / 255
    elevation, _, distance = spherical(clean.c2w)
    assert torch.allclose(elevation, torch.full((16,), 30.0), atol=1e-3)
    held_el, _, held_dist = spherical(held.c2w)
    assert sorted(set(round(float(e)) for e in held_el)) == [15, 45] and torch.allclose(held_dist, distance[:8])
    # no held-out camera is a data camera or one of the training's novel cameras
    trained = torch.cat([clean.c2w, novel_c2w(clean.c2w)])[:, :3, 3]
    assert torch.cdist(held.c2w[:, :3, 3], trained).min() > 0.1
