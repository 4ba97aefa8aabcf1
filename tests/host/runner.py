"""Run a launch config in real threestudio, in a subprocess, and read what it wrote.

    from .runner import run_config

    run = run_config(config, tmp_path, tiny_sd, steps=3, overrides=["system.x=1"])
    run.trial_dir                 # <tmp_path>/outputs/<name>/<tag>[@timestamp]
    run.series("train/loss_sds")  # logged values, step order (csv_logs metrics.csv)
    run.images("save/it3-*.png"), run.checkpoint()
    proc = start_config(config, tmp_path, tiny_sd, steps=4)  # the same run, not waited for (to kill it)

It calls ``python -m dreamsampler_launcher.run_threestudio --cpu --smoke-tiny N`` (threestudio's own launch.py on the CPU backend; the
tiny pipeline; small sizes; the config's ``# smoke:`` lines, see smoke.py) with ``exp_root_dir``
under ``out_dir``. ``processes=2`` runs Lightning DDP on 2 CPU processes (gloo).
``record=("train/timestep",)`` makes every rank write those logged values to
``out_dir/records/rank<r>.tsv`` (see log_probe.py), for what only rank 0's CSV would not show.
"""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import imageio.v3 as iio
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
RUN = ["-m", "dreamsampler_launcher.run_threestudio"]
PROBE = Path(__file__).with_name("log_probe.py")
# the guidance's default (sqrt, HiFA's) schedule over a 3-step run, by its formula t_k = 20 + 960 (1 - sqrt(k / 2))
DEFAULT_SCHEDULE_3_STEPS = [980.0, float(int(20 + 960 * (1 - math.sqrt(0.5)))), 20.0]


class RunFailed(AssertionError):
    """The threestudio run exited non-zero; the message ends with the tail of its log."""


@dataclass
class Run:
    trial_dir: Path
    log: str
    records_dir: Path

    def metrics(self) -> List[Dict[str, str]]:
        """Rows of the run's Lightning CSV log."""
        path = self.trial_dir / "csv_logs" / "version_0" / "metrics.csv"
        with open(path) as f:
            return list(csv.DictReader(f))

    def series(self, key: str) -> List[float]:
        """Every logged value of ``key``, in step order."""
        rows = [r for r in self.metrics() if r.get(key) not in (None, "")]
        return [float(r[key]) for r in sorted(rows, key=lambda r: int(r["step"]))]

    def images(self, pattern: str) -> List[Path]:
        return sorted(self.trial_dir.glob(pattern))

    def checkpoint(self, name: str = "last.ckpt") -> dict:
        return torch.load(self.trial_dir / "ckpts" / name, map_location="cpu", weights_only=False)

    def records(self) -> Dict[int, List[Tuple[int, str, float]]]:
        """rank -> [(global_step, key, value)] written by every rank (``record=`` in run_config)."""
        out = {}
        for path in sorted(self.records_dir.glob("rank*.tsv")):
            rows = [line.split("\t") for line in path.read_text().splitlines()]
            out[int(path.stem[4:])] = [(int(s), k, float(v)) for s, k, v in rows]
        return out


def command(config, out_dir, tiny_sd: str, steps: int = 3, overrides: Sequence[str] = (), processes: int = 1,
            mode: str = "--train", record: Sequence[str] = (), tiny_if: Optional[str] = None) -> Tuple[List[str], Dict[str, str]]:
    """The command line and environment of :func:`run_config`'s run (``tiny_if``: the tiny IF pipeline an IF
    config's smoke run takes)."""
    out_dir = Path(out_dir)
    cmd = [sys.executable, *([str(PROBE)] if record else RUN), "--config", str(config), mode, "--cpu"]
    cmd += ["--smoke-tiny", str(steps), f"exp_root_dir={out_dir / 'outputs'}"]
    if processes > 1:
        cmd += ["--gpu", ",".join(str(i) for i in range(processes))]
    cmd += list(overrides)
    env = dict(os.environ, DREAMSAMPLER_TINY_SD=str(tiny_sd))
    if tiny_if is not None:
        env["DREAMSAMPLER_TINY_IF"] = str(tiny_if)
    env.pop("CUDA_VISIBLE_DEVICES", None)  # the process count comes from --gpu
    if record:
        env.update(DREAMSAMPLER_RECORD=",".join(record), DREAMSAMPLER_RECORD_DIR=str(out_dir / "records"))
    return cmd, env


def start_config(config, out_dir, tiny_sd: str, steps: int = 3, overrides: Sequence[str] = ()) -> subprocess.Popen:
    """Start :func:`run_config`'s run without waiting; its output goes to ``out_dir/run.log``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd, env = command(config, out_dir, tiny_sd, steps, overrides)
    with open(out_dir / "run.log", "w") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def trial_dir(out_dir) -> Path:
    """The one trial directory under ``out_dir/outputs``."""
    exp_root = Path(out_dir) / "outputs"
    trials = [p for p in exp_root.glob("*/*") if p.is_dir()]
    if len(trials) != 1:
        raise RunFailed(f"expected one trial directory under {exp_root}, found {trials}")
    return trials[0]


def run_config(
    config,
    out_dir,
    tiny_sd: str,
    steps: int = 3,
    overrides: Sequence[str] = (),
    processes: int = 1,
    mode: str = "--train",
    record: Sequence[str] = (),
    timeout: int = 900,
    tiny_if: Optional[str] = None,
) -> Run:
    """Run ``config`` for ``steps`` steps on the CPU; returns its one trial directory and log."""
    out_dir = Path(out_dir)
    cmd, env = command(config, out_dir, tiny_sd, steps, overrides, processes, mode, record, tiny_if)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.log").write_text(log)
    if proc.returncode != 0:
        tail = "\n".join(log.splitlines()[-60:])
        raise RunFailed(f"{Path(config).name} exited with {proc.returncode} ({out_dir / 'run.log'}):\n{tail}")
    return Run(trial_dir(out_dir), log, out_dir / "records")


def assert_sane_image(path: Path) -> np.ndarray:
    """A saved image a user would look at: readable, not all black, not one flat colour."""
    img = iio.imread(path).astype(np.float64)
    assert np.isfinite(img).all(), f"{path}: non-finite pixels"
    assert img.max() > 0, f"{path} is all black"
    assert img.std() > 0, f"{path} is one flat colour"
    return img


def assert_finite_losses(run: Run) -> Dict[str, List[float]]:
    """Every logged ``train/*`` value is finite, and at least one ``train/loss*`` was logged."""
    keys = [k for k in run.metrics()[0] if k.startswith("train/")]
    logged = {k: run.series(k) for k in keys}
    bad = {k: v for k, v in logged.items() if not all(math.isfinite(x) for x in v)}
    assert not bad, f"{run.trial_dir}: non-finite values logged {bad}"
    losses = {k: v for k, v in logged.items() if k.startswith("train/loss") and v}
    assert losses, f"{run.trial_dir}: no train/loss* logged"
    return losses


def assert_same_state(a, b, path="guidance state"):
    """``a`` equals ``b`` exactly, through dicts, lists and tensors; ``path`` names where they differ."""
    assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{path}: {m}")
    else:
        assert a == b, f"{path}: {a} vs {b}"
