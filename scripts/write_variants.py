"""Write each ``configs/variants/<name>.yaml`` whole, from ``configs/variants/src/<name>.yaml`` over its base.

Why this exists: threestudio's own ``launch.py`` reads exactly one whole file and rejects a top-level key it
does not know, such as ``base:``, with which ``configs/variants/src/<name>.yaml`` states only what differs from
a shipped config (``dreamsampler_launcher.config_base``; only our launcher understands it). So the variants
users run are whole configs that ``python launch.py --config configs/variants/<name>.yaml`` takes as they
are, and they are generated rather than edited, so that each stays equal to its base + its delta: edit the
``src`` file (or the base config) and rerun this script. ``--check`` (run by the tests) writes nothing and
exits non-zero naming each written file that is stale, missing, or has no ``src`` file.

Each written file is the ``src`` file's own leading comment lines, verbatim, one line naming where it comes
from, then ``OmegaConf.to_yaml`` of the merge (``${...}`` interpolations unresolved, as threestudio resolves
them when it loads the file).

    python scripts/write_variants.py [--check]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List

from omegaconf import OmegaConf

from dreamsampler_launcher.config_base import load_with_base

REPO = Path(__file__).resolve().parents[1]
VARIANTS = REPO / "configs" / "variants"
SRC = VARIANTS / "src"


def leading_comments(path: Path) -> List[str]:
    """The comment lines at the top of ``path``, up to its first line that is not a comment."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def variant_text(src: Path, out_dir: Path = VARIANTS) -> str:
    """The whole config written for the delta file ``src``."""
    merged, chain = load_with_base(src)
    if len(chain) < 2:
        raise SystemExit(f"[write_variants] {src}: no `base:` key; a variant's src file states its base config")
    rel = lambda p: Path(os.path.relpath(p, out_dir)).as_posix()
    bases = " over ".join(rel(p) for p in reversed(chain[:-1]))
    origin = (f"# Written by `python scripts/write_variants.py` from {rel(src)} over {bases} (whose comments explain "
              "the other fields): edit those and rerun.")
    return "\n".join(leading_comments(src) + [origin]) + "\n" + OmegaConf.to_yaml(merged)


def expected(src_dir: Path = SRC, out_dir: Path = VARIANTS) -> Dict[Path, str]:
    """{written file: its text} for every ``src_dir/*.yaml``."""
    return {out_dir / src.name: variant_text(src, out_dir) for src in sorted(src_dir.glob("*.yaml"))}


def show(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    path = Path(path)
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def orphans(src_dir: Path = SRC, out_dir: Path = VARIANTS) -> List[str]:
    """One line per ``out_dir/*.yaml`` without a src file to write it from."""
    return [f"{show(path)}: no {show(src_dir / path.name)} to write it from" for path in sorted(out_dir.glob("*.yaml"))
            if not (src_dir / path.name).is_file()]


def stale(src_dir: Path = SRC, out_dir: Path = VARIANTS) -> List[str]:
    """One line per written file that differs from what its src file gives, is missing, or has no src file."""
    want = expected(src_dir, out_dir)
    out = [f"{show(path)}: {'stale' if path.is_file() else 'missing'}" for path, text in want.items()
           if not path.is_file() or path.read_text() != text]
    return out + orphans(src_dir, out_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stale written file")
    args = p.parse_args(argv)
    if args.check:
        problems = stale(SRC, VARIANTS)
        for line in problems:
            print(f"[write_variants] {line}", file=sys.stderr)
        if problems:
            print("[write_variants] run `python scripts/write_variants.py` to rewrite them", file=sys.stderr)
        return 1 if problems else 0
    for path, text in expected(SRC, VARIANTS).items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"[write_variants] wrote {show(path)}")
    left = orphans(SRC, VARIANTS)
    for line in left:
        print(f"[write_variants] {line} (left as it is: remove it, or add its src file)", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
