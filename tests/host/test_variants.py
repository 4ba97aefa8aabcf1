"""configs/variants/: every variant differs from its base config exactly in what it states, loads and
validates in threestudio, and one variant per guidance mode trains 2 steps in real threestudio
(CPU, tiny pipeline; the lmc one with a corrective trained here by scripts/train_lmc.py)."""

import pytest
from omegaconf import OmegaConf

from dreamsampler_launcher.config_base import load_with_base, merged_config
from dreamsampler_launcher.smoke import smoke_overrides

from .runner import REPO, assert_finite_losses, run_config

pytestmark = pytest.mark.threestudio

VARIANTS = sorted((REPO / "configs" / "variants").glob("*.yaml"))
RUN = ["text-to-nerf-bridge", "degraded-nerf-sds", "svg-deblur-lmc"]  # each mode once, each system once
STEPS = 2


def leaves(cfg, prefix=""):
    """{dotted key: value} of a config's leaves, interpolations unresolved."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture(scope="module")
def corrective(tiny_sd, tmp_path_factory, load_script):
    """A k_psi checkpoint for the tiny pipeline: a few steps of the trainer on scikit-image photos."""
    script = load_script("train_lmc")
    out = tmp_path_factory.mktemp("lmc") / "k.safetensors"
    return str(script.main(["--model", tiny_sd, "--steps", "3", "--resolution", "64", "--batch-size", "2",
                            "--base-channels", "4", "--depth", "2", "--out", str(out)]))


def extra_overrides(variant, corrective):
    return [f"system.guidance.lmc_checkpoint={corrective}"] if variant.stem.endswith("-lmc") else []


def test_every_system_and_mode_has_a_variant():
    assert {v.stem for v in VARIANTS} == {f"{s}-{m}" for s in ("text-to-nerf", "degraded-nerf", "svg-deblur")
                                          for m in ("sds", "bridge", "lmc")}
    assert set(RUN) <= {v.stem for v in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.stem for v in VARIANTS])
def test_variant_is_its_base_plus_what_it_states(variant):
    merged, chain = load_with_base(variant)
    assert len(chain) == 2 and chain[0].parent == REPO / "configs"
    base = leaves(OmegaConf.to_container(OmegaConf.load(chain[0])))
    stated = leaves(OmegaConf.to_container(OmegaConf.load(variant)))
    stated.pop("base")
    got = leaves(OmegaConf.to_container(merged))
    assert {k: v for k, v in got.items() if base.get(k, object()) != v} == stated
    assert set(base) <= set(got)
    assert merged.system.guidance.mode == variant.stem.rsplit("-", 1)[1]
    assert merged.name == f"dreamsampler-{variant.stem}"  # its own output folder
    if merged.system.guidance.mode in ("sds", "bridge") and "nerf" in variant.stem:  # as their authors ran them:
        assert merged.system.guidance.weighting_strategy == "sds"  # w = 1 - abar (eq. 21 fixes the SVG's form)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.stem for v in VARIANTS])
def test_variant_validates_in_threestudio(variant, ts, tiny_sd, corrective, tmp_path):
    """The merged file run_threestudio.py hands to launch.py, through threestudio's own load_config
    with the smoke run's overrides, then the system's and the guidance's Config (unknown or mistyped
    fields fail here)."""
    from threestudio.utils.config import load_config, parse_structured

    path = merged_config(variant, tmp_path)
    overrides = smoke_overrides(load_with_base(variant)[1], STEPS, tiny_sd, extra_overrides(variant, corrective))
    cfg = load_config(str(path), cli_args=overrides + [f"exp_root_dir={tmp_path}"])  # load_config makes the trial folder
    system = parse_structured(ts.find(cfg.system_type).Config, cfg.system)
    guidance = parse_structured(ts.find(system.guidance_type).Config, system.guidance)
    assert guidance.mode == variant.stem.rsplit("-", 1)[1]
    if guidance.mode == "bridge":
        assert 0 <= guidance.bridge_start_step < guidance.trainer_max_steps
        assert guidance.prompt_processor["prompt"]


@pytest.mark.parametrize("name", RUN)
def test_variant_trains(name, tiny_sd, corrective, tmp_path):
    variant = REPO / "configs" / "variants" / f"{name}.yaml"
    in_process = ["system.prompt_processor.spawn=false"]  # no helper process per prompt: faster here
    run = run_config(variant, tmp_path, tiny_sd, STEPS, overrides=in_process + extra_overrides(variant, corrective))
    assert run.checkpoint()["global_step"] == STEPS
    parsed = OmegaConf.load(run.trial_dir / "configs" / "parsed.yaml")
    assert parsed.system.guidance.mode == name.rsplit("-", 1)[1]
    assert "base" not in OmegaConf.load(run.trial_dir / "configs" / "raw.yaml")
    assert_finite_losses(run)
    assert run.series("train/loss_sds"), f"{name}: the guidance's loss was never logged"
    if name.endswith("-bridge"):
        assert "guidance source prompt y_src: 'a hamburger, oversaturated" in run.log
