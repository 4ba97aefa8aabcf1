"""Overrides that turn a launch config into a few-step smoke run on the tiny offline pipeline.

Used by ``run_threestudio.py --smoke N`` (and so by ``launch.sh smoke`` and the host tests). In order:

1. generic, for the keys the config has: every ``pretrained_model_name_or_path`` under ``system`` ->
   the tiny pipeline, a missing ``system.prompt_processor.prompt`` -> "a hamburger", NeRF renderers at 32
   samples per ray, threestudio's ``random-camera-datamodule`` at 32x32 with 1 validation and 2 test
   views, ``trainer.max_steps`` = ``trainer.val_check_interval`` = N (one validation, at the end);
2. the config's own ``# smoke: key=value ...`` comment lines (for what only the config's author
   knows: small canvases, a data folder, short warm-ups);
3. the caller's overrides.

A value still missing (``???``) after that is reported with the config file and the key to set.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

SMOKE_PROMPT = "a hamburger"
WORLD_PROMPT = "a red sphere"
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


def config_smoke_lines(config: Path, tag: str = "smoke") -> List[str]:
    """The ``key=value`` overrides on the config's ``# <tag>:`` comment lines (``smoke`` or ``smoke-world``)."""
    out, head = [], f"# {tag}:"
    for line in Path(config).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith(head):
            out += shlex.split(stripped[len(head) :])
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


def generic_overrides(cfg, steps: int, model: str, prompt: str = SMOKE_PROMPT) -> List[str]:
    out = [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"]
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


def smoke_overrides(config, steps: int, model: str, extra: List[str] = (), world: bool = False) -> List[str]:
    """Overrides for an N-step smoke run of ``config`` on ``model`` (the world model when ``world``);
    ``extra`` wins over the rest."""
    config = Path(config)
    cfg = OmegaConf.load(config)
    overrides = generic_overrides(cfg, steps, model, WORLD_PROMPT if world else SMOKE_PROMPT) + config_smoke_lines(config)
    if world:
        overrides += config_smoke_lines(config, "smoke-world")
    overrides += list(extra)
    merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise SystemExit(
            f"[smoke] {config}: no value for {', '.join(missing)}; add a `# smoke: {missing[0]}=...` "
            "line to the config (or pass the override)"
        )
    return overrides
