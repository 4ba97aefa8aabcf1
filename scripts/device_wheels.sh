#!/usr/bin/env bash
# Prepare .device/ for scripts/device_check.sh, here, on a machine that reaches the package registry:
#   .device/wheels/       wheels of the packages a bare GPU machine with PyTorch, Lightning and transformers
#                         lacks (for its Python, default 3.12, manylinux x86_64; --no-deps, versions as this
#                         environment's: requirements.txt's pins, else what .venv has installed)
#   .device/threestudio/  threestudio's source (the installed checkout, $THREESTUDIO_ROOT), without its git
#                         history, its load/ images and its caches
# .device/ is ignored by git (.gitignore); it is what the check needs besides the repository, so it travels
# with the working tree to the GPU machine (35 MB; the tracked files and it stay under 64 MiB together).
#   bash scripts/device_wheels.sh            # DEVICE_PYTHON_VERSION=3.11 for another Python
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/.device"
PY="${PYTHON:-$REPO/.venv/bin/python}"
PYVER="${DEVICE_PYTHON_VERSION:-3.12}"
say() { echo "[device_wheels] $*" >&2; }

# not on such a machine, and imported by threestudio, the extension or their dependencies; the pins of
# requirements.txt first, the rest as installed here
PINNED=(diffusers omegaconf typeguard nerfacc kornia envlight trimesh controlnet_aux libigl PyMCubes)
INSTALLED=(kornia-rs importlib-metadata ftfy wcwidth)

pin() {  # name==version from requirements.txt, else from the environment
  local name="$1" line
  line="$(grep -i -E "^${name//[-_]/[-_]}==" "$REPO/requirements.txt" | head -n 1 | sed 's/[[:space:]]*#.*//')" || true
  if [ -n "$line" ]; then echo "$line"; return; fi
  "$PY" -c "import importlib.metadata as m, sys; print(f'{sys.argv[1]}=={m.version(sys.argv[1])}')" "$name"
}

mkdir -p "$DEST"

rm -rf "$DEST/wheels"; mkdir -p "$DEST/wheels"
specs=()
for name in "${PINNED[@]}" "${INSTALLED[@]}"; do specs+=("$(pin "$name")"); done
say "downloading for Python $PYVER: ${specs[*]}"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${platforms[@]}" -d "$DEST/wheels" "${specs[@]}"

# threestudio's source, as the installed package finds it
ROOT="${THREESTUDIO_ROOT:-$("$PY" -c 'import importlib.util as u, os; print(os.path.dirname(os.path.dirname(u.find_spec("threestudio").origin)))')}"
[ -f "$ROOT/launch.py" ] || { say "no threestudio checkout at $ROOT (set THREESTUDIO_ROOT)"; exit 1; }
rm -rf "$DEST/threestudio"
"$PY" - "$ROOT" "$DEST/threestudio" <<'EOF'
import shutil, sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.ipynb", ".threestudio_cache", "outputs")
for name in ("threestudio", "extern", "configs"):
    shutil.copytree(src / name, dst / name, ignore=skip)
for name in ("launch.py", "LICENSE", "requirements.txt"):
    if (src / name).exists():
        shutil.copy2(src / name, dst / name)
(dst / "load").mkdir(parents=True)
for f in (src / "load").glob("*.json"):  # the prompt library; not the images
    shutil.copy2(f, dst / "load" / f.name)
(dst / "custom").mkdir()
EOF
say "$(du -sh "$DEST/wheels" | cut -f1) of wheels ($(ls "$DEST/wheels" | wc -l) files), threestudio $(du -sh "$DEST/threestudio" | cut -f1) from $ROOT"
tracked="$(git -C "$REPO" ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)"
say "with the tracked files: $(( (tracked + $(du -sb "$DEST" | cut -f1)) / 1048576 )) MiB"
