"""Alg. 4 pieces against independent references: brute-force minimisation (eq. 14 / 16), a direct
linear solve (eq. 13), an analytic DPS gradient, and data consistency on the tiny pipeline."""
import math

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from dreamsampler.diffusion.latent_model import LatentModel
from dreamsampler.diffusion.process import carried_noise
from dreamsampler.diffusion.reverse import sample
from dreamsampler.diffusion.schedules import ReverseSchedule
from dreamsampler.image.inpainting import (
    InverseProblem,
    alg4_carried_noise,
    closed_form,
    closed_form_outside,
    dps_step,
    in_gamma_set,
    initial_latent,
    masked_closed_form,
    solve,
    stochastic_sigma,
)
from dreamsampler.image_io import latent_mask, read_image, rect_mask, square_resize
from dreamsampler.inverse.cg import conjugate_gradient, data_consistency_solve
from dreamsampler.inverse.operators import build_operator
from dreamsampler.metrics import masked_psnr
from dreamsampler.testing.tiny_pipeline import SCHEDULER_CONFIG


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute_force(objective, like):
    z = torch.zeros_like(like, requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective(z)
        loss.backward()
        return loss

    opt.step(closure)
    return z.detach()


@pytest.mark.parametrize("a", [0.05, 0.5, 0.97])
def test_eq15_and_eq17_are_the_minimisers_of_eq14_and_eq16(a):
    z_tgt, z_null, z_y = (_randn(1, 4, 6, 6, seed=s) for s in (1, 2, 3))
    g1, g2, g3 = a, (1 - a) ** 2, a * (1 - a)  # the weights eq. 15's coefficients come from
    eq14 = lambda z: g1 * ((z - z_tgt) ** 2).sum() + g2 * ((z - z_null) ** 2).sum() + g3 * ((z - z_y) ** 2).sum()
    assert (closed_form(z_tgt, z_null, z_y, a) - _brute_force(eq14, z_tgt)).abs().max() < 1e-8

    mask = (rect_mask([0.0, 0.0, 0.5, 0.67], 6, 6, "m")[None]).double()
    eq16 = lambda z: g1 * ((mask * (z - z_tgt)) ** 2).sum() + g2 * ((z - z_null) ** 2).sum() + g3 * ((z - z_y) ** 2).sum()
    brute = _brute_force(eq16, z_tgt)
    assert (masked_closed_form([z_tgt], z_null, z_y, mask, a) - brute).abs().max() < 1e-8
    inside, outside = mask.expand_as(brute) > 0, mask.expand_as(brute) == 0
    assert (closed_form(z_tgt, z_null, z_y, a) - brute)[inside].abs().max() < 1e-8
    assert (closed_form_outside(z_null, z_y, a) - brute)[outside].abs().max() < 1e-8


def test_several_masks_with_distinct_prompts_minimise_their_weighted_objective():
    """Two overlapping binary masks: eq. 16 with one distillation term per mask, weights M_i / max(1, sum M)."""
    a = 0.4
    z1, z2, z_null, z_y = (_randn(1, 4, 6, 6, seed=s) for s in (4, 5, 6, 7))
    masks = torch.stack([rect_mask([0.0, 0.0, 0.67, 0.5], 6, 6, "m"), rect_mask([0.33, 0.33, 1.0, 1.0], 6, 6, "m")]).double()
    w = masks / masks.sum(0, keepdim=True).clamp_min(1)
    g1, g2, g3 = a, (1 - a) ** 2, a * (1 - a)
    obj = lambda z: (g1 * (w[0] * (z - z1) ** 2 + w[1] * (z - z2) ** 2) + g2 * (z - z_null) ** 2 + g3 * (z - z_y) ** 2).sum()
    assert (masked_closed_form([z1, z2], z_null, z_y, masks, a) - _brute_force(obj, z1)).abs().max() < 1e-8


def _explicit_matrix(op, shape):
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    return torch.stack([op(b[None])[0].flatten() for b in basis], dim=1)


@pytest.mark.parametrize("spec", [
    {"type": "compose", "ops": [{"type": "blur", "kernel_size": 5, "sigma": 1.5}, {"type": "downsample", "factor": 2}]},
    {"type": "blur", "kernel_size": 61, "sigma": 5.0, "border_type": "constant"},
])
def test_cg_solves_eq13_like_a_direct_solve(spec):
    op = build_operator(spec)
    shape = (2, 8, 8)
    A = _explicit_matrix(op, shape)
    y = _randn(1, 2, *op.output_size(8, 8), seed=8)
    x_ref = _randn(1, *shape, seed=9)
    lam = 0.05
    direct = torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1], dtype=A.dtype), A.T @ y.flatten() + lam * x_ref.flatten())
    cg = data_consistency_solve(op, y, x_ref, lam, iters=200, tol=1e-13)
    assert (cg.flatten() - direct).abs().max() < 1e-9
    # a few iterations already reduce the normal-equation residual
    few = data_consistency_solve(op, y, x_ref, lam, iters=3)
    normal = lambda x: (A.T @ A + lam * torch.eye(A.shape[1], dtype=A.dtype)) @ x.flatten() - (A.T @ y.flatten() + lam * x_ref.flatten())
    assert normal(few).norm() < 0.5 * normal(x_ref).norm()


