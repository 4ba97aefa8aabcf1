"""A run killed with SIGKILL after a periodic checkpoint, resumed as the README says (the trial's own
parsed.yaml, ``resume=<ckpt>``): it ends with the uninterrupted run's weights, one CSV log with every
step once (one TensorBoard folder too), and its progress bar shows the total."""
import csv
import re
import signal
import time

import pytest

from .runner import REPO, assert_same_state, run_config, start_config, trial_dir

pytestmark = pytest.mark.threestudio

CONFIG = REPO / "configs" / "dreamsampler-degraded-nerf.yaml"
STEPS = 4
SMALL = [  # a fixed 3-step schedule; 4 data views and a small hash grid keep the three runs short
    "system.guidance.trainer_max_steps=3",
    "checkpoint.every_n_train_steps=2",
    "checkpoint.save_top_k=-1",  # every checkpoint (a smoke run keeps only last.ckpt)
    "data.ring_views=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
]


def train_steps(metrics_csv):
    """The steps of the training rows logged so far (an empty list while the file is being rewritten)."""
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if any(v for k, v in r.items() if k.startswith("train/"))]


def wait_for_checkpoint(proc, out_dir, step, timeout=300):
    """Wait until the run has its checkpoint at ``step`` and has logged step ``step``, the first after it."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before it was killed; {out_dir / 'run.log'}"
        assert time.monotonic() < deadline, f"no checkpoint at step {step} after {timeout} s; {out_dir / 'run.log'}"
        trials = list((out_dir / "outputs").glob("*/*"))
        if trials and (trials[0] / "ckpts" / f"epoch=0-step={step}.ckpt").is_file():
            if step in train_steps(trials[0] / "csv_logs" / "version_0" / "metrics.csv"):
                return
        time.sleep(0.05)


def test_killed_run_resumes_into_one_log_with_the_same_weights(tiny_sd, tmp_path):
    whole = run_config(CONFIG, tmp_path / "whole", tiny_sd, STEPS, SMALL)

    out = tmp_path / "killed"
    proc = start_config(CONFIG, out, tiny_sd, STEPS, SMALL)
    try:
        wait_for_checkpoint(proc, out, 2)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-run; also when the wait failed, so that nothing is left running
    assert proc.wait(timeout=60) == -signal.SIGKILL
    trial = trial_dir(out)
    resumed = run_config(trial / "configs" / "parsed.yaml", out, tiny_sd, STEPS,
                         [f"resume={trial / 'ckpts' / 'epoch=0-step=2.ckpt'}", "checkpoint.save_top_k=-1"])

    assert resumed.trial_dir == trial
    for logs in ("csv_logs", "tb_logs"):
        assert sorted(p.name for p in (trial / logs).iterdir()) == ["version_0"], f"{logs}: a second log folder"
    assert train_steps(trial / "csv_logs" / "version_0" / "metrics.csv") == list(range(STEPS))
    assert resumed.metrics() == whole.metrics(), "the continued log differs from the uninterrupted run's"

    a, b = whole.checkpoint(f"epoch=0-step={STEPS}.ckpt"), resumed.checkpoint(f"epoch=0-step={STEPS}.ckpt")
    assert a["global_step"] == b["global_step"] == STEPS
    assert_same_state(b["dreamsampler_guidance"], a["dreamsampler_guidance"])
    assert_same_state(b["state_dict"], a["state_dict"], "weights")

    assert f"| {STEPS}/{STEPS} [" in resumed.log, "the resumed run's progress bar never showed its total"
    assert not re.search(r"\| [1-9]\d*/\? \[", resumed.log), "a progress bar without its total"
