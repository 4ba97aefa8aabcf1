"""The launcher's argument handling (no threestudio needed): config paths and where outputs land."""
import os

import pytest

from dreamsampler_launcher import run_threestudio


def write_config(tmp_path, exp_root_dir):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\nexp_root_dir: {exp_root_dir}\n")
    return str(path)


def test_relative_outputs_are_anchored_where_the_user_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--config", write_config(tmp_path, "outputs"), "--train"]
    assert run_threestudio.outputs_here(argv) == argv + [f"exp_root_dir={tmp_path / 'outputs'}"]


@pytest.mark.parametrize("extra", [["exp_root_dir=mine"], []])
def test_explicit_or_absolute_outputs_are_left_alone(tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    exp = "outputs" if extra else str(tmp_path / "abs")
    argv = ["--config", write_config(tmp_path, exp), "--train", *extra]
    assert run_threestudio.outputs_here(argv) == argv


def test_missing_config_names_the_path(tmp_path):
    with pytest.raises(SystemExit, match="--config nope.yaml: no such file"):
        run_threestudio.absolute_config(["--config", "nope.yaml"])
    argv = run_threestudio.absolute_config(["--config=" + write_config(tmp_path, "o")])
    assert os.path.isabs(argv[0].split("=", 1)[1])
