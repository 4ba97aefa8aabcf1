"""Degradation operators against independent references: their adjoints, a direct convolution, PIL."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dreamsampler.inverse.operators import OPERATOR_TYPES, build_operator


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SPECS = [
    {"type": "identity"},
    {"type": "blur", "kernel_size": 5, "sigma": 10.0},
    {"type": "blur", "kernel_size": 9, "sigma": 2.0, "border_type": "constant"},
    {"type": "blur", "kernel_size": 7, "sigma": 1.5, "border_type": "replicate"},
    {"type": "blur", "kernel_size": 7, "sigma": 1.5, "border_type": "circular"},
    {"type": "downsample", "factor": 2},
    {"type": "downsample", "factor": 4, "antialias": False},
    {"type": "noise", "sigma": 0.1},
    {"type": "mask", "mask": (torch.rand(24, 32, generator=torch.Generator().manual_seed(3)) > 0.5).float()},
    {"type": "compose", "ops": [{"type": "blur", "kernel_size": 5, "sigma": 1.0}, {"type": "downsample", "factor": 4},
                                {"type": "noise", "sigma": 0.05}]},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["type"] + str(len(s)))
def test_adjoint_identity(spec):
    """<A x, y> = <x, A^T y> for random x, y (float64)."""
    op = build_operator(spec)
    x = _rand(2, 3, 24, 32, seed=1)
    h, w = op.output_size(24, 32)
    y = _rand(2, 3, h, w, seed=2)
    lhs = (op(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-10 * max(1.0, abs(float(lhs)))
    assert op.adjoint(y).shape == x.shape


def _gaussian_kernel(k, sigma):
    c = (k - 1) / 2
    g = torch.tensor([math.exp(-((i - c) ** 2) / (2 * sigma**2)) for i in range(k)], dtype=torch.float64)
    g = g / g.sum()
    return g[:, None] * g[None, :]


@pytest.mark.parametrize("k,sigma,border", [(61, 5.0, "reflect"), (5, 10.0, "reflect"), (9, 2.0, "constant")])
def test_blur_equals_direct_convolution(k, sigma, border):
    """kornia's separable blur = torch conv2d with the explicit 2-D Gaussian after padding."""
    op = build_operator({"type": "blur", "kernel_size": k, "sigma": sigma, "border_type": border})
    x = _rand(1, 3, 96, 80, seed=4)
    p = k // 2
    padded = F.pad(x, (p, p, p, p), mode=border) if border != "constant" else F.pad(x, (p, p, p, p))
    kernel = _gaussian_kernel(k, sigma)[None, None].repeat(3, 1, 1, 1)
    direct = F.conv2d(padded, kernel, groups=3)
    assert (op(x) - direct).abs().max() < 1e-12
    assert torch.allclose(op.kernel(), _gaussian_kernel(k, sigma), atol=1e-15)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_downsampling_matches_pil(factor):
    """Anti-aliased bicubic down-sampling agrees with PIL's BICUBIC resize (an independent implementation)."""
    img = torch.rand(64, 48, generator=torch.Generator().manual_seed(5))
    op = build_operator({"type": "downsample", "factor": factor})
    ours = op(img[None, None].double())[0, 0].numpy()
    pil = np.asarray(Image.fromarray(img.numpy(), mode="F").resize((48 // factor, 64 // factor), Image.BICUBIC))
    assert ours.shape == pil.shape == (64 // factor, 48 // factor)
    assert np.abs(ours - pil).max() < 1e-5


def test_downsampling_without_antialias_matches_torch_bicubic():
    x = _rand(1, 3, 32, 32, seed=6)
    op = build_operator({"type": "downsample", "factor": 4, "antialias": False})
    ref = F.interpolate(x, scale_factor=0.25, mode="bicubic", align_corners=False)
    assert (op(x) - ref).abs().max() < 1e-12


def test_noise_is_added_by_measure_only_and_composes():
    op = build_operator({"type": "compose", "ops": [{"type": "blur", "kernel_size": 5, "sigma": 1.0},
                                                    {"type": "noise", "sigma": 0.2}]})
    x = _rand(4, 3, 64, 64, seed=7)
    blurred = build_operator({"type": "blur", "kernel_size": 5, "sigma": 1.0})(x)
    assert torch.equal(op(x), blurred)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert abs(float((y - blurred).std()) - 0.2) < 0.01
    y2 = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)


def test_mask_operator_keeps_observed_pixels():
    mask = torch.zeros(8, 8)
    mask[2:5, 3:7] = 1
    op = build_operator({"type": "mask", "mask": mask})
    x = _rand(1, 3, 8, 8)
    assert torch.equal(op(x), x * mask)


def test_sizes_and_measurement_check_name_both_sizes():
    op = build_operator({"type": "compose", "ops": [{"type": "blur", "kernel_size": 3, "sigma": 1.0},
                                                    {"type": "downsample", "factor": 8}]})
    assert op.output_size(512, 256) == (64, 32) and op.input_size(64, 32) == (512, 256)
    op.check_measurement(torch.zeros(1, 3, 64, 32), 512, 256)
    with pytest.raises(ValueError, match=r"measurement size 64x64 .* output size 64x32 for image size 512x256"):
        op.check_measurement(torch.zeros(1, 3, 64, 64), 512, 256)
    with pytest.raises(ValueError, match="not divisible by the downsample factor 8"):
        op.output_size(100, 64)
    mask_op = build_operator({"type": "mask", "mask": torch.ones(16, 16)})
    with pytest.raises(ValueError, match="mask size 16x16 does not match the image size 16x20"):
        mask_op(torch.zeros(1, 3, 16, 20))


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"type": "sharpen"}, "unknown operator type 'sharpen'"),
        ({"kernel_size": 3}, "'type'"),
        ({"type": "blur", "sigma": 1.0}, r"missing parameter\(s\) \['kernel_size'\]"),
        ({"type": "blur", "kernel_size": 4, "sigma": 1.0}, "kernel_size must be a positive odd integer"),
        ({"type": "blur", "kernel_size": 5, "sigma": "wide"}, "sigma must be a number > 0"),
        ({"type": "blur", "kernel_size": 5, "sigma": 1.0, "border_type": "mirror"}, "border_type='mirror'"),
        ({"type": "blur", "kernel_size": 5, "sigma": 1.0, "radius": 3}, r"unknown parameter\(s\) \['radius'\]"),
        ({"type": "downsample", "factor": 0}, "factor must be a positive integer"),
        ({"type": "downsample", "factor": 2.5}, "factor must be a positive integer"),
        ({"type": "noise", "sigma": -1}, "noise sigma must be a number >= 0"),
        ({"type": "mask", "mask": torch.ones(2, 2, 2, 2)}, "mask must have shape"),
        ({"type": "compose", "ops": []}, "at least one operator"),
        ({"type": "compose", "ops": [{"type": "zoom"}]}, "unknown operator type 'zoom'"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        build_operator(spec)


def test_operator_types_are_listed():
    assert set(OPERATOR_TYPES) == {"identity", "blur", "downsample", "noise", "mask", "compose"}
