"""The CPU backend's stand-ins against independent references (closed forms, per-ray loops,
nerfacc's documented values, the orthonormality of spherical harmonics)."""
import math

import pytest
import torch

from dreamsampler_launcher.threestudio_cpu import nerfacc_cpu
from dreamsampler_launcher.threestudio_cpu.tcnn_encodings import (
    FrequencyEncoding,
    GridEncoding,
    SphericalHarmonicsEncoding,
)
from dreamsampler_launcher.threestudio_cpu.tinycudann import Encoding, Network, NetworkWithInputEncoding

nerfacc = pytest.importorskip("nerfacc")
nerfacc_cpu.patch()


def per_ray(values, packed_info, fn):
    out = torch.zeros_like(values)
    for start, count in packed_info.tolist():
        out[start : start + count] = fn(values[start : start + count])
    return out


PACKED = torch.tensor([[0, 2], [2, 0], [2, 3], [9, 4]])  # an empty ray, and a gap (samples 5..8 unused)


@pytest.mark.parametrize(
    "name, reference",
    [
        ("inclusive_sum", lambda v: v.cumsum(0)),
        ("exclusive_sum", lambda v: v.cumsum(0) - v),
        ("inclusive_prod", lambda v: v.cumprod(0)),
        ("exclusive_prod", lambda v: torch.cat([v.new_ones(1), v.cumprod(0)[:-1]])),
    ],
)
def test_packed_scans_match_per_ray_scans_and_their_gradients(name, reference):
    values = torch.rand(13, dtype=torch.float64) + 0.5
    weights = torch.rand(13, dtype=torch.float64)
    ours = values.clone().requires_grad_()
    ref = values.clone().requires_grad_()
    out = getattr(nerfacc, name)(ours, PACKED)
    expected = per_ray(ref, PACKED, reference)
    torch.testing.assert_close(out[[0, 1, 2, 3, 4, 9, 10, 11, 12]], expected[[0, 1, 2, 3, 4, 9, 10, 11, 12]])
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad)


def test_render_weight_from_density_reproduces_nerfaccs_documented_example():
    t_starts = torch.arange(7.0)
    sigmas = torch.tensor([0.4, 0.8, 0.1, 0.8, 0.1, 0.0, 0.9])
    ray_indices = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    weights, trans, alphas = nerfacc.render_weight_from_density(
        t_starts, t_starts + 1, sigmas, ray_indices=ray_indices, n_rays=3
    )
    torch.testing.assert_close(weights, torch.tensor([0.33, 0.37, 0.03, 0.55, 0.04, 0.00, 0.59]), atol=5e-3, rtol=0)
    torch.testing.assert_close(trans, torch.tensor([1.00, 0.67, 0.30, 1.00, 0.45, 1.00, 1.00]), atol=5e-3, rtol=0)
    # closed form per ray: w_i = exp(-sum_{j<i} sigma_j dt_j) (1 - exp(-sigma_i dt_i))
    for ray in range(3):
        s = sigmas[ray_indices == ray]
        expected = torch.exp(-(s.cumsum(0) - s)) * (1 - torch.exp(-s))
        torch.testing.assert_close(weights[ray_indices == ray], expected)


def test_cuda_tensors_still_reach_nerfaccs_kernels():
    assert nerfacc.exclusive_sum._threestudio_cpu_original.__module__ == "nerfacc.scan"
    assert nerfacc.OccGridEstimator.sampling._threestudio_cpu_original.__qualname__ == "OccGridEstimator.sampling"


