#!/usr/bin/env bash
# threestudio-dreamsampler launcher.
#   bash launch.sh setup            create .venv, install requirements.txt, locate threestudio, build the tiny pipeline
#   bash launch.sh test [pytest args]   run the test suite (host tests run when threestudio is found)
#   bash launch.sh tiny-sd [dir]    build the tiny offline Stable-Diffusion-shaped pipeline
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${DREAMSAMPLER_VENV:-$REPO/.venv}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/threestudio-dreamsampler"
TS_URL="https://github.com/threestudio-project/threestudio.git"
TS_COMMIT="28d9d80d9d00f308244adfcf3be8b17ca0cb6465"   # v0.2.3, the commit the tests run against
EXT_NAME="threestudio-dreamsampler"

say() { echo "[launch.sh] $*" >&2; }

python_bin() {
  if [ -x "$VENV/bin/python" ]; then echo "$VENV/bin/python"; return; fi
  say "no environment at $VENV: run 'bash launch.sh setup' first"; exit 1
}

# The threestudio checkout: $THREESTUDIO_ROOT if set, else the default clone location.
threestudio_root() {
  local root="${THREESTUDIO_ROOT:-$CACHE/threestudio}"
  if [ -f "$root/threestudio/__init__.py" ]; then echo "$root"; return 0; fi
  if [ -n "${THREESTUDIO_ROOT:-}" ]; then say "THREESTUDIO_ROOT=$THREESTUDIO_ROOT holds no threestudio checkout"; fi
  return 1
}

# Make the extension visible to threestudio's custom loader (a link, no copy).
link_extension() {
  local root="$1"
  mkdir -p "$root/custom"
  ln -sfn "$REPO/custom/$EXT_NAME" "$root/custom/$EXT_NAME"
}

locate_threestudio() {
  local root
  if root="$(threestudio_root)"; then
    link_extension "$root"; say "threestudio: $root"; return 0
  fi
  if [ -n "${THREESTUDIO_ROOT:-}" ]; then return 0; fi
  mkdir -p "$CACHE"
  if timeout 300 git clone -q "$TS_URL" "$CACHE/threestudio.tmp" 2>/dev/null \
     && git -C "$CACHE/threestudio.tmp" checkout -q "$TS_COMMIT" 2>/dev/null; then
    mv "$CACHE/threestudio.tmp" "$CACHE/threestudio"
    link_extension "$CACHE/threestudio"; say "threestudio: cloned $TS_COMMIT to $CACHE/threestudio"
  else
    rm -rf "$CACHE/threestudio.tmp"
    say "threestudio: could not clone $TS_URL (no network?); host tests will skip - set THREESTUDIO_ROOT to a checkout"
  fi
}

cmd_setup() {
  local py="${PYTHON:-}"
  if [ -z "$py" ]; then py="$(command -v python3.11 || command -v python3)"; fi
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$REPO/requirements.txt"
  locate_threestudio
  cmd_tiny_sd >/dev/null
  say "setup done"
}

cmd_tiny_sd() {
  local py; py="$(python_bin)"
  (cd "$REPO/custom/$EXT_NAME" && "$py" -m dreamsampler.tiny_pipeline "$@")
}

cmd_test() {
  local py root; py="$(python_bin)"
  if root="$(threestudio_root)"; then link_extension "$root"; export THREESTUDIO_ROOT="$root"; fi
  cd "$REPO" && "$py" -m pytest tests "$@"
}

case "${1:-}" in
  setup) shift; cmd_setup "$@" ;;
  tiny-sd) shift; cmd_tiny_sd "$@" ;;
  test) shift; cmd_test "$@" ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
