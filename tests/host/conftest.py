"""Host-test fixtures: real threestudio imported in-process on CPU with the extension loaded."""
import importlib.util
import sys

import pytest

from ..conftest import EXT


def load_extension():
    """Load the extension the way threestudio's launch.py loads custom modules (by file location)."""
    name = EXT.name
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ts():
    """The installed ``threestudio`` package, on the CPU backend, with our extension registered."""
    from dreamsampler_launcher import threestudio_cpu

    threestudio_cpu.install()
    import threestudio

    load_extension()
    return threestudio
