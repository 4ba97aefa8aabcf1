"""Shared fixtures: the tiny offline pipeline, threestudio discovery (the core and the launcher are
installed packages: `bash launch.sh setup`)."""
import os

# torch's OpenMP threads spin-wait by default, which slows a shared 2-core machine 10x or more;
# set before any test imports torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib.util
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

REPO = Path(__file__).resolve().parents[1]
EXT = REPO / "custom" / "threestudio-dreamsampler"


def threestudio_root():
    """The checkout of the installed threestudio the host tests run against, or None."""
    spec = importlib.util.find_spec("threestudio")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "threestudio: needs a threestudio checkout (THREESTUDIO_ROOT)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if threestudio_root() is not None:
        return
    skip = pytest.mark.skip(
        reason="threestudio is not installed: run `bash launch.sh setup` with THREESTUDIO_ROOT=<checkout>, "
        "or on a machine that reaches GitHub"
    )
    for item in items:
        if "threestudio" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def load_script():
    """``load_script("train_lmc")``: one of ``scripts/*.py`` imported as a module (scripts are not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """Path of the tiny random Stable-Diffusion pipeline (built once per test session)."""
    from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_sd64(tmp_path_factory):
    """The tiny SD-shaped pipeline at a native 64 px (8x8 latents): renders are encoded without a 512 resize, for
    tests whose subject does not depend on the size (counts, resume, precision) and whose time does."""
    from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd64"), sample_size=8)


@pytest.fixture(scope="session")
def tiny_sd_v(tmp_path_factory):
    """The tiny pipeline shaped like Stable Diffusion 2.x at 768: its UNet predicts v."""
    from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd-v"), prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_if(tmp_path_factory):
    """The tiny DeepFloyd-IF-shaped pipeline (pixel space, T5, 6-channel UNet), built once per test session."""
    from dreamsampler.testing.tiny_if_pipeline import build_tiny_if_pipeline

    return build_tiny_if_pipeline(tmp_path_factory.mktemp("tiny-if"))


@pytest.fixture(autouse=True)
def leaves_nothing_in_the_repositorys_outputs():
    """Every test writes under its own tmp_path: a test that adds to the repository's outputs/ fails here."""
    outputs = REPO / "outputs"
    before = set(outputs.iterdir()) if outputs.is_dir() else set()
    yield
    after = set(outputs.iterdir()) if outputs.is_dir() else set()
    assert not after - before, f"the test left {sorted(map(str, after - before))} in the repository's outputs/"