def test_occgrid_sampling_marches_constant_steps_inside_the_box():
    estimator = nerfacc.OccGridEstimator(roi_aabb=[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], resolution=8, levels=1)
    rays_o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, -3.0, 0.5], [0.0, 0.0, 0.0], [0.0, 5.0, 5.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # last misses
    step = 0.01
    ray_indices, t_starts, t_ends = estimator.sampling(rays_o, rays_d, render_step_size=step)
    counts = torch.bincount(ray_indices, minlength=4).tolist()
    assert counts == [200, 200, 100, 0]  # chords 2, 2 and 1 (the third starts inside the box)
    assert bool((ray_indices[1:] >= ray_indices[:-1]).all())
    mids = rays_o[ray_indices] + rays_d[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
    assert bool((mids.abs() <= 1.0 + 1e-5).all())
    torch.testing.assert_close(t_ends - t_starts, torch.full_like(t_starts, step))
    torch.testing.assert_close(t_starts[:2], torch.tensor([2.0, 2.01]))


def test_occgrid_sampling_drops_samples_behind_an_opaque_wall():
    estimator = nerfacc.OccGridEstimator(roi_aabb=[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], resolution=8, levels=1)
    rays_o, rays_d = torch.tensor([[-3.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])

    def sigma_fn(t_starts, t_ends, ray_indices):  # opaque past x = 0
        x = rays_o[ray_indices, 0] + (t_starts + t_ends) / 2
        return torch.where(x > 0, 1e4, 0.0)

    _, t_starts, _ = estimator.sampling(rays_o, rays_d, sigma_fn=sigma_fn, render_step_size=0.01)
    assert 100 <= len(t_starts) <= 102  # the empty half and the first opaque sample(s)
    estimator.train()
    before = estimator.binaries.clone()
    estimator.update_every_n_steps(step=0, occ_eval_fn=lambda x: torch.ones(len(x), 1))
    assert torch.equal(estimator.binaries, before)


HASH = dict(otype="HashGrid", n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.447269237440378)


def test_hash_grid_sizes_follow_tiny_cuda_nn():
    grid = GridEncoding(3, HASH)
    assert grid.n_output_dims == 32
    assert grid.sizes[0] == 16**3  # dense: (ceil(16 - 1) + 1)^3
    assert grid.sizes[-1] == 2**19  # hashed
    assert grid.params.numel() == 2 * sum(grid.sizes) and grid.params.requires_grad
    assert float(grid.params.detach().abs().max()) <= 1e-4  # tiny-cuda-nn's U(-1e-4, 1e-4) init


def test_dense_grid_returns_vertex_values_and_interpolates_linearly():
    grid = GridEncoding(3, dict(otype="DenseGrid", n_levels=1, n_features_per_level=2, base_resolution=8))
    with torch.no_grad():
        grid.params.copy_(torch.randn_like(grid.params))
    scale = float(grid.scales[0])
    vertex_a, vertex_b = torch.tensor([2, 3, 4]), torch.tensor([3, 3, 4])
    at = lambda v: ((v.float() - 0.5) / scale)[None]  # pos = x * scale + 0.5 lands on the vertex
    table = grid.params.view(-1, 2)
    index = lambda v: int(v[0] + 8 * v[1] + 64 * v[2])  # dense, x fastest (grid.h)
    torch.testing.assert_close(grid(at(vertex_a))[0], table[index(vertex_a)])
    mid = (at(vertex_a) + at(vertex_b)) / 2
    torch.testing.assert_close(grid(mid)[0], (table[index(vertex_a)] + table[index(vertex_b)]) / 2)


def test_hash_grid_supports_the_second_derivatives_of_analytic_normals():
    enc = Encoding(3, {**HASH, "otype": "Grid", "type": "Hash"})
    with torch.no_grad():
        enc.encoding.params.normal_()
    x = torch.rand(64, 3, requires_grad=True)
    y = enc(x)
    (grad_x,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (grad_x**2).sum().backward()
    assert enc.encoding.params.grad.abs().sum() > 0


def fibonacci_sphere(n):
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = (1 - z**2).sqrt()
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    enc = SphericalHarmonicsEncoding(3, {"otype": "SphericalHarmonics", "degree": 4})
    dirs = fibonacci_sphere(40000)
    y = enc(((dirs + 1) / 2).float()).double()  # tiny-cuda-nn's input convention: (v + 1) / 2
    gram = 4 * math.pi * y.T @ y / len(dirs)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="degree"):
        SphericalHarmonicsEncoding(3, {"degree": 8})


def test_frequency_encoding_layout():
    enc = FrequencyEncoding(2, {"otype": "Frequency", "n_frequencies": 3})
    x = torch.tensor([[0.1, 0.7]])
    expected = [f(2**k * math.pi * v) for v in (0.1, 0.7) for k in range(3) for f in (math.sin, math.cos)]
    torch.testing.assert_close(enc(x)[0], torch.tensor(expected), atol=1e-6, rtol=0)


def test_networks_have_tcnn_shapes_and_no_biases():
    net = Network(5, 3, {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "Sigmoid", "n_neurons": 16, "n_hidden_layers": 2})
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(16, 5), (16, 16), (3, 16)]
    out = net(torch.randn(7, 5))
    assert out.shape == (7, 3) and out.dtype == torch.float32 and bool(((out > 0) & (out < 1)).all())
    both = NetworkWithInputEncoding(3, 4, HASH, {"otype": "CutlassMLP", "n_neurons": 8, "n_hidden_layers": 1})
    assert both(torch.rand(10, 3)).shape == (10, 4)
    with pytest.raises(ValueError, match="otype='CutlassResNet'"):
        Network(3, 1, {"otype": "CutlassResNet"})
    with pytest.raises(ValueError, match="activation"):
        Network(3, 1, {"otype": "FullyFusedMLP", "activation": "Swish"})


def test_nvdiffrast_stand_in_imports_but_refuses_use():
    from dreamsampler_launcher.threestudio_cpu import nvdiffrast

    dr = nvdiffrast.modules()["nvdiffrast.torch"]
    ctx = dr.RasterizeCudaContext(device="cpu")  # threestudio's mesh exporter makes one up front
    with pytest.raises(nvdiffrast.NvdiffrastUnavailable, match="nvdiffrast.torch.rasterize.*needs nvdiffrast and a GPU"):
        dr.rasterize(ctx, None, None, (8, 8))
    with pytest.raises(nvdiffrast.NvdiffrastUnavailable, match="nvdiffrast.torch.interpolate"):
        dr.interpolate(None, None, None)
