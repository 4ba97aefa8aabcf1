"""``base:`` in launch configs (config_base.py) and in smoke files, and the smoke files of a chain (smoke.py); no
threestudio needed."""
import pytest
from omegaconf import OmegaConf

from dreamsampler_launcher.config_base import load_with_base, merged_config

BASE = """\
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
        "base: mid.yaml\nname: leaf\nsystem:\n  guidance:\n    scale: 10.\n"
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


def test_the_merged_file_is_the_whole_config(chain, tmp_path):
    out = merged_config(chain / "sub" / "leaf.yaml", tmp_path / "merged")
    assert out.parent == tmp_path / "merged" and out.name.startswith("leaf-")
    assert OmegaConf.load(out) == load_with_base(chain / "sub" / "leaf.yaml")[0]
    assert merged_config(chain / "sub" / "leaf.yaml", tmp_path / "merged") == out  # named by content
    (chain / "sub" / "leaf.yaml").write_text((chain / "sub" / "leaf.yaml").read_text().replace("10.", "11."))
    assert merged_config(chain / "sub" / "leaf.yaml", tmp_path / "merged") != out


def test_a_config_without_base_is_used_as_it_is(chain, tmp_path):
    assert merged_config(chain / "base.yaml", tmp_path / "merged") == chain / "base.yaml"
    assert not (tmp_path / "merged").exists()


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


def test_smoke_files_of_a_chain_apply_base_first_and_the_caller_last(chain):
    """--smoke: the chain's ``all`` then ``world`` sections; --smoke-tiny: ``all`` then ``tiny``; a caller's key
    replaces every smoke entry at or below it."""
    from dreamsampler_launcher.smoke import smoke_overrides

    (chain / "smoke").mkdir()
    (chain / "smoke" / "base.yaml").write_text(
        'all:\n  system: {size: 8, prompt: "a b"}\nworld:\n  system:\n    image: "world:1"\n    op: {type: blur, k: 5}\n'
        "tiny:\n  system: {image: skimage:cat}\n")
    (chain / "sub" / "smoke").mkdir()
    (chain / "sub" / "smoke" / "leaf.yaml").write_text("all:\n  system: {size: 4}\n")
    _, files = load_with_base(chain / "sub" / "leaf.yaml")
    world = smoke_overrides(files, 3, "MODEL", ["system.op={type: down, f: 4}"], world=True)
    tiny = smoke_overrides(files, 3, "MODEL", ["system.size=2"])
    assert "trainer.max_steps=3" in tiny and "checkpoint.save_top_k=0" not in tiny  # the chain has no checkpoint key
    assert world[-5:] == ['system.size=8', 'system.prompt="a b"', 'system.image="world:1"', "system.size=4",
                          "system.op={type: down, f: 4}"]  # the caller's operator whole, not merged into the blur
    assert tiny[-3:] == ['system.prompt="a b"', 'system.image="skimage:cat"', "system.size=2"]
    assert not [o for o in tiny if o.startswith("system.size=") and o != "system.size=2"]
    (chain / "smoke" / "base.yaml").write_text("wrld: {}\n")
    with pytest.raises(SystemExit, match="unknown section"):
        smoke_overrides(files, 3, "MODEL")


def test_a_smoke_file_may_name_a_base_smoke_file(chain):
    """configs/variants/smoke/<name>.yaml names its base config's smoke file: merged over it section by section,
    key by key, then read as one smoke file (``all``, then ``tiny`` or ``world``)."""
    from dreamsampler_launcher.smoke import file_overrides

    (chain / "smoke").mkdir()
    (chain / "smoke" / "base.yaml").write_text(
        'all:\n  system: {size: 8, prompt: "a b"}\nworld:\n  system:\n    image: "world:1"\n'
        "tiny:\n  system: {image: skimage:cat}\n")
    (chain / "whole.yaml").write_text(BASE)  # a whole config, no base: chain, whose smoke file names base's
    (chain / "sub" / "smoke").mkdir()
    (chain / "sub" / "smoke" / "whole.yaml").write_text("base: ../../smoke/base.yaml\n")
    (chain / "sub" / "whole.yaml").write_text(BASE)
    for world in (False, True):
        assert file_overrides(chain / "sub" / "whole.yaml", world) == file_overrides(chain / "base.yaml", world)
    (chain / "sub" / "smoke" / "whole.yaml").write_text(
        "base: ../../smoke/base.yaml\nall:\n  system: {size: 4}\nworld:\n  system: {op: blur}\n")
    assert file_overrides(chain / "sub" / "whole.yaml", True) == [
        "system.size=4", 'system.prompt="a b"', 'system.image="world:1"', 'system.op="blur"']
    (chain / "sub" / "smoke" / "whole.yaml").write_text("base: ../nowhere.yaml\n")
    with pytest.raises(SystemExit, match=r"\[smoke\].*whole.yaml.*nowhere.yaml"):
        file_overrides(chain / "sub" / "whole.yaml", True)
    (chain / "sub" / "smoke" / "whole.yaml").write_text("base: ../../smoke/base.yaml\n")
    (chain / "smoke" / "base.yaml").write_text("wrld: {}\n")
    with pytest.raises(SystemExit, match=r"whole.yaml \(merged over .*base.yaml\): unknown section"):
        file_overrides(chain / "sub" / "whole.yaml", True)