def test_cg_with_a_mask_is_the_pixelwise_closed_form():
    mask = rect_mask([0.25, 0.25, 0.75, 0.75], 8, 8, "m").double()
    op = build_operator({"type": "mask", "mask": 1 - mask})
    x, x_ref = _randn(1, 3, 8, 8, seed=10), _randn(1, 3, 8, 8, seed=11)
    y = op(x)
    got = data_consistency_solve(op, y, x_ref, 1e-4, iters=10)
    assert (got - ((1 - mask) * y + 1e-4 * x_ref) / ((1 - mask) + 1e-4)).abs().max() < 1e-10


def test_conjugate_gradient_batches_independent_systems_and_rejects_bad_arguments():
    d = torch.tensor([1.0, 2.0, 5.0, 10.0], dtype=torch.float64)
    b = _randn(3, 4, seed=12)
    scale = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)[:, None]
    x = conjugate_gradient(lambda v: scale * d * v, b, iters=10, tol=1e-14)
    assert (x - b / (scale * d)).abs().max() < 1e-12
    with pytest.raises(ValueError, match="lambda must be > 0"):
        data_consistency_solve(build_operator({"type": "identity"}), b, b, 0.0)


def test_gamma_set_of_alg4():
    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    sched.set_timesteps(200)
    gamma = [int(t) for t in sched.timesteps if in_gamma_set(int(t))]
    assert gamma == [t for t in range(170, -1, -1) if t % 3 == 0 and (t - 1) % 5 == 0]
    assert len(gamma) == 11 and gamma[0] == 156 and gamma[-1] == 6
    assert not in_gamma_set(171) and in_gamma_set(0)


def test_carried_noise_with_the_stochastic_sigma_has_unit_variance():
    a_t, a_next = 0.3, 0.45
    sigma = stochastic_sigma(a_t, a_next)
    assert math.isclose(sigma, math.sqrt(a_t) * math.sqrt(1 - a_next))
    eps, e = _randn(200000, seed=13), _randn(200000, seed=14)
    mixed = carried_noise(eps, a_next, sigma, e)
    assert abs(float(mixed.std()) - 1.0) < 0.01
    # sqrt(1 - a_{t-1}) eps~ = sqrt(1 - a_{t-1}) (sqrt(1 - a_t) eps + sqrt(a_t) e)
    assert torch.allclose(mixed, math.sqrt(1 - a_t) * eps + math.sqrt(a_t) * e)
    assert torch.allclose(alg4_carried_noise(eps, a_t, a_next, e), mixed)
    assert torch.allclose(alg4_carried_noise(eps, a_t, a_next, None), eps)  # the deterministic last step


