"""LMC-SDS (arXiv:2401.05293): the gradient against SDS's own decomposition, the trainer, the checkpoint."""
import itertools
import math
import pickle

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file, save_file

from dreamsampler import distill
from dreamsampler.diffusion import process
from dreamsampler.distill import lmc
from dreamsampler.testing.tiny_pipeline import SCHEDULER_CONFIG


ALPHAS = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()


def identity(z, t):
    return z



def noised_batch(seed=0, shape=(3, 4, 8, 8)):
    """z, per-sample t, eps~, z_t = sqrt(a) z + sqrt(1-a) eps~, and two stand-in predictions."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([30, 400, 950])[: shape[0]]
    a = ALPHAS[t].view(-1, 1, 1, 1)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    z_t = a.sqrt() * z + (1 - a).sqrt() * eps
    eps_c, eps_u = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    return z, t, a, eps, z_t, eps_c, eps_u


@pytest.mark.parametrize("strategy", ["sds", "uniform", "tweedie"])
def test_identity_corrective_reduces_to_the_sds_gradient(strategy):
    """k = id, no normalization: L_cond + L_lmc is w(t) (eps_w - eps~), split as L_cond + L_proj (eq. 6-7)."""
    z, t, a, eps, z_t, eps_c, eps_u = noised_batch()
    w = distill.weighting(strategy, a)
    scale = torch.tensor([7.5, 15.0, 100.0], dtype=torch.float64)
    got = lmc.lmc_gradient(identity, z, t, a, z_t, eps_c, eps_u, scale, w, normalize_target=False)
    s = scale.view(-1, 1, 1, 1)
    sds = w * (eps_u + s * (eps_c - eps_u) - eps)  # w (eps_w - eps~), eq. 6 written out
    l_cond = w * scale.view(-1, 1, 1, 1) * (eps_c - eps_u)
    l_proj = w * (eps_u - eps)
    assert torch.allclose(got, sds, atol=1e-10, rtol=0)
    assert torch.allclose(got, l_cond + l_proj, atol=1e-10, rtol=0)


def test_paper_weighting_is_the_tweedie_weighting():
    """Dropping w(t) sqrt(a/(1-a)) from eq. 9 (manifold_weight=1) equals the default under w = sqrt((1-a)/a)."""
    z, t, a, _, z_t, eps_c, eps_u = noised_batch(1)
    k = lmc.CorrectiveUNet(in_channels=4, base_channels=4, depth=1).double()
    w = distill.weighting("tweedie", a)
    default = lmc.lmc_gradient(k, z, t, a, z_t, eps_c, eps_u, 7.5, w)
    paper = lmc.lmc_gradient(k, z, t, a, z_t, eps_c, eps_u, 7.5, w, manifold_weight=1.0)
    assert torch.allclose(default, paper, atol=1e-10, rtol=0)


def test_fixed_noise_enters_only_the_manifold_term():
    """With the fixed-noise option, L_cond keeps the fresh prediction and L_proj uses the fixed eps."""
    z, t, a, _, z_t, eps_c, eps_u = noised_batch(2)
    fixed = lmc.FixedNoise(seed=5)
    eps_fix = fixed(z.shape, dtype=z.dtype)
    z_t_fix = a.sqrt() * z + (1 - a).sqrt() * eps_fix
    eps_u_fix = torch.randn(z.shape, generator=torch.Generator().manual_seed(9), dtype=z.dtype)
    w = distill.weighting("sds", a)
    got = lmc.lmc_gradient(identity, z, t, a, z_t, eps_c, eps_u, 10.0, w, normalize_target=False,
                           z_t_fixed=z_t_fix, eps_uncond_fixed=eps_u_fix)
    expected = w * 10.0 * (eps_c - eps_u) + w * (eps_u_fix - eps_fix)
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="both"):
        lmc.lmc_gradient(identity, z, t, a, z_t, eps_c, eps_u, 10.0, w, z_t_fixed=z_t_fix)


def test_fixed_noise_is_fixed_over_the_run_and_resumes():
    fixed = lmc.FixedNoise(seed=3)
    first = fixed((1, 4, 8, 8))
    assert torch.equal(first, fixed((1, 4, 8, 8)))
    assert not torch.equal(first, lmc.FixedNoise(seed=4)((1, 4, 8, 8)))
    resumed = lmc.FixedNoise(seed=0)
    resumed.load_state_dict(fixed.state_dict())
    assert torch.equal(first, resumed((1, 4, 8, 8)))


def test_a_perfect_corrective_cancels_the_manifold_term_and_keeps_global_statistics():
    """k(z, t) = N(x^) exactly gives L_lmc = 0; a zero-mean k leaves each sample's mean to L_cond."""
    z, t, a, _, z_t, eps_c, eps_u = noised_batch(3)
    x_hat = process.tweedie(z_t, eps_u, a)
    oracle = lambda z_, t_: lmc.normalize(x_hat)[0]  # noqa: E731
    w = distill.weighting("sds", a)
    got = lmc.lmc_gradient(oracle, z, t, a, z_t, eps_c, eps_u, 7.5, w)
    assert torch.allclose(got, w * 7.5 * (eps_c - eps_u), atol=1e-10, rtol=0)
    zero_mean = lambda z_, t_: z_ - z_.mean((1, 2, 3), keepdim=True)  # noqa: E731
    residual = lmc.manifold_residual(zero_mean, z, t, x_hat)
    assert residual.mean((1, 2, 3)).abs().max() < 1e-10


