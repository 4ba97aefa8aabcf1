"""The core against independent references: diffusers' DDIMScheduler and brute-force minimisation."""
import pytest
import torch
from diffusers import DDIMScheduler

from dreamsampler import DreamSampler, decreasing_timesteps, distill, index_for_step
from dreamsampler.diffusion import process
from dreamsampler.testing.tiny_pipeline import SCHEDULER_CONFIG


def eps_model(z, t):
    """A fixed nonlinear eps-predictor (stands in for a UNet)."""
    s = float(t) / 1000.0
    return torch.tanh(0.7 * z + s) + 0.1 * torch.sin(3 * z * (1 - s))


def test_several_optimizer_steps_share_one_noise_and_carry_the_last_prediction():
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()
    ds = DreamSampler(alphas, [900, 600], eta=0.0)
    z0 = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    z_a = ds.add_noise(z0, 0)
    z_b = ds.add_noise(z0, 0)
    assert torch.equal(z_a, z_b)
    ds.step(z_a, torch.ones_like(z0), 0)
    ds.step(z_a, 2 * torch.ones_like(z0), 0)  # the last prediction at index 0 wins
    z1 = ds.add_noise(torch.zeros_like(z0), 1)
    a1 = alphas[600]
    assert torch.allclose(z1, (1 - a1).sqrt() * 2 * torch.ones_like(z0))


def test_per_view_memory_reuses_each_views_own_prediction():
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()
    ds = DreamSampler(alphas, [800, 700, 600], eta=0.0)
    z0 = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    for key, value in ((3, 1.0), (5, -1.0)):
        z = ds.add_noise(z0, 0, key=[key])
        ds.step(z, torch.full_like(z0, value), 0, key=[key])
    # view 5 is next seen at index 2: its own prediction from index 0 is carried
    z = ds.add_noise(z0, 2, key=[5])
    assert torch.allclose(z, -(1 - alphas[600]).sqrt() * torch.ones_like(z0))
    batch = ds.add_noise(torch.zeros(2, 1, 2, 2, dtype=torch.float64), 1, key=[3, 5])
    assert batch[0].mean() > 0 > batch[1].mean()


