#!/usr/bin/env bash
# The GPU check (scripts/device_check.py says what it runs and writes), on a machine with PyTorch but no
# internet: installs the wheels of .device/wheels (scripts/device_wheels.sh prepares them) into a scratch
# folder, puts them, the core and launcher, threestudio's source (.device/threestudio) and the stand-ins of
# scripts/device_site on PYTHONPATH, then runs the check.
#   bash scripts/device_check.sh [--cpu] [device_check.py options]
# --cpu: the dry run on a CPU machine (here the wheels are only checked to install for their Python).
# Summary: $OUT/device_check.json when OUT is set, else outputs/device_check/device_check.json.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")"
SITE="$WORK/site"; SHIM="$WORK/shim"
mkdir -p "$SITE" "$SHIM"
say() { echo "[device_check] $*" >&2; }
t0=$(date +%s)

# 1. the carried wheels: installed for this Python, or (another Python here) checked to install for theirs
wheels=("$REPO"/.device/wheels/*.whl)
ours="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
theirs="$(ls "$REPO"/.device/wheels 2>/dev/null | sed -n 's/.*-cp\([0-9]\)\([0-9]*\)-.*/\1.\2/p' | head -n 1)"
if [ ! -e "${wheels[0]}" ]; then
  install='{"wheels": 0, "state": "no .device/wheels: run scripts/device_wheels.sh where the registry is reachable"}'
elif [ -z "$theirs" ] || [ "$theirs" = "$ours" ]; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}" >"$WORK/pip.log" 2>&1; then
    install="{\"wheels\": ${#wheels[@]}, \"state\": \"installed for Python $ours\"}"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    install="{\"wheels\": ${#wheels[@]}, \"state\": \"pip failed: $(tail -n 1 "$WORK/pip.log" | tr -d '"\\')\"}"
  fi
else
  platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site-$theirs" --python-version "$theirs" \
      --only-binary=:all: "${platforms[@]}" "${wheels[@]}" >"$WORK/pip.log" 2>&1; then
    install="{\"wheels\": ${#wheels[@]}, \"state\": \"checked to install for Python $theirs (this Python is $ours: its own packages used)\"}"
  else
    install="{\"wheels\": ${#wheels[@]}, \"state\": \"pip failed for Python $theirs: $(tail -n 1 "$WORK/pip.log" | tr -d '"\\')\"}"
  fi
fi
echo "$install" >"$WORK/install.json"
say "wheels: $install"

# 2. the core and the launcher as packages (unless installed), threestudio's source, the stand-ins
"$PY" -c 'import dreamsampler, dreamsampler_launcher' 2>/dev/null || {
  ln -s "$REPO/custom/threestudio-dreamsampler/dreamsampler" "$SHIM/dreamsampler"
  ln -s "$REPO/launcher" "$SHIM/dreamsampler_launcher"
}
if [ -f "$REPO/.device/threestudio/launch.py" ]; then export THREESTUDIO_ROOT="$REPO/.device/threestudio"; fi
export PYTHONPATH="$REPO/scripts/device_site:$SHIM${THREESTUDIO_ROOT:+:$THREESTUDIO_ROOT}${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
say "python $PY ($ours), threestudio ${THREESTUDIO_ROOT:-as installed}, scratch $WORK ($(( $(date +%s) - t0 )) s so far)"

# 3. the check
"$PY" "$REPO/scripts/device_check.py" --work "$WORK" "$@"
rc=$?
say "done in $(( $(date +%s) - t0 )) s (exit $rc)"
exit $rc
