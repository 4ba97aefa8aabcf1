"""``base:`` in launch configs (config_base.py, run_threestudio.expand_base); no threestudio needed."""
import pytest
from omegaconf import OmegaConf

from dreamsampler_launcher import run_threestudio
from dreamsampler_launcher.config_base import load_with_base, merged_config
from dreamsampler_launcher.smoke import config_smoke_lines

BASE = """\
# smoke: system.size=8 'system.prompt="a b"'
# smoke-world: system.image=world:1
name: base
system:
  prompt: ???
  size: 512
  guidance:
    mode: dreamsampler
    scale: 100.
    steps: ${trainer.max_steps}
  ops: [1, 2]
trainer:
  max_steps: 10
"""


@pytest.fixture
def chain(tmp_path):
    """base.yaml <- sub/mid.yaml <- sub/leaf.yaml, each base path relative to its file."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sub" / "mid.yaml").write_text(
        "base: ../base.yaml\nname: mid\nsystem:\n  guidance:\n    mode: sds\n  ops: [3]\n")
    (tmp_path / "sub" / "leaf.yaml").write_text(
        "# smoke: system.size=4\nbase: mid.yaml\nname: leaf\nsystem:\n  guidance:\n    scale: 10.\n"
        "    pp: ${system.prompt}\n")
    return tmp_path


def test_a_chain_merges_key_by_key_and_keeps_interpolations(chain):
    cfg, files = load_with_base(chain / "sub" / "leaf.yaml")
    assert files == [chain / "base.yaml", chain / "sub" / "mid.yaml", chain / "sub" / "leaf.yaml"]
    assert "base" not in cfg
    assert cfg.name == "leaf" and cfg.system.size == 512 and cfg.trainer.max_steps == 10
    assert OmegaConf.to_container(cfg.system.guidance) == {"mode": "sds", "scale": 10.0, "steps": "${trainer.max_steps}",
                                                        "pp": "${system.prompt}"}
    assert list(cfg.system.ops) == [3]  # a list is replaced, not appended to
    assert OmegaConf.is_missing(cfg.system, "prompt")
    cfg.system.prompt = "x"
    assert cfg.system.guidance.pp == "x" and cfg.system.guidance.steps == 10  # resolved at load time, not merge time


def test_the_merged_file_is_the_whole_config_with_the_chains_smoke_lines(chain, tmp_path):
    out = merged_config(chain / "sub" / "leaf.yaml", tmp_path / "merged")
    assert out.parent == tmp_path / "merged" and out.name.startswith("leaf-")
    assert OmegaConf.load(out) == load_with_base(chain / "sub" / "leaf.yaml")[0]
    # base's lines first, so the variant's win when smoke.py applies them in order
    assert config_smoke_lines(out) == ['system.size=8', 'system.prompt="a b"', "system.size=4"]
    assert config_smoke_lines(out, "smoke-world") == ["system.image=world:1"]
    assert merged_config(chain / "sub" / "leaf.yaml", tmp_path / "merged") == out  # named by content
    (chain / "sub" / "leaf.yaml").write_text((chain / "sub" / "leaf.yaml").read_text().replace("10.", "11."))
    assert merged_config(chain / "sub" / "leaf.yaml", tmp_path / "merged") != out


def test_a_config_without_base_is_used_as_it_is(chain, tmp_path):
    assert merged_config(chain / "base.yaml", tmp_path / "merged") == chain / "base.yaml"
    assert not (tmp_path / "merged").exists()
    argv = ["--config", str(chain / "base.yaml"), "--train"]
    assert run_threestudio.expand_base(argv) == argv


def test_expand_base_points_launch_py_at_the_merged_file(chain, monkeypatch, tmp_path):
    monkeypatch.setattr(run_threestudio, "MERGED_CONFIGS", tmp_path / "merged")
    leaf = str(chain / "sub" / "leaf.yaml")
    for argv in (["--train", "--config", leaf, "x=1"], ["--train", "--config=" + leaf, "x=1"]):
        got = run_threestudio.expand_base(argv)
        merged = run_threestudio.config_path(got)
        assert merged != leaf and OmegaConf.load(merged).name == "leaf"
        assert got[0] == "--train" and got[-1] == "x=1" and len(got) == len(argv)


def test_bad_bases_are_reported_with_the_file(chain, tmp_path):
    (chain / "loop_a.yaml").write_text("base: loop_b.yaml\n")
    (chain / "loop_b.yaml").write_text("base: loop_a.yaml\n")
    with pytest.raises(ValueError, match="loop_a.yaml.*loops back"):
        load_with_base(chain / "loop_a.yaml")
    (chain / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="orphan.yaml.*nowhere.yaml"):
        load_with_base(chain / "orphan.yaml")
    (chain / "empty.yaml").write_text("base: ''\n")
    with pytest.raises(ValueError, match="must be the path"):
        load_with_base(chain / "empty.yaml")
    with pytest.raises(SystemExit, match=r"\[run_threestudio\] --config .*orphan.yaml"):
        run_threestudio.expand_base(["--config", str(chain / "orphan.yaml")])


def test_smoke_on_the_world_model_adds_the_configs_world_lines(chain):
    """--smoke: the world model with the chain's # smoke-world: lines; --smoke-tiny: without them."""
    from dreamsampler_launcher.smoke import smoke_overrides

    leaf = chain / "sub" / "leaf.yaml"
    merged = merged_config(leaf, chain / "merged")
    world = smoke_overrides(merged, 3, "MODEL", ["system.size=2"], world=True)
    tiny = smoke_overrides(merged, 3, "MODEL", ["system.size=2"])
    assert world == tiny[:-1] + ["system.image=world:1", "system.size=2"]  # the caller's overrides still last
    assert "trainer.max_steps=3" in tiny and "system.size=4" in tiny
