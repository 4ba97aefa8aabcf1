#!/usr/bin/env bash
# threestudio-dreamsampler launcher.
#   bash launch.sh setup            create .venv, install requirements.txt and this project (the dreamsampler core,
#                                   the launcher), locate and install threestudio, build the tiny pipeline
#   bash launch.sh test [pytest args]   run the test suite (host tests run when threestudio is found)
#   bash launch.sh tiny-sd [dir]    build the tiny offline Stable-Diffusion-shaped pipeline
#   bash launch.sh tiny-if [dir]    build the tiny offline DeepFloyd-IF-shaped pipeline (IF configs' smoke runs build it too)
#   bash launch.sh train|test|export --config <yaml> [--cpu] [--gpu 0,1] [--smoke N | --smoke-tiny N] [key=value ...]
#                                   threestudio's launch.py with the extension (CPU when there is no GPU or with --cpu)
#   bash launch.sh smoke [steps]    every configs/*.yaml for a few steps (default 2) on the miniature world model, CPU
#                                   (trials accumulate under outputs/smoke)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${DREAMSAMPLER_VENV:-$REPO/.venv}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/threestudio-dreamsampler"
TS_URL="https://github.com/threestudio-project/threestudio.git"
TS_COMMIT="28d9d80d9d00f308244adfcf3be8b17ca0cb6465"   # v0.2.3, the commit the tests run against
EXT_NAME="threestudio-dreamsampler"

say() { echo "[launch.sh] $*" >&2; }

# torch's OpenMP threads spin-wait by default, which slows small shared CPU machines many times over
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

python_bin() {
  if [ -x "$VENV/bin/python" ]; then echo "$VENV/bin/python"; return; fi
  say "no environment at $VENV: run 'bash launch.sh setup' first"; exit 1
}

# The threestudio checkout: $THREESTUDIO_ROOT if set, else the one installed in the environment by
# setup, else the default clone location.
installed_threestudio() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" -c 'import importlib.util as u, os; s = u.find_spec("threestudio"); print(os.path.dirname(os.path.dirname(s.origin)))' 2>/dev/null
}

threestudio_root() {
  local root="${THREESTUDIO_ROOT:-}"
  [ -n "$root" ] || root="$(installed_threestudio)" || root=""
  [ -n "$root" ] || root="$CACHE/threestudio"
  if [ -f "$root/threestudio/__init__.py" ]; then echo "$root"; return 0; fi
  if [ -n "${THREESTUDIO_ROOT:-}" ]; then say "THREESTUDIO_ROOT=$THREESTUDIO_ROOT holds no threestudio checkout"; fi
  return 1
}

# For threestudio's own launch.py run from the checkout: <threestudio>/custom/threestudio-dreamsampler, a link to
# this clone's extension, made only when the checkout has none (another clone's link is left as it is).
# launch.sh's runs and the tests do not need it: they load this clone's extension themselves.
link_extension() {
  local root="$1" link="$1/custom/$EXT_NAME"
  if [ -e "$link" ] || [ -L "$link" ]; then
    if [ "$(readlink -f "$link")" != "$(readlink -f "$REPO/custom/$EXT_NAME")" ]; then
      say "$link already points to $(readlink -f "$link"): left as it is (this clone's runs do not use it)"
    fi
    return 0
  fi
  mkdir -p "$root/custom"
  ln -s "$REPO/custom/$EXT_NAME" "$link"
}

# an editable install of a source folder, quiet unless it fails (setuptools prints notices on success)
install_editable() {
  local log; log="$(mktemp)"
  if ! "$VENV/bin/python" -m pip install -q --no-deps -e "$1" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; return 1; fi
  rm -f "$log"
}

# threestudio as an (editable) package of the environment, so `import threestudio` finds the checkout
install_threestudio() {
  install_editable "$1"
  link_extension "$1"; say "threestudio: $1 (installed in $VENV)"
}

