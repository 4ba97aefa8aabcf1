"""The PyTorch rasterizer against independent references: finite differences, exact areas (Green's
theorem), a supersampled matplotlib rasterization, and resvg rendering our exported SVG."""
import io
import math

import numpy as np
import pytest
import torch

from dreamsampler import metrics
from dreamsampler.vector.rasterizer import coverage_fragments, render
from dreamsampler.vector.svg import VectorScene, init_scene, to_svg

KAPPA = 4 * (math.sqrt(2) - 1) / 3  # cubic Bezier quarter circle


def kappa_circle(cx, cy, r, dtype=torch.float64):
    """The standard 4-segment Bezier circle (radius error < 0.03 %)."""
    k = KAPPA * r
    pts = [(r, 0), (r, k), (k, r), (0, r), (-k, r), (-r, k), (-r, 0), (-r, -k), (-k, -r), (0, -r), (k, -r), (r, -k)]
    return torch.tensor(pts, dtype=dtype) + torch.tensor([cx, cy], dtype=dtype)


def bezier_area(points):
    """Exact area of a closed cubic Bezier path: Green's theorem 1/2 oint (x dy - y dx), integrated
    with 4-point Gauss-Legendre per segment (exact for the degree-5 integrand)."""
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    nodes, weights = np.polynomial.legendre.leggauss(4)
    t = 0.5 * (nodes + 1)
    area = 0.0
    for k in range(0, n, 3):
        p0, p1, p2, p3 = p[k], p[k + 1], p[k + 2], p[(k + 3) % n]
        xy = ((1 - t) ** 3)[:, None] * p0 + (3 * (1 - t) ** 2 * t)[:, None] * p1 + (3 * (1 - t) * t**2)[:, None] * p2 + (t**3)[:, None] * p3
        d = (3 * (1 - t) ** 2)[:, None] * (p1 - p0) + (6 * (1 - t) * t)[:, None] * (p2 - p1) + (3 * t**2)[:, None] * (p3 - p2)
        area += 0.5 * np.sum(0.5 * weights * (xy[:, 0] * d[:, 1] - xy[:, 1] * d[:, 0]))
    return abs(area)


def random_scene(num_paths, height, width, jitter, seed, radius=6.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = init_scene(num_paths, height, width, num_segments=3, radius=radius, generator=g, dtype=dtype,
                   background=(0.2, 0.5, 0.9))
    s.points = s.points + jitter * torch.randn(s.points.shape, generator=g, dtype=dtype)
    return s


def psnr_db(a, b):
    """PSNR (dB) of two images, whatever their layout (the core's metrics.psnr on one flattened image)."""
    a, b = (torch.as_tensor(x, dtype=torch.float64).reshape(1, -1) for x in (a, b))
    return float(metrics.psnr(a, b)[0])


@pytest.mark.parametrize("name", ["points", "colors", "opacity", "background"])
def test_gradients_match_central_differences(name):
    s = random_scene(3, 20, 18, jitter=0.7, seed=1, radius=5.0)
    s.opacity = torch.tensor([0.6, 1.0, 0.85], dtype=torch.float64)  # includes a fully opaque path
    weights = torch.randn(20, 18, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    args = dict(points=s.points, colors=s.colors, opacity=s.opacity, background=s.background)

    def f(**kw):
        return (render(**{**args, **kw}, height=20, width=18, backend="torch") * weights).sum()

    x = args[name].clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(**{name: x}), x)
    h, fd = 1e-6, torch.zeros_like(x)
    for j in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=x.dtype)
        e[j] = h
        fd.view(-1)[j] = (f(**{name: x.detach() + e.view_as(x)}) - f(**{name: x.detach() - e.view_as(x)})) / (2 * h)
    assert fd.abs().max() > 1e-2, "degenerate case: the loss does not depend on " + name
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-6)


def ring(cx, cy, r, n=12, dtype=torch.float64):
    """The paper's (LIVE's) circle-like path: n control points evenly spaced on a circle."""
    angle = torch.arange(n, dtype=dtype) * (2 * math.pi / n)
    return r * torch.stack([angle.cos(), angle.sin()], -1) + torch.tensor([cx, cy], dtype=dtype)


@pytest.mark.parametrize("points", [kappa_circle(32.3, 30.7, 20.0), ring(31.6, 33.2, 20.0)], ids=["kappa", "ring"])
def test_coverage_matches_exact_area(points):
    """Coverage sums to the path's exact area within 0.5 % (default flattening tolerance 0.05 px, whose
    chords cut at most (2/3) tol * perimeter), and within 0.1 % with tolerance 0.002 px (there the pixel-grid sampling of the
    anti-aliasing ramp dominates)."""
    exact = bezier_area(points.numpy())
    for tol, rel in ((0.05, 5e-3), (0.002, 1e-3)):
        _, _, cov = coverage_fragments(points[None], 64, 64, tolerance=tol)
        assert abs(float(cov.sum()) - exact) / exact < rel, (tol, float(cov.sum()), exact)


def test_kappa_circle_area_is_pi_r_squared():
    _, _, cov = coverage_fragments(kappa_circle(32.3, 30.7, 20.0)[None], 64, 64, tolerance=0.002)
    assert abs(float(cov.sum()) / (math.pi * 400) - 1) < 1e-3