def test_state_dict_round_trip_resumes_identically():
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()
    ts = decreasing_timesteps(20, 20, 980)
    a, b = DreamSampler(alphas, ts, eta=0.3), DreamSampler(alphas, ts, eta=0.3)
    z0 = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    for i in range(5):
        z = a.add_noise(z0, i, generator=torch.Generator().manual_seed(i))
        z0 = a.step(z, eps_model(z, ts[i]), i)
    b.load_state_dict(a.state_dict())
    za = a.add_noise(z0, 5, generator=torch.Generator().manual_seed(9))
    zb = b.add_noise(z0, 5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(za, zb)
    with pytest.raises(ValueError, match="different timestep schedule"):
        DreamSampler(alphas, decreasing_timesteps(30, 20, 980)).load_state_dict(a.state_dict())


@pytest.mark.parametrize("schedule", ["linear", "sqrt", "cosine"])
def test_schedules_are_monotone_and_span_the_range(schedule):
    ts = decreasing_timesteps(100, 20, 980, schedule, steps_per_timestep=3)
    assert ts.numel() == 34 and int(ts[0]) == 980 and int(ts[-1]) == 20
    assert (ts[1:] <= ts[:-1]).all()
    assert index_for_step(5, 3, 34) == 1 and index_for_step(10_000, 3, 34) == 33


def test_bad_arguments_name_the_problem():
    alphas = torch.linspace(0.99, 0.01, 1000)
    with pytest.raises(ValueError, match="eta"):
        DreamSampler(alphas, [10, 5], eta=1.5)
    with pytest.raises(ValueError, match="descending"):
        DreamSampler(alphas, [5, 10])
    with pytest.raises(ValueError, match="min_step"):
        decreasing_timesteps(10, 500, 500)
    with pytest.raises(ValueError, match="schedule"):
        decreasing_timesteps(10, 20, 980, "exponential")
    with pytest.raises(ValueError, match="weighting_strategy"):
        distill.weighting("nope", alphas)


def test_theorem1_argmin_of_eq17_is_tweedie_with_cfg_scale_gamma():
    """Theorem 1: argmin ||z - z0(null)||^2 + gamma/(1-gamma) ||z - z0(tgt)||^2 = Tweedie with CFG gamma."""
    g = torch.Generator().manual_seed(1)
    z_t, e_null, e_tgt = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    a, gamma = torch.tensor(0.6, dtype=torch.float64), 0.15
    z0_null, z0_tgt = process.tweedie(z_t, e_null, a), process.tweedie(z_t, e_tgt, a)
    z = torch.zeros_like(z_t, requires_grad=True)
    opt = torch.optim.SGD([z], lr=0.1)
    for _ in range(2000):
        opt.zero_grad()
        loss = ((z - z0_null) ** 2).sum() + gamma / (1 - gamma) * ((z - z0_tgt) ** 2).sum()
        loss.backward()
        opt.step()
    closed = process.tweedie(z_t, process.cfg(e_null, e_tgt, gamma), a)
    assert (z.detach() - closed).abs().max() < 1e-8


def test_tweedie_weighting_makes_one_sgd_step_solve_eq13():
    """With w = sqrt((1-a)/a) one SGD step (lr 1) on the surrogate moves z0 exactly to z0^ (eq. 10-11)."""
    alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()
    ds = DreamSampler(alphas, [700])
    z = torch.randn(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    z_t = ds.add_noise(z.detach(), 0)
    eps_hat = eps_model(z_t, 700)
    z0_hat = ds.step(z_t, eps_hat, 0)
    a = alphas[700]
    grad = distill.weighting("tweedie", a) * (eps_hat - ds.noise_tilde(0))
    distill.surrogate_loss(z, grad).backward()
    with torch.no_grad():
        z -= z.grad * z.shape[0]
    assert (z.detach() - z0_hat).abs().max() < 1e-10


def v_model(z, t):
    """A fixed nonlinear v-predictor (stands in for a v-prediction UNet, e.g. SD 2.1 at 768)."""
    s = float(t) / 1000.0
    return torch.sin(0.9 * z - s) + 0.2 * torch.tanh(2 * z * s)


@pytest.mark.parametrize("prediction_type,model", [("epsilon", eps_model), ("v_prediction", v_model)])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_identity_generator_solved_exactly_is_ddim(eta, prediction_type, model):
    """z0 <- z0^ after every step makes the z_t sequence DDIM's iterates (main paper sec. 2.2, 3.1); for a v model its
    output is converted by process.to_epsilon and diffusers' DDIM reads v itself (prediction_type=v)."""
    sched = DDIMScheduler(**{**SCHEDULER_CONFIG, "prediction_type": prediction_type})
    sched.set_timesteps(50)
    ts = sched.timesteps.clone()
    alphas = sched.alphas_cumprod.double()
    ds = DreamSampler(alphas, ts, eta=eta)
    g = torch.Generator().manual_seed(0)
    shape = (2, 4, 8, 8)
    fresh = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in ts]

    ours = []
    z0 = torch.zeros(shape, dtype=torch.float64)
    for i, t in enumerate(ts):
        z_t = ds.add_noise(z0, i, noise=fresh[i])
        ours.append(z_t)
        z0 = ds.step(z_t, process.to_epsilon(model(z_t, t), z_t, alphas[t], prediction_type), i)

    latents = ours[0].clone()
    for i, t in enumerate(ts):
        err = (latents - ours[i]).abs().max().item()
        assert err < 1e-5, f"step {i} (t={int(t)}): max abs difference {err}"
        noise = fresh[i + 1] if i + 1 < len(ts) else None
        latents = sched.step(model(latents, t), t, latents, eta=eta, variance_noise=noise).prev_sample


def test_x0_and_v_conversions_agree_with_diffusers_and_unknown_types_are_named():
    sched = DDIMScheduler(**{**SCHEDULER_CONFIG, "prediction_type": "sample"})
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    a = sched.alphas_cumprod.double()[t]
    z_t = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    x0 = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    eps = process.to_epsilon(x0, z_t, a, "sample")
    assert torch.allclose(process.tweedie(z_t, eps, a), x0, atol=1e-10)
    with pytest.raises(ValueError, match=r"my-model: scheduler prediction_type='flow' is not supported"):
        process.check_prediction_type("flow", "my-model")
