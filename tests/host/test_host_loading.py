"""The extension loads through threestudio's own custom-module loader, with the CPU backend."""
import json
import os
import subprocess
import sys

import pytest

from .runner import REPO, RUN

pytestmark = pytest.mark.threestudio

PROBE = f"""
import json, sys
sys.path.insert(0, {str(RUN.parent)!r})
import run_threestudio
ts = run_threestudio.load_threestudio(cpu=True)  # launch.py's load_custom_module
import tinycudann, threestudio.utils.base as base, threestudio.models.networks as networks
guidance = ts.find("dreamsampler-guidance")
print(json.dumps({{
    "guidance_module": guidance.__module__,
    "guidance_file": sys.modules[guidance.__module__].__file__,
    "system_types": sorted(k for k in ts.__modules__ if k.startswith("dreamsampler")),
    "stand_in": getattr(tinycudann, "STAND_IN", False),
    "device": str(base.get_device()),
    "networks_rank": networks.get_rank(),
}}))
"""


def test_extension_loads_through_threestudios_custom_loader():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["guidance_module"].startswith("threestudio-dreamsampler.")  # the loader's module name
    assert os.path.realpath(info["guidance_file"]).startswith(str(REPO / "custom" / "threestudio-dreamsampler"))
    assert "dreamsampler-guidance" in info["system_types"]
    assert info["device"] == "cpu" and info["networks_rank"] == "cpu"
    assert info["stand_in"] is True
