"""User paths resolved where the command runs, before threestudio sees them.

threestudio's ``launch.py`` runs inside the threestudio checkout, so a relative ``system.image=cat.png``
would be looked up there. :func:`anchor_paths` finds the path fields of a run's config (the file and
the command-line overrides together), and makes every relative path that exists under the caller's
working directory absolute, as an extra override. A relative path found nowhere is an error that names
the field and the absolute paths tried; one that exists only inside the threestudio checkout (its own
``load/`` assets) is left for threestudio. Model ids are paths only when such a folder exists here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, List, Tuple

from omegaconf import OmegaConf

PATH_FIELDS = ("image", "measurement", "mask", "dataroot", "gt_root", "heldout_root", "lmc_checkpoint", "target", "resume")
MODEL_FIELDS = ("pretrained_model_name_or_path",)
NOT_PATHS = ("procedural", "shapes")  # values of path fields that name built-in data
PREFIXES = ("skimage:", "world:")


def _is_user_path(value) -> bool:
    return (
        isinstance(value, str) and value.strip() != "" and not os.path.isabs(os.path.expanduser(value))
        and "${" not in value and value not in NOT_PATHS and not value.startswith(PREFIXES) and value != "???"
    )


def leaves(node, key: str = "", in_list: str = "") -> Iterator[Tuple[str, str, str, object]]:
    """(dotted key, field name, the key of the outermost list holding it or "", value) of every leaf."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{key}.{k}" if key else str(k), in_list)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, f"{key}[{i}]", in_list or key)
    else:
        yield key, key.rsplit(".", 1)[-1].split("[")[0], in_list, node


def _set(container, dotted: str, value) -> None:
    parts = dotted.replace("[", ".[").split(".")
    node = container
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    node[int(last[1:-1]) if last.startswith("[") else last] = value


def anchor_paths(cfg, cwd: str, threestudio_root: str) -> List[str]:
    """Overrides that make the relative user paths of the run's config ``cfg`` (the file with its
    overrides merged, ``run_threestudio.run_config``) absolute (see the module docstring)."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    out, lists = [], {}
    for dotted, name, list_key, value in leaves(tree):
        if name not in PATH_FIELDS + MODEL_FIELDS or not _is_user_path(value):
            continue
        here = Path(cwd, os.path.expanduser(value)).resolve()
        if not here.exists():
            if name in MODEL_FIELDS or Path(threestudio_root, value).exists():
                continue  # a model id, or one of threestudio's own assets
            raise SystemExit(
                f"[run_threestudio] {dotted}={value!r}: no such file or folder; tried {here} (relative paths are "
                f"taken from the directory the command runs in) and {Path(threestudio_root, value).resolve()}"
            )
        if list_key:
            _set(tree, dotted, str(here))
            lists[list_key] = True
        else:
            out.append(f"{dotted}={here}")
    for list_key in lists:
        node = tree
        for part in list_key.split("."):
            node = node[part]
        out.append(f"{list_key}={json.dumps(node)}")
    return out
