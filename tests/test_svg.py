"""SVG helpers: the paper's initialisation, L_xing, the learning-rate schedule, SVG 1.1 export."""
import math
import xml.etree.ElementTree as ET

import pytest
import torch

from dreamsampler.vector.svg import (
    ICON_SUFFIX,
    VectorScene,
    init_scene,
    load_image,
    point_lr,
    save_svg,
    shapes_scene,
    xing_loss,
)

SVG_NS = "{http://www.w3.org/2000/svg}"


def test_init_scene_follows_the_paper():
    s = init_scene(500, 120, 200, num_segments=4, radius=20.0, generator=torch.Generator().manual_seed(0))
    assert s.points.shape == (500, 12, 2) and s.colors.shape == (500, 3) and s.opacity.shape == (500,)
    centre = s.points.mean(1, keepdim=True)
    torch.testing.assert_close((s.points - centre).norm(dim=-1), torch.full((500, 12), 20.0), rtol=0, atol=1e-4)
    assert (centre[..., 0] >= 0).all() and (centre[..., 0] <= 200).all() and (centre[..., 1] <= 120).all()
    assert 0.7 <= float(s.opacity.min()) and float(s.opacity.max()) <= 1.0 and float(s.opacity.std()) > 0.05
    assert 0.0 <= float(s.colors.min()) and float(s.colors.max()) <= 1.0
    assert ICON_SUFFIX == ", minimal flat 2d vector icon. lineal color. on a white background. trending on artstation."


def test_xing_loss_is_zero_on_convex_paths_and_positive_on_folds():
    circle = init_scene(3, 64, 64, radius=10.0).points
    assert float(xing_loss(circle)) == 0.0
    # one segment whose control polygon folds: l1 = (1, 0), l2 = (0, 1) turns left, l3 = (-1, -1) turns right
    fold = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [-1.0, 0.5], [-0.5, -1.0]]], requires_grad=True)
    loss = xing_loss(fold)
    # segment 0: sin(l1, l3) = cross((1,0), (-1,-1)) / sqrt(2) = -1/sqrt(2) -> relu(1/sqrt(2)); segment 1 by hand:
    l1, l2, l3 = torch.tensor([-1.0, 0.5]), torch.tensor([0.5, -1.5]), torch.tensor([0.5, 1.0])
    sine = lambda u, v: float(u[0] * v[1] - u[1] * v[0]) / float(u.norm() * v.norm())
    seg1 = max(-sine(l1, l3), 0.0) if sine(l1, l2) >= 0 else max(sine(l1, l3), 0.0)
    assert float(loss.detach()) == pytest.approx((1 / math.sqrt(2) + seg1) / 2, rel=1e-5)
    loss.backward()
    assert torch.isfinite(fold.grad).all() and fold.grad.abs().sum() > 0


def test_xing_loss_finite_with_coincident_points():
    pts = torch.zeros(2, 6, 2, requires_grad=True)
    xing_loss(pts).backward()
    assert torch.isfinite(pts.grad).all()


def test_point_learning_rate_schedule():
    """0.02 -> 0.2 linearly over 500 steps, then cosine decay to 0.05 at the end (supp. sec. 2.1)."""
    assert point_lr(0, 1000) == pytest.approx(0.02)
    assert point_lr(250, 1000) == pytest.approx(0.11)
    assert point_lr(500, 1000) == pytest.approx(0.2)
    assert point_lr(750, 1000) == pytest.approx(0.125)
    assert point_lr(1000, 1000) == pytest.approx(0.05)
    lrs = [point_lr(s, 1000) for s in range(1001)]
    assert all(b >= a for a, b in zip(lrs[:500], lrs[1:501])) and all(b <= a for a, b in zip(lrs[500:], lrs[501:]))
    assert point_lr(3, 4) == pytest.approx(0.02 + 0.18 * 3 / 500)  # short runs stay in the warm-up


def test_svg_export_is_valid_svg_11(tmp_path):
    s = init_scene(5, 40, 60, num_segments=3)
    s.colors[0] = torch.tensor([1.5, -0.2, 0.5])  # clamped like a viewer would
    path = save_svg(str(tmp_path / "a.svg"), s, 40, 60)
    root = ET.parse(path).getroot()
    assert root.tag == SVG_NS + "svg" and root.get("version") == "1.1"
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == ("60", "40", "0 0 60 40")
    paths = root.findall(SVG_NS + "path")
    assert len(paths) == 5 and root.find(SVG_NS + "rect").get("fill") == "#ffffff"
    d = paths[0].get("d").split()
    assert d[0] == "M" and d[-1] == "Z" and d.count("C") == 3
    assert float(d[1]) == pytest.approx(float(s.points[0, 0, 0]), abs=1e-3)
    assert paths[0].get("fill") == "#ff0080" and paths[0].get("fill-rule") == "nonzero"
    assert float(paths[3].get("fill-opacity")) == pytest.approx(float(s.opacity[3]), abs=1e-4)
    assert "nan" not in open(path).read().lower()


@pytest.mark.parametrize("field", ["points", "colors", "opacity", "background"])
def test_svg_export_refuses_non_finite_values(tmp_path, field):
    s = init_scene(3, 32, 32)
    getattr(s, field).view(-1)[1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        save_svg(str(tmp_path / "bad.svg"), s, 32, 32)
    assert not (tmp_path / "bad.svg").exists()


def test_load_image_sources(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    shapes = load_image("shapes", 64, 64)
    assert shapes.shape == (3, 64, 64) and float(shapes[:, 0, 0].min()) == 1.0  # white corner
    assert float(shapes[0].mean()) < 0.95  # coloured shapes present
    photo = load_image("skimage:camera", 48, 80)  # grey, cropped to 3:5
    assert photo.shape == (3, 48, 80) and torch.equal(photo[0], photo[2]) and 0 <= float(photo.min()) < float(photo.max()) <= 1
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top half opaque red, bottom transparent -> white
    iio.imwrite(tmp_path / "x.png", rgba)
    img = load_image(str(tmp_path / "x.png"), 10, 10)
    torch.testing.assert_close(img[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(img[:, 9, 0], torch.tensor([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="no picture"):
        load_image("skimage:nothing", 8, 8)
    with pytest.raises(ValueError, match="cannot read"):
        load_image(str(tmp_path / "missing.png"), 8, 8)


def test_shapes_scene_is_a_valid_scene():
    s = shapes_scene(64, 64)
    assert isinstance(s, VectorScene) and s.points.shape == (4, 12, 2)
    assert float(xing_loss(s.points)) < 1e-6  # straight sides: collinear legs, sine ~ 0
