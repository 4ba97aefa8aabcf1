"""Save and resume mid-run: the resumed run continues the timestep schedule, the carried noise and
the weights exactly as the uninterrupted run (degraded-view NeRF: its batches are a function of the
step). The 64-px tiny pipeline: what is compared does not depend on the size, the VAE's time at 512 does."""
import pytest

from .runner import REPO, assert_finite_losses, assert_same_state, run_config

pytestmark = pytest.mark.threestudio

CONFIG = REPO / "configs" / "dreamsampler-degraded-nerf.yaml"
FIXED = ["system.guidance.trainer_max_steps=3"]  # the same schedule whatever trainer.max_steps is


def test_resume_continues_schedule_carried_noise_and_weights(tiny_sd64, tmp_path):
    common = FIXED + ["checkpoint.every_n_train_steps=2", "checkpoint.save_top_k=-1"]  # every checkpoint kept
    whole = run_config(CONFIG, tmp_path / "whole", tiny_sd64, 4, common)
    resume = f"resume={whole.trial_dir / 'ckpts' / 'epoch=0-step=2.ckpt'}"
    resumed = run_config(CONFIG, tmp_path / "resumed", tiny_sd64, 4, common + [resume])

    steps = lambda run: [int(r["step"]) for r in run.metrics() if r.get("train/timestep")]
    assert steps(resumed) == [2, 3], "the resumed run did not start at step 2"
    assert resumed.series("train/timestep") == whole.series("train/timestep")[-2:]
    assert_finite_losses(resumed)
    a, b = whole.checkpoint("epoch=0-step=4.ckpt"), resumed.checkpoint("epoch=0-step=4.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    assert_same_state(b["dreamsampler_guidance"], a["dreamsampler_guidance"])
    assert_same_state(b["state_dict"], a["state_dict"], "weights")


def test_resume_after_the_consistent_targets_fits_the_same_targets(tiny_sd64, tmp_path):
    """system.prior=consistent-targets makes its targets at the warm-up's end (step 1 here) and, with
    target_rounds=2, at step 2: a run resumed at step 2 takes the first from the checkpoint, makes the second, and
    ends with the uninterrupted run's targets and weights."""
    common = ["system.prior=consistent-targets", "system.target_rounds=2", "data.novel_view_prob=0",
              "checkpoint.every_n_train_steps=2", "checkpoint.save_top_k=-1"]
    whole = run_config(CONFIG, tmp_path / "whole", tiny_sd64, 4, common)
    resume = f"resume={whole.trial_dir / 'ckpts' / 'epoch=0-step=2.ckpt'}"
    resumed = run_config(CONFIG, tmp_path / "resumed", tiny_sd64, 4, common + [resume])

    steps = lambda run: [int(r["step"]) for r in run.metrics() if r.get("train/loss_target")]
    assert steps(whole) == [1, 2, 3] and steps(resumed) == [2, 3]
    assert whole.log.count("consistent targets of the") == 2 and resumed.log.count("consistent targets of the") == 1
    a, b = whole.checkpoint("epoch=0-step=4.ckpt"), resumed.checkpoint("epoch=0-step=4.ckpt")
    assert_same_state(b["dreamsampler_view_targets"], a["dreamsampler_view_targets"], "targets")
    assert_same_state(b["state_dict"], a["state_dict"], "weights")