def supersampled_reference(s: VectorScene, height, width, n=8):
    """Box-filtered rasterization by matplotlib's point-in-path test at n x n samples per pixel."""
    from matplotlib.path import Path

    ys, xs = np.meshgrid(np.arange(height * n), np.arange(width * n), indexing="ij")
    samples = np.stack([(xs.ravel() + 0.5) / n, (ys.ravel() + 0.5) / n], -1)
    image = np.broadcast_to(s.background.numpy(), (height, width, 3)).copy()
    for p in range(s.points.shape[0]):
        pts = s.points[p].numpy()
        verts = np.concatenate([pts, pts[:1]])
        codes = [Path.MOVETO] + [Path.CURVE4] * (len(pts))
        inside = Path(verts, codes, closed=True).contains_points(samples).reshape(height, n, width, n).mean((1, 3))
        a = (float(s.opacity[p]) * inside)[..., None]
        image = a * s.colors[p].numpy() + (1 - a) * image
    return image


def test_matches_supersampled_matplotlib_reference():
    s = random_scene(12, 40, 48, jitter=0.3, seed=3, radius=9.0)
    s.points[0] += torch.tensor([-5.0, 0.0], dtype=torch.float64) - s.points[0].mean(0)  # crosses the left border
    ours = render(s.points, s.colors, s.opacity, s.background, 40, 48, backend="torch").numpy()
    ref = supersampled_reference(s, 40, 48)
    assert psnr_db(ours, ref) > 35.0
    assert np.abs(ours - ref).mean() < 3e-3


def test_exported_svg_rerendered_by_resvg_matches_our_raster():
    """resvg (an independent renderer) on our SVG: PSNR above 35 dB (self-intersecting paths included)."""
    resvg_py = pytest.importorskip("resvg_py")
    import imageio.v3 as iio

    s = random_scene(48, 128, 160, jitter=5.0, seed=0, radius=20.0, dtype=torch.float32)
    ours = render(s.points, s.colors, s.opacity, s.background, 128, 160, backend="torch").numpy()
    ref = iio.imread(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_string=to_svg(s, 128, 160)))))
    assert ref.shape == (128, 160, 4) and (ref[..., 3] == 255).all()
    assert psnr_db(ours, ref[..., :3] / 255.0) > 35.0


def test_self_intersecting_and_doubly_wound_paths_match_resvg():
    """Non-zero fill rule: a figure eight (windings +1 and -1) and a loop traced twice (winding 2) are
    filled, as resvg fills them (PSNR above 35 dB)."""
    resvg_py = pytest.importorskip("resvg_py")
    import imageio.v3 as iio

    eight = [(32, 32), (32, 16), (56, 16), (56, 32), (56, 48), (32, 48), (32, 32), (32, 16), (8, 16), (8, 32), (8, 48), (32, 48)]
    loop = [(20, 30), (20, 10), (50, 10), (50, 30), (50, 50), (20, 50)] * 2
    for pts, probe in ((eight, (32, 20)), ([(x + 5, y + 8) for x, y in loop], (38, 40))):
        s = VectorScene(torch.tensor([pts], dtype=torch.float32), torch.tensor([[0.9, 0.2, 0.1]]), torch.tensor([0.8]),
                        torch.tensor([1.0, 1.0, 1.0]))
        ours = render(s.points, s.colors, s.opacity, s.background, 64, 64, backend="torch").numpy()
        ref = iio.imread(io.BytesIO(bytes(resvg_py.svg_to_bytes(svg_string=to_svg(s, 64, 64)))))[..., :3] / 255.0
        assert psnr_db(ours, ref) > 35.0
        assert np.allclose(ours[probe], [0.92, 0.36, 0.28], atol=0.01)  # inside: 0.8 * colour + 0.2 * white


def test_paths_off_canvas_and_empty_scene_leave_the_background():
    s = random_scene(2, 16, 16, jitter=0.0, seed=0)
    s.points = s.points + 100.0
    img = render(s.points, s.colors, s.opacity, s.background, 16, 16, backend="torch")
    torch.testing.assert_close(img, s.background.expand(16, 16, 3))
    empty = render(torch.zeros(0, 6, 2), torch.zeros(0, 3), torch.zeros(0), torch.ones(3), 4, 5, backend="torch")
    assert empty.shape == (4, 5, 3) and (empty == 1).all()


def test_bad_input_raises():
    s = random_scene(2, 16, 16, jitter=0.0, seed=0)
    args = (s.colors, s.opacity, s.background, 16, 16)
    with pytest.raises(ValueError, match="at least 2 cubic segments"):
        render(s.points[:, :3], *args)
    bad = s.points.clone()
    bad[1, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="points holds a non-finite value"):
        render(bad, *args)
    bad[1, 4, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        render(bad, *args)
    with pytest.raises(ValueError, match="shape"):
        render(s.points[..., :1], *args)
    with pytest.raises(ValueError, match="backend"):
        render(s.points, *args, backend="cairo")


def test_diffvg_backend_requested_without_pydiffvg_fails_clearly():
    from dreamsampler.vector.rasterizer import diffvg_available

    if diffvg_available():
        pytest.skip("pydiffvg is installed here")
    s = random_scene(2, 16, 16, jitter=0.0, seed=0)
    with pytest.raises(ImportError, match="needs pydiffvg"):
        render(s.points, s.colors, s.opacity, s.background, 16, 16, backend="diffvg")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    s = random_scene(64, 96, 96, jitter=2.0, seed=4, dtype=torch.float32)
    cpu = render(s.points, s.colors, s.opacity, s.background, 96, 96, backend="torch")
    pts = s.points.cuda().requires_grad_()
    gpu = render(pts, s.colors.cuda(), s.opacity.cuda(), s.background.cuda(), 96, 96, backend="torch")
    gpu.sum().backward()
    assert torch.isfinite(pts.grad).all() and pts.grad.abs().sum() > 0
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