def test_corrective_unet_shapes_and_timestep_input():
    k = lmc.CorrectiveUNet(in_channels=4, base_channels=4, depth=2)
    x = torch.randn(2, 4, 9, 13)  # not a multiple of 2^depth: padded and cropped back
    y0, y1 = k(x, torch.tensor([0, 0])), k(x, torch.tensor([0, 900]))
    assert y0.shape == x.shape
    assert torch.equal(y0[0], y1[0]) and not torch.allclose(y0[1], y1[1])
    enc = lmc.timestep_encoding(torch.tensor([0, 250]), 1000)
    assert enc.shape == (2, 10)
    assert torch.allclose(enc[0], torch.tensor([0.0] * 5 + [1.0] * 5))
    assert torch.allclose(enc[1, :2], torch.tensor([math.sin(math.pi / 4), 1.0]))  # sin(2^k pi t / T)
    with pytest.raises(ValueError):
        lmc.CorrectiveUNet(depth=0)


def test_trainer_lowers_its_loss_on_a_fixed_batch(tiny_sd, load_script):
    """The script's pieces (images, VAE, the UNet's eps_u) and the core trainer on one fixed batch."""
    script = load_script("train_lmc")
    vae, unet, null, alphas, prediction_type = script.load_model(tiny_sd, "cpu", torch.float32)
    assert prediction_type == "epsilon"
    latents = script.encode(vae, script.load_images(None, 64), "cpu", torch.float32)
    assert len(latents) == 4 and all(z.shape[0] == 4 and min(z.shape[1:]) == 8 for z in latents)
    g = torch.Generator().manual_seed(0)
    batch = next(script.random_batches(latents, 4, 8, (20, 980), g))

    def eps_u(z_t, t):
        return unet(z_t, t, encoder_hidden_states=null.expand(z_t.shape[0], -1, -1)).sample

    torch.manual_seed(0)
    k = lmc.CorrectiveUNet(in_channels=4, base_channels=8, depth=2)
    losses = lmc.train_corrective(k, eps_u, itertools.repeat(batch), alphas, steps=60, lr=3e-3)
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0], losses
    z0, t, noise = batch
    with torch.no_grad():
        x_hat = lmc.one_step_denoised(eps_u, z0, t, alphas[t], noise)
        assert float(lmc.corrective_loss(k, z0, t, x_hat)) == pytest.approx(losses[-1], rel=0.5)


