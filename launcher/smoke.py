"""Overrides that turn a launch config into a few-step smoke run on the CPU, offline.

Used by ``run_threestudio.py --smoke N`` (the miniature world model) and ``--smoke-tiny N`` (the tiny random
pipeline), and so by ``launch.sh smoke`` and the host tests. In order, later entries winning:

1. generic, for the keys the config has: every ``pretrained_model_name_or_path`` under ``system`` -> the
   model, a missing ``system.prompt_processor.prompt`` -> a prompt the model knows, NeRF renderers at 32
   samples per ray, threestudio's ``random-camera-datamodule`` at 32x32, ``trainer.max_steps`` =
   ``trainer.val_check_interval`` = N (one validation, at the end), one checkpoint (``last.ckpt``);
2. the config's smoke file, ``<config folder>/smoke/<config file name>`` (for each config of a ``base:``
   chain, the furthest base first): a YAML mapping with up to three sections in the config's own layout,
   ``all`` (both flags), ``tiny`` (``--smoke-tiny``) and ``world`` (``--smoke``), for what only the config's
   author knows: small canvases, a data scene, the settings measured to work on the miniature model. A smoke
   file may itself name a base smoke file (``base:``, relative to it; ``config_base.py``) and is merged over
   it, section by section and key by key, before its ``all`` and then its ``tiny`` or ``world`` entries are
   taken: so a shipped variant, ``configs/variants/<name>.yaml``, a whole config with no ``base:`` chain,
   gets its base config's smoke settings from ``configs/variants/smoke/<name>.yaml``, which names them;
3. the caller's overrides. A caller's ``key=value`` replaces every earlier entry at ``key`` or below it, so
   ``data.operator="{type: downsample, factor: 4}"`` is the whole operator, not merged into a smoke blur.

A value still missing (``???``) after that is reported with the config file and the key to set.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List

from omegaconf import OmegaConf

TINY_PROMPT = "a hamburger"  # the tiny pipeline's weights are random: any prompt draws noise
WORLD_PROMPT = "a red sphere"  # words the miniature world model was trained on
SMOKE_SIZE = 32
SMOKE_SAMPLES_PER_RAY = 32
SMALL_DATA = {  # data modules of threestudio itself whose defaults render large eval views
    "random-camera-datamodule": {
        "width": SMOKE_SIZE,
        "height": SMOKE_SIZE,
        "eval_width": SMOKE_SIZE,
        "eval_height": SMOKE_SIZE,
        "n_val_views": 1,
        "n_test_views": 2,
    },
}
SECTIONS = ("all", "tiny", "world")


def smoke_file(config: Path) -> Path:
    """Where the smoke settings of ``config`` live: ``<its folder>/smoke/<its file name>``."""
    config = Path(config)
    return config.parent / "smoke" / config.name


def _dotlist(node, prefix: str = "") -> List[str]:
    """``key=value`` overrides of every leaf of a mapping (lists are leaves; values as JSON, which YAML reads)."""
    if OmegaConf.is_dict(node) or isinstance(node, dict):
        out = []
        for key, value in (node.items_ex(resolve=False) if OmegaConf.is_dict(node) else node.items()):
            out += _dotlist(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if OmegaConf.is_list(node):
        node = OmegaConf.to_container(node, resolve=False)
    return [f"{prefix}={json.dumps(node)}"]


def file_overrides(config: Path, world: bool) -> List[str]:
    """The ``all`` section of ``config``'s smoke file, then its ``world`` or ``tiny`` section (none: []); a smoke
    file with a ``base:`` key is merged over that smoke file first."""
    from .config_base import load_with_base

    path = smoke_file(config)
    if not path.is_file():
        return []
    try:
        sections, files = load_with_base(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"[smoke] {e}") from e
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        where = path if len(files) == 1 else f"{path} (merged over {', '.join(map(str, reversed(files[:-1])))})"
        raise SystemExit(f"[smoke] {where}: unknown section(s) {unknown}; a smoke file has {', '.join(SECTIONS)}")
    out = []
    for name in ("all", "world" if world else "tiny"):
        out += _dotlist(sections.get(name) or {})
    return out


def _model_keys(node: dict, prefix: str) -> List[str]:
    """Dotted paths of every ``pretrained_model_name_or_path`` below ``node`` (a plain dict)."""
    keys = []
    for name, value in node.items():
        if name == "pretrained_model_name_or_path":
            keys.append(f"{prefix}.{name}")
        elif isinstance(value, dict):
            keys += _model_keys(value, f"{prefix}.{name}")
    return keys


def generic_overrides(cfg, steps: int, model: str, prompt: str = TINY_PROMPT) -> List[str]:
    out = [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"]
    if OmegaConf.is_dict(cfg.get("checkpoint")):
        out.append("checkpoint.save_top_k=0")  # last.ckpt only: a smoke run is small, its checkpoints need not be
    system = cfg.get("system") or {}
    out += [f"{key}={model}" for key in _model_keys(OmegaConf.to_container(system, resolve=False), "system")]
    prompt_processor = system.get("prompt_processor")
    if OmegaConf.is_dict(prompt_processor) and OmegaConf.is_missing(prompt_processor, "prompt"):
        out.append(f"system.prompt_processor.prompt={prompt!r}")
    renderer = system.get("renderer")
    if OmegaConf.is_dict(renderer) and "num_samples_per_ray" in renderer:
        out.append(f"system.renderer.num_samples_per_ray={SMOKE_SAMPLES_PER_RAY}")
    for key, value in SMALL_DATA.get(cfg.get("data_type"), {}).items():
        out.append(f"data.{key}={value}")
    return out


def override_key(override: str) -> str:
    return override.split("=", 1)[0].strip().lstrip("+~")


def without_replaced(overrides: Iterable[str], user: Iterable[str]) -> List[str]:
    """``overrides`` less those at or below a key the caller sets (the caller's value is taken whole)."""
    keys = [override_key(u) for u in user]
    covered = lambda k: any(k == u or k.startswith(u + ".") for u in keys)
    return [o for o in overrides if not covered(override_key(o))]


def smoke_overrides(chain: List[Path], steps: int, model: str, user: List[str] = (), world: bool = False) -> List[str]:
    """Overrides for an N-step smoke run of the config ``chain`` (its ``base:`` chain, furthest base first; the
    last file is the one given) on ``model`` (the miniature world model when ``world``); ``user`` wins."""
    from .config_base import load_with_base

    config = Path(chain[-1])
    cfg, _ = load_with_base(config)
    overrides = generic_overrides(cfg, steps, model, WORLD_PROMPT if world else TINY_PROMPT)
    for path in chain:
        overrides += file_overrides(path, world)
    overrides = without_replaced(overrides, user) + list(user)
    merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise SystemExit(
            f"[smoke] {config}: no value for {', '.join(missing)}; add it to {smoke_file(config)} "
            "(or pass the override)"
        )
    return overrides
