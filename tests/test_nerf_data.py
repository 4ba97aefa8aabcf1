"""Core pieces of the NeRF systems: cameras, view folders (and their input errors), the procedural
scene, eq. 18's data term, image metrics."""
import json
import math
import os

import numpy as np
import pytest
import torch

from dreamsampler import metrics
from dreamsampler.inverse import data_consistency as inverse
from dreamsampler.multiview import cameras, procedural, views
from dreamsampler.multiview.views import RingSpec


# ------------------------------------------------------------------ cameras
def test_ring_cameras_look_at_the_origin_from_the_given_elevation_and_azimuths():
    c2w = cameras.ring_c2w(16, 30.0, 1.5)
    el, az, r = cameras.spherical(c2w)
    assert torch.allclose(el, torch.full((16,), 30.0), atol=1e-4)
    assert torch.allclose(r, torch.full((16,), 1.5), atol=1e-5)
    expected = (torch.arange(16) * 22.5 + 180) % 360 - 180
    assert torch.allclose((az + 180) % 360 - 180, expected, atol=1e-3)
    # -z of the camera (its viewing direction) points at the origin; the rotation is orthonormal
    view_dir = -c2w[:, :3, 2]
    assert torch.allclose(view_dir, -c2w[:, :3, 3] / 1.5, atol=1e-5)
    R = c2w[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16), atol=1e-5)


def test_rays_through_the_image_centre_hit_the_look_at_point():
    c2w = cameras.ring_c2w(4, 10.0, 2.0)
    o, d = cameras.rays(c2w, 8, 8, focal=10.0)
    centre = d[:, 3:5, 3:5].mean(dim=(1, 2))
    assert torch.allclose(torch.nn.functional.normalize(centre, dim=-1), -c2w[:, :3, 2], atol=1e-5)
    assert torch.allclose(d.norm(dim=-1), torch.ones(4, 8, 8))
    assert torch.allclose(o, c2w[:, None, None, :3, 3].expand_as(o))


def test_interpolated_camera_between_ring_neighbours_is_the_ring_camera_in_between():
    ring = cameras.ring_c2w(16, 30.0, 1.5)
    fine = cameras.ring_c2w(32, 30.0, 1.5)
    mid = cameras.interpolate_c2w(ring[3], ring[4], 0.5)
    assert torch.allclose(mid, fine[7], atol=1e-5)
    assert torch.allclose(cameras.interpolate_c2w(ring[3], ring[4], 0.0), ring[3], atol=1e-6)
    assert torch.allclose(cameras.interpolate_c2w(ring[3], ring[4], 1.0), ring[4], atol=1e-5)


def test_novel_views_of_a_ring_are_the_midpoints_of_neighbouring_pairs():
    ring = cameras.ring_c2w(16, 30.0, 1.5)
    assert cameras.neighbour_pairs(ring) == sorted({tuple(sorted((i, (i + 1) % 16))) for i in range(16)})
    novel = cameras.novel_c2w(ring, per_pair=1)
    assert novel.shape == (16, 4, 4)
    el, az, r = cameras.spherical(novel)
    assert torch.allclose(torch.sort(az % 360).values, 11.25 + 22.5 * torch.arange(16.0), atol=1e-3)
    assert torch.allclose(el, torch.full((16,), 30.0), atol=1e-4) and torch.allclose(r, torch.full((16,), 1.5))


# ---------------------------------------------------------- procedural scene
def test_box_rays_hit_the_analytic_faces():
    o = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [2.0, 2.0, 0.0], [0.0, -2.0, 0.0]])
    d = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    c = procedural.render_box(o, d, half_size=0.35, checks=4, background=(1.0, 1.0, 1.0))
    F = procedural.FACE_COLOURS
    # the face centre lies on a corner of four checker cells: cell (2, 2) -> even -> full colour
    assert torch.allclose(c[0], F[0]) and torch.allclose(c[1], F[4]) and torch.allclose(c[3], F[3])
    assert torch.allclose(c[2], torch.ones(3))  # misses


