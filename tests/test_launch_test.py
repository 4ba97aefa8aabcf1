"""`bash launch.sh test` runs one pytest-xdist worker a core, each at one thread, unless the arguments choose the
workers (`-n 0`: in one process)."""
import os
import subprocess

import pytest

from .conftest import REPO

PROBE = """import os


def test_probe():
    open({where!r}, "w").write(f"{{os.environ.get('PYTEST_XDIST_WORKER')}} {{os.environ.get('OMP_NUM_THREADS')}}")
"""


def where_it_ran(tmp_path, *args: str) -> list:
    """[the xdist worker or 'None', OMP_NUM_THREADS or 'None'] of a probe test run by `bash launch.sh test`."""
    seen = tmp_path / "seen.txt"
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE.format(where=str(seen)))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTEST_XDIST_WORKER")}
    proc = subprocess.run(["bash", str(REPO / "launch.sh"), "test", str(probe), "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return seen.read_text().split()


def test_launch_sh_test_runs_workers_at_one_thread_each(tmp_path):
    worker, threads = where_it_ran(tmp_path)
    assert worker.startswith("gw") and threads == "1"


@pytest.mark.parametrize("args", [("-n", "0"), ("-p", "no:xdist")], ids=["-n 0", "-p no:xdist"])
def test_launch_sh_test_leaves_the_workers_to_the_arguments(tmp_path, args):
    worker, threads = where_it_ran(tmp_path, *args)
    assert worker == "None" and threads == "None"
