"""Data consistency alone (eq. 21 with l_SDS = 0) restores a synthetic icon from its degraded
measurement: paths initialised as in the paper are fitted to y = A(render of known paths)."""
import pytest
import torch

from dreamsampler.inverse.data_consistency import data_consistency
from dreamsampler.inverse.operators import build_operator
from dreamsampler.vector.rasterizer import render
from dreamsampler.vector.svg import init_scene, point_lr, shapes_scene, xing_loss

SIZE = 64


def fit(y, A, steps, seed=0):
    """Adam (betas 0.9, 0.9) on l_DC ||y - A g||^2 + 0.01 L_xing with the paper's lr schedule, scaled
    to the run (warm-up over the first third). Returns the renders before and after."""
    s = init_scene(32, SIZE, SIZE, radius=5.0, generator=torch.Generator().manual_seed(seed))
    params = [p.requires_grad_() for p in (s.points, s.colors, s.opacity, s.background)]
    opt = torch.optim.Adam(
        [{"params": [s.points], "lr": 0.02}, {"params": params[1:3], "lr": 0.001}, {"params": params[3:], "lr": 0.0001}],
        betas=(0.9, 0.9),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: point_lr(k, steps, warmup_steps=steps // 3) / 0.02)
    g = lambda: render(s.points, s.colors, s.opacity, s.background, SIZE, SIZE, backend="torch").permute(2, 0, 1)[None]
    before = g().detach()
    for _ in range(steps):
        opt.zero_grad()
        (data_consistency(y, A, g()) + 0.01 * xing_loss(s.points)).backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for p in params[1:]:
                p.clamp_(0, 1)
    return before, g().detach()


@pytest.mark.parametrize(
    "spec", [{"type": "blur", "kernel_size": 13, "sigma": 2.0}, {"type": "downsample", "factor": 4}], ids=["blur", "sr"]
)
def test_data_consistency_alone_lowers_the_measurement_error(spec):
    truth = shapes_scene(SIZE, SIZE)
    clean = render(truth.points, truth.colors, truth.opacity, truth.background, SIZE, SIZE, backend="torch").permute(2, 0, 1)[None]
    A = build_operator(spec)
    y = A(clean)
    x0, x = fit(y, A, steps=120)
    mse = lambda a, b: float(((a - b) ** 2).mean())
    before, after = mse(A(x0), y), mse(A(x), y)
    print(f"{spec['type']}: measurement MSE {before:.3e} -> {after:.3e}, clean-image MSE {mse(x0, clean):.3e} -> {mse(x, clean):.3e}")
    assert after < 0.05 * before
    assert mse(x, clean) < 0.1 * mse(x0, clean)  # the fit explains the clean image too, not only y


def test_measurement_size_mismatch_is_a_clear_error():
    A = build_operator({"type": "downsample", "factor": 8})
    with pytest.raises(ValueError, match="measurement size 16x16 does not match"):
        A.check_measurement(torch.zeros(1, 3, 16, 16), 512, 512)
    with pytest.raises(ValueError, match="shape"):
        data_consistency(torch.zeros(1, 3, 16, 16), A, torch.zeros(1, 3, 64, 64))