def test_train_script_end_to_end_and_checkpoint_metadata(tiny_sd, tmp_path, load_script):
    import skimage.data
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage.data.chelsea()).save(folder / "cat.PNG")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = load_script("train_lmc").main([
        "--model", tiny_sd, "--images", str(folder), "--steps", "3", "--resolution", "64",
        "--batch-size", "2", "--base-channels", "4", "--depth", "2", "--out", str(tmp_path / "k.safetensors"),
    ])
    k = lmc.load_corrective(out)
    assert k.config == dict(in_channels=4, base_channels=4, depth=2, time_dim=10, num_train_timesteps=1000)
    assert k.info["model"] == tiny_sd and k.info["steps"] == 3 and k.info["images"] == str(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no PNG or JPEG"):
        load_script("train_lmc").main(["--model", tiny_sd, "--images", str(empty), "--out", str(tmp_path / "x")])


def test_train_script_on_a_pixel_space_model_and_world_images(tiny_if, tmp_path, load_script):
    """DeepFloyd IF (the tiny IF-shaped pipeline): k_psi works on 3-channel pixels, the null prompt is T5's,
    the UNet's learned variance is dropped; --world takes the procedural world's training images."""
    script = load_script("train_lmc")
    vae, unet, null, alphas, prediction_type = script.load_model(tiny_if, "cpu", torch.float32)
    assert vae is None and null.shape == (1, 77, 32) and prediction_type == "epsilon"
    images = script.world_images(3)
    assert [tuple(x.shape) for x in images] == [(3, 64, 64)] * 3 and -1 <= min(float(x.min()) for x in images)
    assert script.encode(None, images, "cpu", torch.float32)[0].equal(images[0])
    out = script.main(["--model", tiny_if, "--world", "4", "--steps", "2", "--resolution", "32", "--batch-size", "2",
                       "--base-channels", "4", "--depth", "2", "--out", str(tmp_path / "k-if.safetensors")])
    k = lmc.load_corrective(out)
    assert k.config["in_channels"] == 3 and k.info["images"] == "world: 4 training-split images"
    with pytest.raises(SystemExit):
        script.parse_args(["--world", "4", "--images", str(tmp_path)])


def test_checkpoint_round_trips_without_unpickling(tmp_path, monkeypatch):
    torch.manual_seed(0)
    k = lmc.CorrectiveUNet(in_channels=3, base_channels=4, depth=2, num_train_timesteps=500)
    path = lmc.save_corrective(k, tmp_path / "sub" / "k.safetensors", info={"model": "m"})
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 400])

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must never be unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = lmc.load_corrective(path)
    monkeypatch.undo()
    assert loaded.config == k.config and loaded.info == {"model": "m"}
    with torch.no_grad():
        assert torch.equal(loaded(x, t), k.eval()(x, t))
    plain = load_file(str(path))  # a plain safetensors file: any safetensors reader opens it
    assert set(plain) == set(k.state_dict())


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_missing_or_malformed_checkpoints_give_clear_errors(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        lmc.load_corrective(missing)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(ValueError, match="garbage.safetensors"):
        lmc.load_corrective(garbage)

    marker = tmp_path / "unpickled"
    pickled = tmp_path / "evil.pt"
    torch.save({"state": _Payload(marker)}, pickled)
    with pytest.raises(ValueError, match="evil.pt"):
        lmc.load_corrective(pickled)
    assert not marker.exists()

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="foreign.safetensors.*not an LMC corrective"):
        lmc.load_corrective(foreign)

    k = lmc.CorrectiveUNet(base_channels=4, depth=2)
    wrong = tmp_path / "wrong.safetensors"
    lmc.save_corrective(k, wrong)
    meta_config = '{"in_channels": 4, "base_channels": 8, "depth": 2}'
    tensors = load_file(str(wrong))
    save_file(tensors, str(wrong), metadata={"format": lmc.CHECKPOINT_FORMAT, "version": lmc.CHECKPOINT_VERSION,
                                             "config": meta_config})
    with pytest.raises(ValueError, match="wrong.safetensors.*do not match"):
        lmc.load_corrective(wrong)