locate_threestudio() {
  local root
  if root="$(threestudio_root)"; then install_threestudio "$root"; return 0; fi
  if [ -n "${THREESTUDIO_ROOT:-}" ]; then return 0; fi
  mkdir -p "$CACHE"
  if timeout 300 git clone -q "$TS_URL" "$CACHE/threestudio.tmp" 2>/dev/null \
     && git -C "$CACHE/threestudio.tmp" checkout -q "$TS_COMMIT" 2>/dev/null; then
    mv "$CACHE/threestudio.tmp" "$CACHE/threestudio"
    say "threestudio: cloned $TS_COMMIT to $CACHE/threestudio"; install_threestudio "$CACHE/threestudio"
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
  install_editable "$REPO"   # the core and the launcher (pyproject.toml)
  locate_threestudio
  cmd_tiny_sd >/dev/null
  say "setup done"
}

cmd_tiny_sd() {
  local py; py="$(python_bin)"
  "$py" -m dreamsampler.testing.tiny_pipeline "$@"
}

cmd_tiny_if() {
  local py; py="$(python_bin)"
  "$py" -m dreamsampler.testing.tiny_if_pipeline "$@"
}

cmd_test() {
  local py root; py="$(python_bin)"
  if root="$(threestudio_root)"; then export THREESTUDIO_ROOT="$root"; fi
  # one pytest-xdist worker a core, each at one thread (the host tests' runs are CPU-bound), unless the arguments
  # choose (-n N; -n 0 runs in this process, as --pdb needs)
  local workers=()
  if ! printf '%s\n' "$@" | grep -qE '^(-n|--numprocesses)(=|[0-9a-z]*$)|no:xdist'; then
    workers=(-n auto); export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  fi
  # no path given: pytest.ini's testpaths (tests/); a path given: only that
  cd "$REPO" && "$py" -m pytest "${workers[@]}" "$@"
}

# threestudio's own launch.py (through run_threestudio.py) in mode --train, --test or --export.
cmd_threestudio() {
  local mode="$1" py root; shift; py="$(python_bin)"
  if ! root="$(threestudio_root)"; then
    say "no threestudio checkout: set THREESTUDIO_ROOT or run 'bash launch.sh setup'"; exit 1
  fi
  export THREESTUDIO_ROOT="$root"
  "$py" -m dreamsampler_launcher.run_threestudio "$mode" "$@"
}

# Every shipped config for a few steps on the miniature world model, on the CPU; lists the trial directories.
# Trials accumulate under outputs/smoke (threestudio names each by its date); each call's logs get a folder of their own.
cmd_smoke() {
  local steps="${1:-2}" out="$REPO/outputs/smoke" logs config name trial failed=() trials=()
  logs="$out/logs@$(date +%Y%m%d-%H%M%S)"; mkdir -p "$logs"
  say "smoke: trials under $out (earlier ones are kept), logs in $logs"
  for config in "$REPO"/configs/*.yaml; do
    [ -e "$config" ] || { say "no configs in $REPO/configs"; return 0; }
    name="$(basename "$config" .yaml)"
    say "smoke: $name ($steps steps)"
    # threestudio writes <exp_root_dir>/<config name>/<tag>@<date>: outputs/smoke/<name>/<tag>@<date>
    if cmd_threestudio --train --config "$config" --cpu --smoke "$steps" "exp_root_dir=$out" \
        >"$logs/$name.log" 2>&1; then
      trial="$(ls -dt "$out/$name"/*/ | head -n 1)"
      trials+=("$name: $trial")
    else
      failed+=("$name (log: $logs/$name.log)")
    fi
  done
  say "trial directories:"; printf '  %s\n' "${trials[@]}" >&2
  if [ ${#failed[@]} -gt 0 ]; then say "failed:"; printf '  %s\n' "${failed[@]}" >&2; return 1; fi
}

has_config() { local a; for a in "$@"; do case "$a" in --config|--config=*) return 0 ;; esac; done; return 1; }

case "${1:-}" in
  setup) shift; cmd_setup "$@" ;;
  tiny-sd) shift; cmd_tiny_sd "$@" ;;
  tiny-if) shift; cmd_tiny_if "$@" ;;
  test) shift; if has_config "$@"; then cmd_threestudio --test "$@"; else cmd_test "$@"; fi ;;
  train|export) mode="--$1"; shift; cmd_threestudio "$mode" "$@" ;;
  smoke) shift; cmd_smoke "$@" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
