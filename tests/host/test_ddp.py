"""Lightning DDP on 2 CPU processes (gloo), the path multi-GPU users take (`--gpu 0,1`): every rank
follows the same timestep schedule and the run saves its checkpoint once."""
import pytest

from ..conftest import threestudio_root
from .runner import assert_finite_losses, run_config

pytestmark = pytest.mark.threestudio

STEPS = 3


def test_two_process_ddp_follows_one_schedule_and_saves_once(tiny_sd, tmp_path):
    run = run_config(
        threestudio_root() / "configs" / "dreamfusion-sd.yaml",
        tmp_path,
        tiny_sd,
        STEPS,
        ["system.guidance_type=dreamsampler-guidance", f"system.guidance.trainer_max_steps={STEPS}", "tag=ddp"],
        processes=2,
        record=("train/timestep",),
    )
    assert "world_size=2" in run.log or "distributed_backend=gloo" in run.log, "Lightning did not start 2 processes"
    records = run.records()
    assert sorted(records) == [0, 1], f"records from ranks {sorted(records)}"
    assert len(records[0]) == STEPS and records[0] == records[1]  # same (step, timestep) on both ranks
    timesteps = [value for _, _, value in records[0]]
    assert all(a > b for a, b in zip(timesteps, timesteps[1:]))

    ckpts = sorted(p.name for p in (run.trial_dir / "ckpts").iterdir())
    assert ckpts == ["last.ckpt"]  # one file, written once (a smoke run keeps only last.ckpt)
    assert run.checkpoint()["global_step"] == STEPS
    assert_finite_losses(run)