def test_box_renders_agree_with_brute_force_ray_marching():
    """The analytic slab intersection against marching each ray in tiny steps for the first point inside."""
    c2w = cameras.ring_c2w(3, 30.0, 1.5)
    o, d = cameras.rays(c2w, 12, 12, cameras.focal_from_fov(math.radians(49.1), 12))
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    t = torch.linspace(0, 3, 6001)
    p = o[:, None] + t[None, :, None] * d[:, None]
    inside = (p.abs() <= 0.35).all(-1)
    hit = inside.any(-1)
    first = p[torch.arange(p.shape[0]), inside.float().argmax(-1)]
    colour = procedural.render_box(o, d, half_size=0.35, background=(1.0, 1.0, 1.0))
    marched = procedural.render_box(first - 1e-3 * d, d, half_size=0.35, background=(1.0, 1.0, 1.0))
    assert hit.sum() > 20 and (~hit).sum() > 20
    assert torch.equal(colour.ne(1.0).any(-1), hit)
    agree = (colour[hit] - marched[hit]).abs().max(-1).values < 1e-6
    assert agree.float().mean() > 0.97  # all but rays grazing a checker or face edge


def test_procedural_scene_round_trips_through_the_view_loader(tmp_path):
    info = procedural.make_scene(str(tmp_path), size=24, ring=RingSpec(n_views=8), operator={"type": "identity"})
    clean = views.load_views(info["clean"], "transforms")
    ring = views.load_views(info["clean"], "ring", RingSpec(n_views=8))
    direct = procedural.render_views(cameras.ring_c2w(8, 30.0, 1.5), 24, math.radians(49.1))
    assert clean.images.shape == (8, 3, 24, 24) and clean.n == 8
    assert (clean.images - direct).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNGs
    assert torch.allclose(clean.c2w, ring.c2w, atol=1e-6) and abs(clean.focal - ring.focal) < 1e-4
    # images look like the scene: white background, saturated faces
    assert 0.2 < (clean.images.min(1).values > 0.99).float().mean() < 0.9
    assert json.load(open(os.path.join(tmp_path, "scene.json")))["caption"] == procedural.CAPTION


# ------------------------------------------------------ view folder errors
@pytest.fixture
def scene(tmp_path):
    images = procedural.render_views(cameras.ring_c2w(4, 30.0, 1.5), 16, 0.8, supersample=1)
    views.write_views(str(tmp_path / "v"), images, cameras.ring_c2w(4, 30.0, 1.5), 0.8)
    return tmp_path / "v"


def _edit_transforms(root, edit):
    path = root / "transforms.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_missing_image_names_the_file(scene):
    os.remove(scene / "r_2.png")
    with pytest.raises(FileNotFoundError, match=r"frames\[2\]\.file_path .*r_2\.png"):
        views.load_views(str(scene))


def test_missing_pose_names_the_frame(scene):
    _edit_transforms(scene, lambda m: m["frames"][1].pop("transform_matrix"))
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[1\] has no 'transform_matrix'"):
        views.load_views(str(scene))


def test_missing_fov_and_frames_name_the_field(scene):
    _edit_transforms(scene, lambda m: m.pop("camera_angle_x"))
    with pytest.raises(ValueError, match="camera_angle_x"):
        views.load_views(str(scene))
    _edit_transforms(scene, lambda m: m.pop("frames"))
    with pytest.raises(ValueError, match="'frames'"):
        views.load_views(str(scene))


def test_missing_transforms_when_poses_are_required(scene):
    os.remove(scene / "transforms.json")
    with pytest.raises(FileNotFoundError, match="missing camera poses: .*transforms.json"):
        views.load_views(str(scene), "transforms")


