"""``base:``: a launch config that states only what differs from another config.

    # my-configs/hamburger-sds.yaml, a config of your own next to this checkout's configs/
    base: ../configs/variants/text-to-nerf-sds.yaml   # relative to this file; a base may have a base
    name: "hamburger-sds"
    system:
      prompt_processor:
        prompt: "a hamburger"

The file is merged over its base with ``OmegaConf.merge`` (mappings merge key by key, lists and
scalars are replaced, ``${...}`` interpolations stay unresolved until threestudio loads the result).
threestudio's ``launch.py`` reads exactly one file and rejects unknown top-level keys, so
``run_threestudio.py`` writes the merged config to a file named by its content and hands that to
launch.py; the trial's ``configs/raw.yaml`` is then the whole config. The smoke files of the chain
(``smoke.py``) are read from the chain itself, before the merge. The shipped configs have no ``base:``:
``scripts/write_variants.py`` writes each ``configs/variants/<name>.yaml`` whole with this merge, from the
delta ``configs/variants/src/<name>.yaml``, so that threestudio's own launch.py runs them too.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Tuple, Union

from omegaconf import DictConfig, OmegaConf

BASE_KEY = "base"


def load_with_base(path: Union[str, Path], _seen: Tuple[Path, ...] = ()) -> Tuple[DictConfig, List[Path]]:
    """(the config at ``path`` merged over its base chain, the chain's files with the furthest base first)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ValueError(f"{path}: `{BASE_KEY}:` loops back: {' -> '.join(map(str, _seen + (path,)))}")
    cfg = OmegaConf.load(path)
    base = cfg.pop(BASE_KEY, None)
    if base is None:
        return cfg, [path]
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"{path}: `{BASE_KEY}:` must be the path of another config, got {base!r}")
    base_path = (path.parent / Path(base).expanduser()).resolve()
    if not base_path.is_file():
        raise FileNotFoundError(f"{path}: `{BASE_KEY}: {base}` names no file ({base_path})")
    base_cfg, chain = load_with_base(base_path, _seen + (path,))
    return OmegaConf.merge(base_cfg, cfg), chain + [path]


def merged_config(path: Union[str, Path], out_dir: Union[str, Path]) -> Path:
    """``path`` itself when it has no ``base:``, else the merged config written under ``out_dir``."""
    cfg, chain = load_with_base(path)
    if len(chain) == 1:
        return Path(path)
    header = f"# {chain[-1]} merged over {', '.join(map(str, reversed(chain[:-1])))} (written by config_base.py)"
    text = header + "\n" + OmegaConf.to_yaml(cfg)
    out = Path(out_dir) / f"{chain[-1].stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)  # atomic: concurrent runs of the same config never see a partial file
    return out
