"""configs/variants/: every variant is the whole config scripts/write_variants.py writes from
configs/variants/src/<name>.yaml (no ``base:`` key: threestudio's own load_config takes the file as it is), it
differs from its base config exactly in what its src file states, its smoke settings are its base config's (the
degraded-view variants' world runs keep eq. 18 as the prior, their mode's place),
and one variant per guidance mode trains 2 steps in real threestudio (CPU, tiny pipeline; the lmc one with a
corrective trained here by scripts/train_lmc.py)."""

import pytest
from omegaconf import OmegaConf

from dreamsampler_launcher.config_base import load_with_base
from dreamsampler_launcher.smoke import file_overrides, smoke_file, smoke_overrides

from .runner import REPO, assert_finite_losses, run_config

pytestmark = pytest.mark.threestudio

VARIANTS = sorted((REPO / "configs" / "variants").glob("*.yaml"))
SRC = REPO / "configs" / "variants" / "src"
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


def base_config(variant):
    """The shipped config the variant's src file names as its base."""
    _, chain = load_with_base(SRC / variant.name)
    assert len(chain) == 2 and chain[0].parent == REPO / "configs"
    return chain[0]


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
    assert {v.name for v in VARIANTS} == {p.name for p in SRC.glob("*.yaml")}
    assert set(RUN) <= {v.stem for v in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.stem for v in VARIANTS])
def test_variant_is_its_base_plus_what_its_src_states(variant):
    written = OmegaConf.load(variant)
    assert "base" not in written  # a key threestudio's launch.py rejects
    merged, _ = load_with_base(SRC / variant.name)
    assert OmegaConf.to_container(written) == OmegaConf.to_container(merged)
    base = leaves(OmegaConf.to_container(OmegaConf.load(base_config(variant))))
    stated = leaves(OmegaConf.to_container(OmegaConf.load(SRC / variant.name)))
    stated.pop("base")
    got = leaves(OmegaConf.to_container(written))
    assert {k: v for k, v in got.items() if base.get(k, object()) != v} == stated
    assert set(base) <= set(got)
    assert written.system.guidance.mode == variant.stem.rsplit("-", 1)[1]
    assert written.name == f"dreamsampler-{variant.stem}"  # its own output folder
    if written.system.guidance.mode in ("sds", "bridge") and "nerf" in variant.stem:  # as their authors ran them:
        assert written.system.guidance.weighting_strategy == "sds"  # w = 1 - abar (eq. 21 fixes the SVG's form)


# what a degraded-view variant's smoke file adds: its mode as eq. 18's prior, where the base's smoke run fits
# consistent targets (system.prior) on the data views only
EQ18_SMOKE = {"world": {"data": {"novel_view_prob": 0.5}, "system": {"prior": "eq18", "target_rounds": 1}}}


def own_smoke(variant):
    return EQ18_SMOKE if variant.stem.startswith("degraded-nerf-") else {}


@pytest.mark.parametrize("world", [False, True], ids=["tiny", "world"])
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.stem for v in VARIANTS])
def test_variant_smoke_settings_are_its_base_configs(variant, world, ts):
    """A variant has no ``base:`` chain: its smoke file names its base config's and adds nothing but, for the
    degraded-view variants, eq. 18 as the world run's prior, so its smoke run gets its base config's overrides with
    those last (``ts``: threestudio's resolvers)."""
    base, own = base_config(variant), own_smoke(variant)
    assert load_with_base(smoke_file(variant))[1] == [smoke_file(base), smoke_file(variant)]
    written = OmegaConf.to_container(OmegaConf.load(smoke_file(variant)))
    assert written == {"base": f"../../smoke/{base.name}", **own}
    added = own.get("world", {}) if world else {}

    def merged(overrides):  # a list of dotted overrides as the config it makes (later ones win)
        return OmegaConf.to_container(OmegaConf.from_dotlist(overrides))

    assert merged(file_overrides(variant, world)) == merged(file_overrides(base, world) + leaf_list(added))
    user = ["system.guidance.lmc_checkpoint=k.safetensors"] if variant.stem.endswith("-lmc") else []
    assert merged(smoke_overrides([variant], STEPS, "MODEL", user, world=world)) == \
        merged(smoke_overrides([base], STEPS, "MODEL", user, world=world) + leaf_list(added))


def leaf_list(node):
    """``node``'s leaves as dotted overrides."""
    return [f"{k}={v}" for k, v in leaves(node).items()]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.stem for v in VARIANTS])
def test_variant_validates_in_threestudio(variant, ts, tiny_sd, corrective, tmp_path):
    """The variant file itself through threestudio's own load_config (no launcher merge) with the smoke run's
    overrides, then the system's and the guidance's Config (unknown or mistyped fields fail here)."""
    from threestudio.utils.config import load_config, parse_structured

    overrides = smoke_overrides([variant], STEPS, tiny_sd, extra_overrides(variant, corrective))
    cfg = load_config(str(variant), cli_args=overrides + [f"exp_root_dir={tmp_path}"])  # load_config makes the trial folder
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
