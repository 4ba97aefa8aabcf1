"""scripts/write_variants.py: the shipped configs/variants/*.yaml are what it writes from configs/variants/src/
(``--check`` passes), and what it writes is the src file's comments, where it comes from, then the whole merged
config with no ``base:`` key; ``--check`` names each stale, missing or orphaned file. No threestudio needed
(the variants in threestudio: tests/host/test_variants.py)."""
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from dreamsampler_launcher.config_base import load_with_base

from .conftest import REPO

SCRIPT = REPO / "scripts" / "write_variants.py"


def test_the_shipped_variants_are_written():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = sorted((REPO / "configs" / "variants").glob("*.yaml"))
    assert [p.name for p in written] == sorted(p.name for p in (REPO / "configs" / "variants" / "src").glob("*.yaml"))
    assert len(written) == 9
    for path in written:
        assert "base" not in OmegaConf.load(path), path


@pytest.fixture
def tree(tmp_path):
    """base.yaml <- src/v.yaml (with a comment header), written into out/."""
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "base.yaml").write_text("# the base\nname: base\nsystem:\n  mode: a # why a\n  steps: ${trainer.n}\n"
                                        "trainer:\n  n: 10\n")
    (tmp_path / "src" / "v.yaml").write_text("# v: the base with mode b\n#   run it like this\nbase: ../base.yaml\n"
                                             "# not part of the header\nname: v\nsystem:\n  mode: b\n")
    return tmp_path


def test_a_written_variant_is_its_comments_its_origin_and_the_whole_merge(tree, load_script):
    script = load_script("write_variants")
    src, out = tree / "src", tree / "out"
    assert script.stale(src, out) == [f"{out / 'v.yaml'}: missing"]
    text = script.variant_text(src / "v.yaml", out)
    lines = text.splitlines()
    assert lines[:2] == ["# v: the base with mode b", "#   run it like this"]
    assert lines[2].startswith("# Written by `python scripts/write_variants.py` from ../src/v.yaml over ../base.yaml")
    assert "not part of the header" not in text
    (out / "v.yaml").write_text(text)
    assert script.stale(src, out) == []
    written = OmegaConf.load(out / "v.yaml")
    assert "base" not in written and written == load_with_base(src / "v.yaml")[0]
    assert OmegaConf.to_container(written) == {"name": "v", "system": {"mode": "b", "steps": "${trainer.n}"},
                                               "trainer": {"n": 10}}  # interpolations left for threestudio


def test_check_names_each_stale_or_orphaned_file(tree, load_script):
    script = load_script("write_variants")
    src, out = tree / "src", tree / "out"
    (out / "v.yaml").write_text(script.variant_text(src / "v.yaml", out))
    (tree / "base.yaml").write_text((tree / "base.yaml").read_text().replace("n: 10", "n: 20"))  # the base changed
    (out / "gone.yaml").write_text("name: gone\n")
    assert script.stale(src, out) == [f"{out / 'v.yaml'}: stale", f"{out / 'gone.yaml'}: no {src / 'gone.yaml'} "
                                      "to write it from"]


def test_check_exits_non_zero_naming_each_stale_file(load_script, monkeypatch, tmp_path, capsys):
    script = load_script("write_variants")
    monkeypatch.setattr(script, "VARIANTS", tmp_path)  # the shipped src files, written nowhere yet
    (tmp_path / "text-to-nerf-sds.yaml").write_text(script.variant_text(script.SRC / "text-to-nerf-sds.yaml", tmp_path))
    assert script.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'text-to-nerf-lmc.yaml'}: missing" in err and "text-to-nerf-sds.yaml" not in err
    assert script.main([]) == 0 and script.main(["--check"]) == 0  # written: the check passes
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == sorted(p.name for p in script.SRC.glob("*.yaml"))