def test_dps_step_follows_the_analytic_gradient():
    """eps = c z (linear), D = I, A = mask: z^ = k z with k = (1 - sqrt(1-a) c) / sqrt(a),
    grad_z ||M k z - y|| = k M (M k z - y) / ||M k z - y||."""
    c, a = 0.3, 0.6
    mask = rect_mask([0.0, 0.0, 0.5, 1.0], 4, 4, "m").double()
    op = build_operator({"type": "mask", "mask": mask})
    z_t, y = _randn(1, 3, 4, 4, seed=15), op(_randn(1, 3, 4, 4, seed=16))
    p = InverseProblem(lambda z, t, e: c * z, lambda z: z, lambda x: x, op, y, torch.zeros(1, 1, 1), [], dps_scale=0.7)
    out = dps_step(p, z_t, 500, a, 0.8, None)
    k = (1 - math.sqrt(1 - a) * c) / math.sqrt(a)
    r = mask * k * z_t - y
    expected = k * z_t - 0.7 * k * mask * r / r.norm()
    assert (out.z0 - expected).abs().max() < 1e-12
    assert torch.allclose(out.eps, c * z_t)


@pytest.fixture(scope="module")
def model(tiny_sd):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, dtype=torch.float32, safety_checker=None)
    return LatentModel(pipe.vae, pipe.unet, pipe.tokenizer, pipe.text_encoder, pipe.scheduler)


def _psnr(a, b, weight):
    return masked_psnr((a / 2 + 0.5).clamp(0, 1), (b / 2 + 0.5).clamp(0, 1), weight)


def _inpaint(model, size, encode, decode, factor, nfe):
    x = square_resize(read_image("skimage:astronaut", "image"), size)[None] * 2 - 1
    hole = rect_mask([0.3, 0.35, 0.7, 0.55], size, size, "mask")
    op = build_operator({"type": "mask", "mask": 1 - hole})
    null, tgt = model.text(["out of focus, depth of field", "wearing glasses"]).chunk(2)
    p = InverseProblem(model.eps, decode, encode, op, op(x), null, [tgt], latent_mask(hole[None], factor))
    schedule = ReverseSchedule.from_scheduler(DDIMScheduler(**SCHEDULER_CONFIG), nfe)
    z_T = initial_latent(p, schedule)
    out = decode(solve(p, z_T, schedule, seed=0)).detach()
    with torch.no_grad():
        free = decode(sample(model.eps, torch.randn_like(z_T), schedule, null, tgt, 1.0))
    assert torch.isfinite(out).all()
    return x, 1 - hole, out, free


def test_inpainting_keeps_the_observed_region_with_a_pixel_space_latent(model):
    """Alg. 4 with E, D = identity (latent = pixels + a zero channel), so the data-consistency
    machinery (CG, eq. 17, DPS) is measured without the random VAE's reconstruction error."""
    encode = lambda x: torch.cat([x, torch.zeros_like(x[:, :1])], 1)
    decode = lambda z: z[:, :3]
    x, keep, out, free = _inpaint(model, 16, encode, decode, 1, 50)
    ours, baseline = _psnr(out, x, keep), _psnr(free, x, keep)
    print(f"pixel-space latent 16x16, NFE 50: PSNR on the observed region {ours:.2f} dB "
          f"(unconstrained sampling: {baseline:.2f} dB)")
    assert ours > 30 and ours > baseline + 20


def test_inpainting_on_the_tiny_pipeline_reaches_the_autoencoders_own_accuracy(model):
    """With the tiny pipeline's random VAE, D(E(x)) itself is far from x; the inpainted result must be
    at least as consistent with the measurement as that round trip (observed region)."""
    x, keep, out, free = _inpaint(model, 64, model.encode, model.decode, 8, 50)
    with torch.no_grad():
        ceiling = _psnr(model.decode(model.encode(x)), x, keep)
    ours, baseline = _psnr(out, x, keep), _psnr(free, x, keep)
    print(f"tiny pipeline 64x64, NFE 50: PSNR on the observed region {ours:.2f} dB, VAE round trip "
          f"{ceiling:.2f} dB, unconstrained sampling {baseline:.2f} dB")
    assert ours > ceiling - 0.5