def test_image_count_not_matching_the_ring(scene):
    os.remove(scene / "transforms.json")
    with pytest.raises(ValueError, match=r"holds 4 images but the camera ring has 16 cameras \(data.ring_views\)"):
        views.load_views(str(scene))
    assert views.load_views(str(scene), ring=RingSpec(n_views=4)).n == 4


def test_images_of_different_sizes_name_the_file(scene):
    views.write_image(str(scene / "r_3.png"), torch.zeros(3, 20, 16))
    with pytest.raises(ValueError, match=r"r_3\.png is 16x20 but .*r_0\.png is 16x16"):
        views.load_views(str(scene))


def test_empty_folder_and_unknown_camera_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no images"):
        views.load_views(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        views.load_views(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="data.cameras='sphere' is unknown"):
        views.load_views(str(tmp_path), "sphere")


def test_ground_truth_must_match_the_data_views(scene, tmp_path):
    data = views.load_views(str(scene))
    views.check_ground_truth(data, data, (16, 16))
    with pytest.raises(ValueError, match="renders are 32x32"):
        views.check_ground_truth(data, data, (32, 32))
    fewer = views.Views(data.images[:3], data.c2w[:3], data.focal, data.files[:3])
    with pytest.raises(ValueError, match="ground-truth folder has 3 images but the data folder has 4 cameras"):
        views.check_ground_truth(data, fewer, (16, 16))


def test_rgba_images_are_composited_over_the_background(tmp_path):
    import imageio.v3 as iio

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, ..., 3] = 255  # top half opaque red, bottom half transparent
    iio.imwrite(tmp_path / "a.png", rgba)
    img = views.read_image(str(tmp_path / "a.png"), background=(0.0, 0.0, 1.0))
    assert img.shape == (3, 4, 4)
    assert torch.allclose(img[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(img[:, 3, 0], torch.tensor([0.0, 0.0, 1.0]))


# --------------------------------------------------------- eq. 18 and metrics
def test_data_term_gradient_is_the_adjoint_residual_and_eq18_weights():
    torch.manual_seed(0)
    A = lambda x: torch.nn.functional.avg_pool2d(x, 2)  # a linear A with adjoint: nearest upsample / 4
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    y = torch.rand(2, 3, 4, 4)
    inverse.data_consistency(y, A, x).backward()
    residual = A(x.detach()) - y
    adjoint = torch.nn.functional.interpolate(residual, scale_factor=2, mode="nearest") / 4
    assert torch.allclose(x.grad, adjoint / 2, atol=1e-6)
    with pytest.raises(ValueError, match="A\\(render\\) has shape"):
        inverse.data_consistency(torch.rand(2, 3, 8, 8), A, x)
    assert inverse.eq18_weights(0.25, 2.0, 4.0) == (1.5, 1.0)
    with pytest.raises(ValueError):
        inverse.eq18_weights(1.5, 1.0, 1.0)


def test_metrics_against_closed_forms_and_skimage():
    from skimage.metrics import structural_similarity

    torch.manual_seed(0)
    gt = torch.rand(2, 32, 32, 3)
    pred = (gt + 0.1).clamp(0, 1)
    pred[:, :, :, 0] = gt[:, :, :, 0]
    mse = ((pred - gt) ** 2).flatten(1).mean(-1)
    m = metrics.image_metrics(pred.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2))  # the core's [B, 3, H, W]
    assert torch.allclose(m["psnr"], -10 * torch.log10(mse), atol=1e-4)
    assert torch.allclose(metrics.ssim(gt.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2)), torch.ones(2), atol=1e-5)
    ref = structural_similarity(
        pred[0].numpy(), gt[0].numpy(), channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )
    assert abs(float(m["ssim"][0]) - ref) < 0.02
    assert "lpips" not in m


def test_lpips_is_skipped_with_one_warning_when_its_weights_are_absent(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with caplog.at_level("WARNING"):
        assert metrics.load_lpips() is None
    assert len(caplog.records) == 1 and "LPIPS skipped" in caplog.records[0].message
