"""References a reader of this repository can follow: every dotted ``dreamsampler.*`` path named in the
code, the configs and the documentation imports, and nothing cites a document that is not in the
repository (the papers are cited by author, year and arXiv id: README.md's citation section)."""
import importlib
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

# `dreamsampler.a.b.c`, not part of a longer name or a path (threestudio-dreamsampler.x, outputs/dreamsampler.x)
DOTTED = re.compile(r"(?<![\w./-])dreamsampler(?:\.[A-Za-z_]\w*)+")
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".ini", ".sh", ".txt", ".json")
# built from pieces so that this file does not match itself
UNFOLLOWABLE = [
    (re.compile(r"\b" + "DESIGN" + r"\.md\b|\b" + "DESIGN" + r" sec(tion)?\b"), "a design document outside the repository"),
    (re.compile(r"\bseed (paper )?" + r"0\d\d\b"), "a paper by its number in a collection outside the repository"),
]


def repo_files(*suffixes):
    """Tracked and untracked, not ignored, files of the repository with one of ``suffixes``."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted(REPO / f for f in out if f.endswith(suffixes) and (REPO / f).is_file())


def documented_files():
    """Where dotted paths are named for a reader: Python (docstrings, comments, code), configs, markdown."""
    return [p for p in repo_files(".py", ".yaml", ".yml", ".md") if p != Path(__file__).resolve()]


def dotted_paths():
    """{dotted path: [file:line, ...]} over :func:`documented_files`."""
    found = {}
    for path in documented_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name in DOTTED.findall(line):
                found.setdefault(name, []).append(f"{path.relative_to(REPO)}:{n}")
    return found


def resolves(name: str) -> bool:
    """``name`` is a module, or an attribute (chain) of the longest importable module prefix."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_finds_the_dotted_paths_it_checks():
    names = dotted_paths()
    assert "dreamsampler.distill.modes" in names and "dreamsampler.vector.rasterizer" in names
    assert not DOTTED.findall("configs/dreamsampler-edit.yaml custom/threestudio-dreamsampler.x dreamsampler_guidance.py")
    assert DOTTED.findall("see :mod:`dreamsampler.world.scenes`.") == ["dreamsampler.world.scenes"]


def test_every_dotted_dreamsampler_path_imports():
    missing = {name: where for name, where in dotted_paths().items() if not resolves(name)}
    assert not missing, "dotted paths that do not import (name: where named):\n" + "\n".join(
        f"  {name}: {', '.join(where)}" for name, where in sorted(missing.items())
    )


def test_resolves_modules_and_attributes_only():
    assert resolves("dreamsampler.diffusion.process.to_epsilon")
    assert resolves("dreamsampler.DreamSampler")
    assert not resolves("dreamsampler.rasterizer")
    assert not resolves("dreamsampler.distill.modes.no_such_function")


def offences(paths):
    out = []
    for path in paths:
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for pattern, what in UNFOLLOWABLE:
                if pattern.search(line):
                    out.append(f"{path.relative_to(REPO)}:{n}: {what}: {line.strip()[:120]}")
    return out


def test_nothing_cites_documents_outside_the_repository():
    found = offences(repo_files(*TEXT_SUFFIXES))
    assert not found, "\n".join(found)


def test_configs_cite_papers_by_name():
    found = offences(repo_files(".yaml", ".yml"))
    assert not found, "\n".join(found)
