"""The extension loads through threestudio's own custom-module loader, with the CPU backend, and
uses the one installed copy of the core."""
import json
import os
import subprocess
import sys

import pytest

from .runner import REPO

pytestmark = pytest.mark.threestudio

PROBE = """
import json, sys
from dreamsampler_launcher import run_threestudio
ts = run_threestudio.load_threestudio(cpu=True)  # launch.py's load_custom_module
import tinycudann, threestudio.utils.base as base, threestudio.models.networks as networks
import dreamsampler, dreamsampler.distill.modes
guidance = ts.find("dreamsampler-guidance")
module = sys.modules[guidance.__module__]
print(json.dumps({
    "guidance_module": guidance.__module__,
    "guidance_file": module.__file__,
    "same_sampler_class": module.DreamSampler is dreamsampler.DreamSampler,
    "same_modes": module.MODES is dreamsampler.distill.modes.MODES,
    "core_copies": sorted(k for k in sys.modules if k.endswith(".dreamsampler") or ".dreamsampler." in k),
    "system_types": sorted(k for k in ts.__modules__ if k.startswith("dreamsampler")),
    "stand_in": getattr(tinycudann, "STAND_IN", False),
    "device": str(base.get_device()),
    "networks_rank": networks.get_rank(),
}))
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


def test_the_guidance_uses_the_installed_core(ts):
    """One copy of every core class: the guidance's DreamSampler is ``import dreamsampler``'s."""
    import dreamsampler
    from dreamsampler.diffusion import sampler

    guidance_module = sys.modules[ts.find("dreamsampler-guidance").__module__]
    assert guidance_module.DreamSampler is dreamsampler.DreamSampler is sampler.DreamSampler
    assert not [k for k in sys.modules if k.startswith("threestudio-dreamsampler.dreamsampler")]
