"""threestudio's own configs/dreamfusion-sd.yaml trains on the CPU with its own guidance and, with one
override, with ours (the drop-in promise): 3 steps at 32x32 on the tiny pipeline. The launcher ties the
guidance's schedule to trainer.max_steps when the config does not set guidance.trainer_max_steps."""
import pytest

from ..conftest import threestudio_root
from .runner import DEFAULT_SCHEDULE_3_STEPS, assert_finite_losses, assert_sane_image, run_config

pytestmark = pytest.mark.threestudio

STEPS = 3


@pytest.mark.parametrize("guidance", ["stable-diffusion-guidance", "dreamsampler-guidance"])
def test_dreamfusion_sd_trains_on_cpu(guidance, tiny_sd, tmp_path):
    overrides = [f"system.guidance_type={guidance}"]  # no guidance.trainer_max_steps: the launcher sets it
    run = run_config(threestudio_root() / "configs" / "dreamfusion-sd.yaml", tmp_path, tiny_sd, STEPS, overrides)

    validation = run.images(f"save/it{STEPS}-0.png")
    assert validation, f"no validation image in {run.trial_dir / 'save'}"
    img = assert_sane_image(validation[0])
    assert img.shape[0] == 32  # rgb | normal | opacity, side by side, at the 32x32 eval size
    for test_view in run.images(f"save/it{STEPS}-test/*.png"):
        assert_sane_image(test_view)
    assert run.images(f"save/it{STEPS}-test.mp4")

    assert [p.name for p in run.trial_dir.glob("ckpts/*")] == ["last.ckpt"]  # a smoke run keeps one checkpoint
    ckpt = run.checkpoint()
    assert ckpt["global_step"] == STEPS
    assert any(k.startswith("geometry.encoding.") for k in ckpt["state_dict"])

    losses = assert_finite_losses(run)
    assert len(losses["train/loss_sds"]) == STEPS
    if guidance == "dreamsampler-guidance":
        timesteps = run.series("train/timestep")
        assert timesteps[0] == 980 and timesteps[-1] == 20  # max_step -> min_step over the run's 3 steps
        assert "the schedule follows trainer.max_steps" in run.log
        assert all(a > b for a, b in zip(timesteps, timesteps[1:]))


def test_dreamfusion_sd_trains_with_dreamsampler_on_a_v_prediction_model(tiny_sd_v, tmp_path):
    """The drop-in on an SD 2.x-shaped (v-predicting) pipeline: the same run, finite losses, the schedule spread."""
    run = run_config(threestudio_root() / "configs" / "dreamfusion-sd.yaml", tmp_path, tiny_sd_v, STEPS,
                     ["system.guidance_type=dreamsampler-guidance"])
    assert_finite_losses(run)
    assert run.series("train/timestep") == DEFAULT_SCHEDULE_3_STEPS
    assert_sane_image(run.images(f"save/it{STEPS}-0.png")[0])


@pytest.mark.parametrize("config", ["sdi.yaml", "magic3d-coarse-sd.yaml"])
def test_the_one_line_swap_trains_in_threestudios_other_configs(config, tiny_sd, tmp_path):
    """The swap into threestudio's SDI and Magic3D (coarse) configs: sdi.yaml weighs its guidance's loss by
    lambda_sdi, which the launcher gives our loss_sds; the schedule follows the run; losses finite."""
    run = run_config(threestudio_root() / "configs" / config, tmp_path, tiny_sd, STEPS,
                     ["system.guidance_type=dreamsampler-guidance"])
    losses = assert_finite_losses(run)
    assert len(losses["train/loss_sds"]) == STEPS
    assert run.series("train/timestep")[0] > run.series("train/timestep")[-1]
    if config == "sdi.yaml":
        assert "loss_sds takes the config's lambda_sdi" in run.log
    for test_view in run.images(f"save/it{STEPS}-test/*.png"):
        assert_sane_image(test_view)
