"""SDI's DDIM inversion in the core (``reverse.ddim_invert_noise``, ``schedules.inversion_timesteps``)
against diffusers' DDIMInverseScheduler / DDIMScheduler and a float64 brute-force reference."""
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from dreamsampler import distill
from dreamsampler.diffusion.process import forward_noise, tweedie
from dreamsampler.diffusion.reverse import ddim_invert_noise
from dreamsampler.diffusion.schedules import inversion_timesteps
from dreamsampler.testing.tiny_pipeline import SCHEDULER_CONFIG


def eps_model(z, t):
    """A fixed nonlinear eps-predictor (stands in for a guided UNet)."""
    s = float(t) / 1000.0
    return torch.tanh(0.7 * z + s) + 0.1 * torch.sin(3 * z * (1 - s))


def recorded_noise(seed=0):
    """A ``randn_like`` that records what it drew, so a reference can replay it."""
    gen, drawn = torch.Generator().manual_seed(seed), []

    def randn_like(x):
        drawn.append(torch.randn(x.shape, generator=gen, dtype=x.dtype))
        return drawn[-1]

    return randn_like, drawn


@pytest.mark.parametrize("set_alpha_to_one", [False, True])
def test_deterministic_inversion_is_diffusers_inverse_ddim_on_the_grid(set_alpha_to_one):
    """eta = 0 on the inverse scheduler's own grid: each step is DDIMInverseScheduler.step given the
    prediction at the step's start (from the initial level at the negative first timestep)."""
    config = dict(SCHEDULER_CONFIG, set_alpha_to_one=set_alpha_to_one)
    inverse = DDIMInverseScheduler(**config)
    inverse.set_timesteps(10)
    grid = inverse.timesteps.tolist()  # 1, 101, ..., 901
    path = [grid[0] - 100] + grid
    z0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    alphas = inverse.alphas_cumprod.double()
    z, kappa = ddim_invert_noise(eps_model, z0, path, alphas, float(inverse.initial_alpha_cumprod), eta=0.0)

    ref = z0.clone()
    inverse.alphas_cumprod = alphas
    inverse.initial_alpha_cumprod = inverse.initial_alpha_cumprod.double()
    for t_from, t_to in zip(path[:-1], path[1:]):
        ref = inverse.step(eps_model(ref, t_from), t_to, ref).prev_sample
    assert torch.allclose(z, ref, rtol=0, atol=1e-12)
    a = alphas[path[-1]]
    assert torch.allclose(kappa, (ref - a.sqrt() * z0) / (1 - a).sqrt(), rtol=0, atol=1e-12)
    assert torch.allclose(forward_noise(z0, kappa, a), z, atol=1e-12)  # z_K is z0 forward-noised with kappa


def test_stochastic_inversion_adds_eta_times_ddims_sigma_and_ends_off_the_grid():
    """eta > 0 and SDI's last step to t + delta (off the grid), against a float64 brute force with DDIM's
    variance from diffusers' DDIMScheduler; one noise draw per step whatever eta."""
    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    alphas = sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = alphas[0]  # set_alpha_to_one=False, in float64 too
    path = inversion_timesteps(322, 10, 1000, delta=57, spacing="leading", steps_offset=1)
    assert path == [-99, 1, 101, 201, 301, 379]
    z0 = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    eta = 0.3
    randn_like, drawn = recorded_noise()
    z, _ = ddim_invert_noise(eps_model, z0, path, alphas, float(alphas[0]), eta=eta, randn_like=randn_like)
    assert len(drawn) == len(path) - 1

    ref = z0.clone()
    for k, (t_from, t_to) in enumerate(zip(path[:-1], path[1:])):
        a_from = float(alphas[t_from]) if t_from >= 0 else float(alphas[0])
        a_to = float(alphas[t_to])
        eps = eps_model(ref, t_from)
        x0 = (ref - (1 - a_from) ** 0.5 * eps) / a_from**0.5
        std = float(sched._get_variance(t_to, t_from)) ** 0.5  # diffusers' DDIM variance between the levels
        ref = a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps + eta * std * drawn[k]
    assert torch.allclose(z, ref, rtol=0, atol=1e-10)
    randn_like0, drawn0 = recorded_noise()
    ddim_invert_noise(eps_model, z0, path, alphas, float(alphas[0]), eta=0.0, randn_like=randn_like0)
    assert len(drawn0) == len(path) - 1


def test_inversion_path_follows_diffusers_grids():
    for spacing, offset in (("leading", 1), ("leading", 0), ("trailing", 0)):
        inverse = DDIMInverseScheduler(**dict(SCHEDULER_CONFIG, timestep_spacing=spacing, steps_offset=offset))
        inverse.set_timesteps(10)
        grid = inverse.timesteps.tolist()
        for t, delta in ((322, 0), (322, 99), (950, 80), (50, 5)):
            path = inversion_timesteps(t, 10, 1000, delta, spacing, offset)
            below = [g for g in grid if g < t]
            assert path[1:-1] == below, (spacing, t)
            assert path[0] == int((below or grid)[0] - 100) and path[0] < 0
            assert path[-1] == min(t + delta, 999)
    assert inversion_timesteps(1, 10, 1000, 3, "leading", 1) == [-99, 4]  # nothing on the grid below t
    with pytest.raises(ValueError, match="spacing"):
        inversion_timesteps(300, 10, 1000, 0, "linspace")
    with pytest.raises(ValueError, match="inversion steps"):
        inversion_timesteps(300, 0)


def test_sdi_gradient_is_the_render_minus_its_one_step_target():
    z, z_t, eps = (torch.randn(1, 4, 4, 4, dtype=torch.float64) for _ in range(3))
    a = torch.tensor(0.6, dtype=torch.float64)
    assert torch.allclose(distill.sdi_gradient(z, z_t, eps, a), z - tweedie(z_t, eps, a))
    assert "sdi" in distill.MODES
