"""``benchmarks/guidance_step.py`` on the tiny pipeline (CPU): every row runs, and the SDI pair
(threestudio's ``stable-diffusion-sdi-guidance`` and ours with ``mode: sdi``, sdi.yaml's fields) makes the
same UNet evaluations per step, counted at each UNet's forward. Nothing about time or memory is asserted."""
import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO

pytestmark = [pytest.mark.threestudio, pytest.mark.slow]

N_STEPS = 10  # sdi.yaml's inversion_n_steps (the script's SDI rows use it)


def sdi_unet_evals(t: int, scheduler: dict, n_steps: int = N_STEPS, T: int = 1000) -> int:
    """UNet evaluations of one image's SDI step at timestep t, from threestudio's code:

    ``get_inversion_timesteps`` takes the DDIM grid of ``n_steps`` (``leading``: 0, T/n, ... + steps_offset)
    below t, prepends one grid step below its first (a negative timestep) and appends t + delta: k + 2
    timesteps for k grid points below t. ``invert_noise`` calls ``predict_noise`` once per consecutive pair,
    k + 1 times, at the inversion's CFG scale; ``compute_grad_sdi`` calls it once more at t. Each call is a CFG
    pair (the latent twice: cond and uncond), so 2 (k + 2) images, 2 (n_steps + 2) = 24 when t lies above the
    whole grid (t >= 902 on SD's grid 1, 101, ..., 901), not 2 (n_steps + 1): the inversion's first call
    starts below the grid and its last ends past t."""
    assert scheduler.get("timestep_spacing", "leading") == "leading"
    grid = [j * (T // n_steps) + scheduler.get("steps_offset", 0) for j in range(n_steps)]
    k = sum(g < t for g in grid)
    return 2 * (k + 2)


def test_sdi_pair_counts_the_same_unet_evaluations(tiny_sd, tmp_path):
    steps = 2  # t annealed from 0.98 to 0.25 over the script's warmup + steps: 980 (24 evaluations), then 615 (18)
    out = tmp_path / "guidance_step.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "guidance_step.py"), "--model", tiny_sd, "--size", "64",
           "--warmup", "0", "--steps", str(steps), "--threads", "2", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "logged unet_evals = counted: yes" in run.stdout, run.stdout[-3000:]
    rows = {r["label"]: r for r in json.loads(out.read_text())["rows"]}
    theirs = rows["stable-diffusion-sdi-guidance (threestudio)"]
    ours = rows["dreamsampler-guidance mode=sdi"]

    with open(os.path.join(tiny_sd, "scheduler", "scheduler_config.json")) as f:
        scheduler = json.load(f)
    # threestudio's update_step with t_anneal (sdi.yaml: 0.25 / 0.98, trainer_max_steps = warmup + steps)
    annealed = [int(1000 * ((0.98 - 0.25) * (1 - i / steps) + 0.25)) for i in range(steps)]
    assert theirs["timesteps"] == ours["timesteps"] == annealed
    assert annealed[0] >= 902  # the first step inverts through the whole grid
    expected = [sdi_unet_evals(t, scheduler) for t in annealed]
    assert expected[0] == 2 * (N_STEPS + 2)
    assert theirs["unet_evals"] == ours["unet_evals"] == ours["unet_evals_logged"] == expected
    assert ours["unet_evals_per_step"] == theirs["unet_evals_per_step"]

    cfg_rows = ("stable-diffusion-guidance (threestudio)", "dreamsampler-guidance", "dreamsampler-guidance pixel_loss")
    for label in cfg_rows:
        assert rows[label]["unet_evals"] == [2] * steps, label  # one CFG pair
    for row in rows.values():
        assert row["ms_per_step"] > 0 and row["peak_mb"] >= 0
