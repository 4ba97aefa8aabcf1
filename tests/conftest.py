"""Shared fixtures: the core on sys.path, the tiny offline pipeline, threestudio discovery."""
import os

# torch's OpenMP threads spin-wait by default, which slows a shared 2-core machine 10x or more;
# set before any test imports torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

REPO = Path(__file__).resolve().parents[1]
EXT = REPO / "custom" / "threestudio-dreamsampler"
sys.path.insert(0, str(EXT))


def threestudio_root():
    """The threestudio checkout the host tests run against, or None."""
    root = os.environ.get("THREESTUDIO_ROOT")
    if root and (Path(root) / "threestudio" / "__init__.py").exists():
        return Path(root)
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "threestudio: needs a threestudio checkout (THREESTUDIO_ROOT)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if threestudio_root() is not None:
        return
    skip = pytest.mark.skip(
        reason="no threestudio checkout: set THREESTUDIO_ROOT or run `bash launch.sh setup` on a machine that reaches GitHub"
    )
    for item in items:
        if "threestudio" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """Path of the tiny random Stable-Diffusion pipeline (built once per test session)."""
    from dreamsampler.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))
