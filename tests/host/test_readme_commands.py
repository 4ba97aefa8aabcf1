"""The README's commands, run as written in a fresh clone of the repository (``git clone`` of HEAD into a
temporary folder: uncommitted changes are not in it, which is the point).

Every command line of the README's fenced ``bash`` blocks (continuation lines joined, comments dropped:
``tests/test_readme.py``'s ``bash_blocks``) gets a route, and a command without one fails
``test_every_readme_command_has_a_route``:

- ``git clone <URL of this repository> threestudio-dreamsampler`` (install): run as written, with this
  repository's path for the URL; it makes the fresh clone every other command runs in.
- ``bash launch.sh setup``: run as written in the clone with ``THREESTUDIO_ROOT`` set to the installed
  threestudio checkout. It creates the clone's own ``.venv`` (pip from this machine's wheel folders and
  indexes, 2.5 to 4 minutes here; ``DREAMSAMPLER_VENV`` is not used: it would install the clone into the
  shared environment). The user's cache (``~/.cache/threestudio-dreamsampler``: the tiny pipelines) is not fresh.
- ``pip install --no-deps -e threestudio-dreamsampler`` (install): run as written beside the clone, with the
  clone's ``.venv/bin`` first on ``PATH`` (the README's "the environment's Python").
- ``ln -s ... "$THREESTUDIO_ROOT/custom/threestudio-dreamsampler"`` (install): run as written, with
  ``THREESTUDIO_ROOT`` pointing to a stand-in folder (a ``custom/`` folder only), so nothing is written into
  the real checkout; the link must resolve to the clone's extension.
- ``bash launch.sh test ...``: not run (it would run the whole suite inside this test). ``.ci/run``, which CI
  runs on a clean clone, must call the README's ``bash launch.sh test``; the README's other test commands are
  run in the clone with ``--collect-only -q`` appended (the marker selects some tests and deselects the host
  tests, the named file exists and collects). The plain command's collection is the same import of every test
  module as the ``-m`` one's, so it is not collected a second time.
- ``bash launch.sh train ... --cpu --smoke N ...`` (the CPU routes, the drop-in on the miniature world model
  included): run as written in the clone, except that N > 20 becomes ``--smoke 4`` (a smoke run's result at 200
  steps is checked by ``tests/host/test_world_smoke.py``); exit status 0, one new trial folder, and a PNG in its
  ``save/`` that is finite and not one colour.
- ``bash launch.sh smoke``: run as written in the clone (every ``configs/*.yaml`` for 2 steps, 2 to 3.5
  minutes here); every config gets a trial folder with such a PNG.
- GPU commands (``--gpu`` without ``--cpu``) and threestudio's own ``python launch.py`` line: cannot train here.
  Their ``--config`` (after bash's expansion of ``$THREESTUDIO_ROOT``; ``launch.py``'s relative to the
  checkout) must exist and the whole command must pass the launcher's check, run in the clone's environment:
  ``run_threestudio.main`` up to ``prepare`` (``check_config.py``: every override's field, values, model
  folders, the output folder, ``resume=``), which is everything ``main`` does before launch.py loads a model;
  the launcher has no check-only flag. ``launch.py --help`` must work in the checkout. Input files the commands
  assume the user has (``system.image=cat.png``) are written as stand-in PNGs in the clone; the README's
  ``TRIAL=outputs/<config>/<tag>@<date>`` is the trial that the README's CPU run of that config left in the clone
  (its ``configs/parsed.yaml`` and ``ckpts/last.ckpt``). A misspelled field run through the same route must be
  refused, so the route is not a no-op.
- ``python <script> ...``: the script is in the clone and its ``--help`` works with the clone's Python (its flags
  are checked by ``tests/test_readme.py``).

The whole file took 6.5 minutes on a 2-core machine (setup 2.5, the CPU runs 1, ``launch.sh smoke`` 2, removing
the clone's environment, about 7 GB, 0.5, the rest 0.5) and 11 minutes on the same machine under a load of 6.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import imageio.v3 as iio
import numpy as np
import pytest

from ..conftest import REPO, threestudio_root
from ..test_readme import bash_blocks

pytestmark = [pytest.mark.threestudio, pytest.mark.slow]

README = REPO / "README.md"
CLONE_NAME = "threestudio-dreamsampler"  # the folder the README's git clone names
URL_PLACEHOLDER = "<URL of this repository>"
MAX_SMOKE_STEPS, REDUCED_SMOKE_STEPS = 20, 4
SETUP_TIMEOUT, RUN_TIMEOUT, SMOKE_TIMEOUT = 900, 900, 1200
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


# ------------------------------------------------------------------ the README's commands, classified
def route(command: str) -> str:
    """How this file handles a README command (see the module docstring); ``unknown`` when it has no route."""
    w = shlex.split(command)
    if re.fullmatch(r"[A-Z_]+=\S+", command):
        return "variable"
    if w[:2] == ["git", "clone"]:
        return "install-clone"
    if w[:2] == ["pip", "install"]:
        return "install-pip"
    if w[:2] == ["ln", "-s"]:
        return "install-link"
    if w[:2] == ["python", "launch.py"]:
        return "launch.py"
    if w[0] == "python" and len(w) > 1 and w[1].endswith(".py"):
        return "script"
    if w[:2] != ["bash", "launch.sh"] or len(w) < 3:
        return "unknown"
    sub, args = w[2], w[3:]
    if sub == "setup" and not args:
        return "setup"
    if sub == "smoke":
        return "smoke"
    if sub == "test" and "--config" not in args:
        return "test"
    if sub in ("train", "export", "test") and "--config" in args:
        if "--cpu" in args and any(a in ("--smoke", "--smoke-tiny") for a in args):
            return "cpu"
        if "--gpu" in args and "--cpu" not in args:
            return "gpu"
    return "unknown"


COMMANDS = list(dict.fromkeys(bash_blocks(README)))  # the drop-in command is given twice
ROUTES = {c: route(c) for c in COMMANDS}


def of(kind: str) -> List[str]:
    return [c for c in COMMANDS if ROUTES[c] == kind]


def ids(commands):
    return [c if len(c) <= 90 else c[:87] + "..." for c in commands]


def as_run_here(command: str) -> str:
    """The command as this file runs it: ``--smoke N`` / ``--smoke-tiny N`` with N > 20 made 4."""
    def fewer(m):
        n = int(m.group(2))
        return f"{m.group(1)} {REDUCED_SMOKE_STEPS if n > MAX_SMOKE_STEPS else n}"

    return re.sub(r"(--smoke(?:-tiny)?) (\d+)", fewer, command)


def test_every_readme_command_has_a_route():
    unknown = [c for c in COMMANDS if ROUTES[c] == "unknown"]
    assert not unknown, "README commands this test does not know how to run or check:\n" + "\n".join(unknown)
    kinds = set(ROUTES.values())
    assert {"install-clone", "install-pip", "install-link", "setup", "test", "cpu", "smoke", "gpu", "launch.py", "script"} <= kinds, kinds
    assert any("dreamsampler-guidance" in c for c in of("cpu")), "the drop-in's CPU route"
    assert as_run_here("x --smoke 200 y --smoke-tiny 3") == "x --smoke 4 y --smoke-tiny 3"


# ------------------------------------------------------------------ the fresh clone
@dataclass
class Clone:
    root: Path  # the clone
    ts_root: Path  # the real threestudio checkout
    env: Dict[str, str]
    log: Dict[str, str] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def python(self) -> str:
        return str(self.root / ".venv" / "bin" / "python")

    def run(self, command: str, cwd: Optional[Path] = None, timeout: float = RUN_TIMEOUT, env=None):
        """``command`` through bash, as a user types it; returns the CompletedProcess (stdout + stderr together)."""
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-c", command], cwd=cwd or self.root, env=env or self.env, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.seconds[command] = time.perf_counter() - start
        self.log[command] = proc.stdout
        return proc

    def words(self, command: str, env=None) -> List[str]:
        """``command``'s words after bash's expansion (``$THREESTUDIO_ROOT``, ``$TRIAL``, quotes)."""
        proc = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], env=env or self.env,
                              capture_output=True, text=True, check=True)
        return proc.stdout.split("\0")[:-1]

    def trials(self, under: str = "outputs") -> set:
        return {p for p in (self.root / under).glob("*/*@*") if p.is_dir()}


def tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


def user_env(venv_bin: Path, ts_root: Path) -> Dict[str, str]:
    """A user's shell: the environment activated (the README's `python` is `.venv/bin/python`), THREESTUDIO_ROOT
    set, none of this test session's pytest or launcher variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "DREAMSAMPLER_")) and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(THREESTUDIO_ROOT=str(ts_root), VIRTUAL_ENV=str(venv_bin.parent), PATH=f"{venv_bin}:{env.get('PATH', '')}")
    return env


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The README's ``git clone`` (this repository's path as the URL), then ``bash launch.sh setup`` in the clone."""
    ts_root = threestudio_root()
    base = tmp_path_factory.mktemp("readme")
    root = base / CLONE_NAME
    c = Clone(root=root, ts_root=ts_root, env=user_env(root / ".venv" / "bin", ts_root))
    (git_clone,) = of("install-clone")
    assert URL_PLACEHOLDER in git_clone and shlex.split(git_clone)[-1] == CLONE_NAME, git_clone
    proc = c.run(git_clone.replace(URL_PLACEHOLDER, shlex.quote(str(REPO))), cwd=base)
    assert proc.returncode == 0 and (root / "launch.sh").is_file(), tail(proc.stdout)
    (setup,) = of("setup")
    proc = c.run(setup, timeout=SETUP_TIMEOUT)
    assert proc.returncode == 0, f"`{setup}` failed in a fresh clone:\n{tail(proc.stdout)}"
    yield c
    shutil.rmtree(root / ".venv", ignore_errors=True)  # about 7 GB; pytest keeps its last temporary folders


def test_setup_as_written_installs_the_clone_and_the_checkout(clone):
    (setup,) = of("setup")
    assert "setup done" in clone.log[setup]
    # threestudio is found, not imported: without tinycudann only the launcher's CPU backend makes it importable
    probe = ("import dreamsampler, dreamsampler_launcher, importlib.util, os; "
             "print(os.path.realpath(dreamsampler.__file__)); print(os.path.realpath(dreamsampler_launcher.__file__)); "
             "print(os.path.realpath(importlib.util.find_spec('threestudio').origin))")
    proc = subprocess.run([clone.python, "-c", probe], env=clone.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    core, launcher, ts = [Path(p) for p in proc.stdout.split()]
    assert core.is_relative_to(clone.root.resolve()) and launcher.is_relative_to(clone.root.resolve()), (core, launcher)
    assert ts.is_relative_to(clone.ts_root.resolve()), ts
    print(f"setup: {clone.seconds[setup]:.0f} s")


def test_the_install_route_as_written(clone, tmp_path):
    """``pip install`` beside the clone (the clone's environment activated) and ``ln -s`` into a stand-in
    ``$THREESTUDIO_ROOT``: the link is threestudio's way to the clone's extension."""
    (pip,) = of("install-pip")
    proc = clone.run(pip, cwd=clone.root.parent, timeout=600)
    assert proc.returncode == 0, tail(proc.stdout)
    probe = subprocess.run([clone.python, "-c", "import dreamsampler, os; print(os.path.realpath(dreamsampler.__file__))"],
                           env=clone.env, capture_output=True, text=True, timeout=300)
    assert Path(probe.stdout.strip()).is_relative_to(clone.root.resolve()), probe.stdout + probe.stderr

    (link,) = of("install-link")
    stand_in = tmp_path / "threestudio"
    (stand_in / "custom").mkdir(parents=True)
    env = {**clone.env, "THREESTUDIO_ROOT": str(stand_in), "PWD": str(clone.root.parent)}
    proc = clone.run(link, cwd=clone.root.parent, env=env)
    assert proc.returncode == 0, proc.stdout
    linked = stand_in / "custom" / CLONE_NAME
    assert linked.is_symlink() and linked.resolve() == (clone.root / "custom" / CLONE_NAME).resolve()
    assert (linked / "__init__.py").is_file() and (linked / "guidance" / "dreamsampler_guidance.py").is_file()


# ------------------------------------------------------------------ bash launch.sh test
def test_ci_runs_the_readmes_test_command(clone):
    """CI (``.ci/run``, on a clean clone) runs the README's setup and its plain ``bash launch.sh test``."""
    ci = [shlex.split(line) for line in (clone.root / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    plain = [shlex.split(c) for c in of("test") if shlex.split(c) == ["bash", "launch.sh", "test"]]
    assert plain, of("test")
    assert ["bash", "launch.sh", "setup"] in ci
    assert any(line[:3] == plain[0] for line in ci), ci


@pytest.mark.parametrize("command", [c for c in of("test") if c.split()[3:]], ids=ids([c for c in of("test") if c.split()[3:]]))
def test_a_readme_test_command_collects_in_the_clone(clone, command):
    proc = clone.run(f"{command} --collect-only -q", timeout=600)
    assert proc.returncode == 0, tail(proc.stdout)
    m = re.search(r"(\d+)(?:/(\d+))? tests? collected(?: \((\d+) deselected\))?", proc.stdout)
    assert m, tail(proc.stdout)
    selected = int(m.group(1))
    assert selected > 0
    args = shlex.split(command)[3:]
    if "-m" in args:
        assert int(m.group(3) or 0) > 0, "the marker deselects nothing"
        assert "tests/host/" not in proc.stdout, "a host test is selected by -m 'not threestudio'"
    for path in [a for a in args if a.startswith("tests/")]:
        assert (clone.root / path).exists(), path


# ------------------------------------------------------------------ the CPU routes
def picture(path: Path) -> bool:
    """A PNG that is finite and not one colour."""
    a = iio.imread(path)
    if not np.isfinite(a.astype(np.float64)).all():
        return False
    pixels = a.reshape(-1, a.shape[-1]) if a.ndim == 3 else a.reshape(-1, 1)
    return len(np.unique(pixels, axis=0)) > 1


def pictures(trial: Path) -> List[Path]:
    return [p for p in sorted((trial / "save").rglob("*.png")) if picture(p)]


@dataclass
class CpuRun:
    ran: str
    returncode: int
    new_trials: List[Path]
    log: str


@pytest.fixture(scope="module")
def cpu_runs(clone) -> Dict[str, CpuRun]:
    """Each README ``--cpu --smoke`` command run in the clone, once, in README order."""
    runs = {}
    for command in of("cpu"):
        before = clone.trials()
        ran = as_run_here(command)
        proc = clone.run(ran)
        runs[command] = CpuRun(ran, proc.returncode, sorted(clone.trials() - before), proc.stdout)
    return runs


@pytest.mark.parametrize("command", of("cpu"), ids=ids(of("cpu")))
def test_a_cpu_command_runs_as_written(clone, cpu_runs, command):
    run = cpu_runs[command]
    assert run.returncode == 0, f"`{run.ran}` failed in the clone:\n{tail(run.log)}"
    assert len(run.new_trials) == 1, run.new_trials
    (trial,) = run.new_trials
    assert pictures(trial), f"no PNG in {trial / 'save'} that is finite and not one colour"
    print(f"{run.ran}: {clone.seconds[run.ran]:.0f} s, {trial.relative_to(clone.root)}")


def test_launch_sh_smoke_runs_every_config(clone):
    (smoke,) = of("smoke")
    before = clone.trials("outputs/smoke")
    proc = clone.run(smoke, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, tail(proc.stdout)
    new = clone.trials("outputs/smoke") - before
    configs = sorted(p.stem for p in (clone.root / "configs").glob("*.yaml"))
    assert sorted(t.parent.name for t in new) == configs
    flat = [str(t) for t in new if not pictures(t)]
    assert not flat, f"trials without a PNG that is finite and not one colour: {flat}"
    print(f"{smoke}: {clone.seconds[smoke]:.0f} s for {len(configs)} configs")


# ------------------------------------------------------------------ the GPU commands: the launcher's check
CHECK = r"""
import json, sys
from dataclasses import replace
from dreamsampler_launcher import run_threestudio as r

results = []
for argv in json.loads(sys.argv[1]):
    try:  # run_threestudio.main up to launch.py: parse, the checkout, the backend, prepare (check_config.py)
        args = r.LaunchArgs.parse(argv)
        r.threestudio_root()
        args = replace(args, cpu=r.use_cpu(args.cpu))
        r.prepare(args)
        results.append(None)
    except SystemExit as e:
        results.append(f"SystemExit: {e}")
    except Exception as e:
        results.append(f"{type(e).__name__}: {e}")
print("RESULTS " + json.dumps(results))
"""
MISSPELLED = "system.guidance.guidence_scale=21"


def launcher_argv(clone: Clone, command: str, env) -> List[str]:
    """What ``launch.sh`` (``cmd_threestudio "--$1" "$@"``) or launch.py hands the launcher for ``command``."""
    w = clone.words(command, env)
    if w[:2] == ["python", "launch.py"]:  # run from the threestudio checkout: its --config is relative to it
        args = w[2:]
        i = args.index("--config") + 1
        args[i] = str(clone.ts_root / args[i])
        return args
    return [f"--{w[2]}", *w[3:]]


def trial_variable(clone: Clone, cpu_runs) -> Dict[str, str]:
    """``TRIAL=outputs/<config>/<tag>@<date>``: the trial the README's CPU run of ``<config>`` left in the clone."""
    env = {}
    for line in of("variable"):
        name, value = line.split("=", 1)
        folder = "/".join(value.split("/")[:2])
        made = [t for run in cpu_runs.values() for t in run.new_trials
                if t.parent == clone.root / folder and (t / "ckpts" / "last.ckpt").is_file()]
        assert made, f"{line}: no trial with a checkpoint under {folder} from the README's CPU runs"
        env[name] = str(made[-1].relative_to(clone.root))
    return env


@pytest.fixture(scope="module")
def gpu_checks(clone, cpu_runs):
    """Every GPU command (and launch.py's line) through the launcher's check, in one process in the clone;
    {command: None or the message}, and the message for a misspelled field."""
    env = {**clone.env, **trial_variable(clone, cpu_runs)}
    commands = of("gpu") + of("launch.py")
    argvs = {c: launcher_argv(clone, c, env) for c in commands}
    for argv in argvs.values():  # the inputs the commands assume the user has
        for value in [a.split("=", 1)[1] for a in argv if "=" in a and not a.startswith("-")]:
            path = clone.root / value
            if value.lower().endswith(INPUT_SUFFIXES) and not Path(value).is_absolute() and not path.exists():
                img = np.full((64, 64, 3), 255, np.uint8)
                img[16:48, 16:48] = (200, 40, 40)
                iio.imwrite(path, img)
    bad = [*argvs[of("gpu")[0]], MISSPELLED]
    proc = subprocess.run([clone.python, "-c", CHECK, json.dumps([*argvs.values(), bad])], cwd=clone.root, env=env,
                          capture_output=True, text=True, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and line, tail(proc.stdout + proc.stderr)
    *results, misspelled = json.loads(line[0][len("RESULTS "):])
    return {"argv": argvs, "results": dict(zip(commands, results)), "misspelled": misspelled}


@pytest.mark.parametrize("command", of("gpu") + of("launch.py"), ids=ids(of("gpu") + of("launch.py")))
def test_a_gpu_command_passes_the_launchers_check(clone, gpu_checks, command):
    argv = gpu_checks["argv"][command]
    config = Path(argv[argv.index("--config") + 1])
    config = config if config.is_absolute() else clone.root / config
    assert config.is_file(), f"--config {config} does not exist"
    message = gpu_checks["results"][command]
    assert message is None, f"`{command}` is refused by the launcher's check: {message}"
    if shlex.split(command)[:2] == ["python", "launch.py"]:
        proc = subprocess.run([clone.python, "launch.py", "--help"], cwd=clone.ts_root, env=clone.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "--config" in proc.stdout, proc.stderr


def test_the_check_refuses_a_misspelled_field(gpu_checks):
    assert "did you mean 'guidance_scale'" in (gpu_checks["misspelled"] or ""), gpu_checks["misspelled"]


# ------------------------------------------------------------------ python scripts
@pytest.mark.parametrize("command", of("script"), ids=ids(of("script")))
def test_a_script_command_is_in_the_clone_and_answers_help(clone, command):
    script = shlex.split(command)[1]
    assert (clone.root / script).is_file(), f"{script} is not in a fresh clone (not committed?)"
    proc = clone.run(f"python {shlex.quote(script)} --help", timeout=300)
    assert proc.returncode == 0 and "usage:" in proc.stdout, tail(proc.stdout)
