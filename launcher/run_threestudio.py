"""Run threestudio's own ``launch.py`` with this extension loaded, on GPUs or on the CPU.

    python -m dreamsampler_launcher.run_threestudio --config configs/<name>.yaml --train [--cpu] [key=value ...]

Takes every argument launch.py takes (``--train/--validate/--test/--export``, ``--gpu``,
``--typecheck``, overrides) plus ``--cpu``, ``--smoke N`` (N steps on the miniature world model with
world inputs) and ``--smoke-tiny N`` (N steps on the tiny offline pipeline), both at small sizes (``smoke.py``); a ``--config`` with a ``base:`` key (a variant stating only what
differs from its base, see ``config_base.py``) is merged over its base first. threestudio must be
importable (``launch.sh setup`` installs the checkout at ``$THREESTUDIO_ROOT``, default
``${XDG_CACHE_HOME:-~/.cache}/threestudio-dreamsampler/threestudio``, into the environment); it keeps
``<threestudio>/custom/threestudio-dreamsampler`` linked to this checkout, makes ``--config``
absolute, anchors a relative ``exp_root_dir`` at the caller's working directory (outputs land where
the user runs the command), changes into the threestudio checkout (launch.py loads ``custom/`` and
writes ``.threestudio_cache`` there) and executes launch.py as a script.

Without a CUDA device, or with ``--cpu``, it first installs the CPU backend (:mod:`threestudio_cpu`)
and makes launch.py's ``Trainer(accelerator="gpu", devices=-1)`` a CPU trainer with one process per
``--gpu`` id (``--gpu 0,1`` gives Lightning DDP over 2 CPU processes, gloo) and fp32 instead of fp16
mixed precision. Lightning's DDP ranks re-run the script and threestudio's prompt processor spawns a
helper that re-imports it; both find CPU mode in ``DREAMSAMPLER_CPU=1`` and install the same backend.

A run resumed with ``resume=<ckpt>`` continues the trial's CSV and TensorBoard logs from the checkpoint's
step and shows its progress bar's total (:mod:`resumed_run`).

In-process use (tests, benchmarks): :func:`load_threestudio` imports threestudio and loads the
extension through launch.py's ``load_custom_module``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

from .quiet import silence_known_warnings

REPO = Path(__file__).resolve().parents[1]
EXT_DIR = REPO / "custom" / "threestudio-dreamsampler"
EXT_NAME = "threestudio-dreamsampler"
CPU_ENV = "DREAMSAMPLER_CPU"
DEFAULT_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "threestudio-dreamsampler" / "threestudio"
MERGED_CONFIGS = DEFAULT_ROOT.parent / "configs"  # variants merged over their base (config_base.py)


def say(message: str) -> None:
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"[run_threestudio] {message}", file=sys.stderr, flush=True)


def threestudio_root() -> Path:
    """The checkout of the importable ``threestudio`` package (installed by ``launch.sh setup``); it must
    be ``$THREESTUDIO_ROOT`` when that is set."""
    spec = importlib.util.find_spec("threestudio")
    if spec is None or not spec.origin:
        raise SystemExit(
            "[run_threestudio] threestudio is not installed in this environment: run `bash launch.sh setup` "
            "(with THREESTUDIO_ROOT=<checkout> to use your own checkout)"
        )
    root = Path(spec.origin).resolve().parents[1]
    wanted = os.environ.get("THREESTUDIO_ROOT")
    if wanted and Path(wanted).expanduser().resolve() != root:
        raise SystemExit(
            f"[run_threestudio] THREESTUDIO_ROOT={wanted} but the installed threestudio is {root}: "
            "run `bash launch.sh setup` again to install that checkout"
        )
    if not (root / "launch.py").is_file():
        raise SystemExit(f"[run_threestudio] the installed threestudio at {root} has no launch.py: install a full checkout")
    return root


def link_extension(root: Path) -> None:
    """Make ``<root>/custom/threestudio-dreamsampler`` a link to this checkout's extension."""
    link = root / "custom" / EXT_NAME
    if link.is_symlink() and link.resolve() == EXT_DIR:
        return
    if link.exists() and not link.is_symlink():
        raise SystemExit(f"[run_threestudio] {link} is a directory, not a link to {EXT_DIR}: move it away")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{EXT_NAME}.link.{os.getpid()}"  # outside custom/, which launch.py loads wholesale
    tmp.symlink_to(EXT_DIR, target_is_directory=True)
    os.replace(tmp, link)  # atomic: a concurrent run never sees the link missing
    say(f"linked {link} -> {EXT_DIR}")


def backend():
    """The CPU backend package, :mod:`dreamsampler_launcher.threestudio_cpu`."""
    from . import threestudio_cpu

    return threestudio_cpu


def cpu_trainer(n_processes: int) -> None:
    """Make ``pytorch_lightning.Trainer`` run on CPU processes whatever launch.py asks for."""
    import pytorch_lightning as pl

    init = pl.Trainer.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        kwargs["accelerator"], kwargs["devices"] = "cpu", n_processes
        if str(kwargs.get("precision")) in ("16", "16-mixed"):
            kwargs["precision"] = "32-true"  # fp16 autocast does not exist on CPU; bf16 would change numerics
        init(self, *args, **kwargs)

    pl.Trainer.__init__ = __init__


def n_processes(argv: list) -> int:
    """How many devices launch.py will use: CUDA_VISIBLE_DEVICES if set, else the ids in ``--gpu``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len(visible.split(","))
    gpu = "0"
    for i, arg in enumerate(argv):
        if arg == "--gpu" and i + 1 < len(argv):
            gpu = argv[i + 1]
        elif arg.startswith("--gpu="):
            gpu = arg.split("=", 1)[1]
    return len(gpu.split(","))


def absolute_config(argv: list) -> list:
    """``argv`` with the ``--config`` path made absolute (launch.py runs from the threestudio checkout)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = _existing(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _existing(arg.split("=", 1)[1])
    return out


def _existing(path: str) -> str:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise SystemExit(f"[run_threestudio] --config {path}: no such file ({resolved})")
    return str(resolved)


def outputs_here(argv: list) -> list:
    """``argv`` plus ``exp_root_dir=<cwd>/<config's exp_root_dir>`` when that is relative and not
    overridden: launch.py runs inside the threestudio checkout, but outputs belong where the user is."""
    config = config_path(argv)
    if config is None or any(a.startswith("exp_root_dir=") for a in argv):
        return argv
    from omegaconf import OmegaConf

    root_dir = OmegaConf.load(config).get("exp_root_dir", "outputs")
    if os.path.isabs(root_dir):
        return argv
    return argv + [f"exp_root_dir={os.path.abspath(root_dir)}"]


def _overrides(argv: list) -> list:
    return [a for a in argv if "=" in a and not a.startswith("-")]


def run_config(argv: list):
    """The run's config as launch.py will see it: the ``--config`` file with the overrides merged over it
    (unresolved), or None without ``--config``."""
    config = config_path(argv)
    if config is None:
        return None
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.load(config), OmegaConf.from_dotlist(_overrides(argv)))


def schedule_follows_the_run(cfg) -> list:
    """``system.guidance.trainer_max_steps=${trainer.max_steps}`` when the run uses dreamsampler-guidance
    and does not set it (threestudio's own configs, e.g. the drop-in on dreamfusion-sd.yaml): the
    decreasing schedule then spans the run instead of the guidance's default 10000 steps."""
    system = cfg.get("system") or {}
    guidance = system.get("guidance") or {}
    if system.get("guidance_type") != "dreamsampler-guidance" or "trainer_max_steps" in guidance:
        return []
    say("system.guidance.trainer_max_steps not set: the schedule follows trainer.max_steps")
    return ["system.guidance.trainer_max_steps=${trainer.max_steps}"]


def uses_deep_floyd(cfg) -> bool:
    """Whether the run's prompts are encoded by threestudio's DeepFloyd IF prompt processor (an IF config)."""
    system = cfg.get("system") or {}
    return system.get("prompt_processor_type") == "deep-floyd-prompt-processor"


def check_tag_fields(cfg) -> None:
    """The fields a config's ``tag`` is made from (``${rmspace:${data.caption},_}``) must be set: an empty
    one would fail deep inside threestudio's config loading ('NoneType' has no attribute 'replace')."""
    import re

    from omegaconf import OmegaConf

    tag = OmegaConf.to_container(cfg, resolve=False).get("tag", "")
    for key in re.findall(r"\$\{rmspace:\$\{([\w.\[\]]+)\}", str(tag)):
        node = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
        if node is None or (isinstance(node, str) and not node.strip()):
            raise SystemExit(f"[run_threestudio] {key} is empty: the run needs it (its trial folder is named after it)")


def check_resume(argv: list) -> None:
    """A ``resume=`` file must be a whole PyTorch checkpoint archive; checked as a zip file, without
    unpickling anything (what it holds is checked by the system when Lightning loads it)."""
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not resume or resume[-1] in ("", "null", "None"):
        return
    import zipfile

    path = Path(resume[-1]).expanduser()
    what = f"[run_threestudio] resume={resume[-1]}"
    if not path.is_file():
        raise SystemExit(f"{what}: no such file ({path.resolve()})")
    if not zipfile.is_zipfile(path):
        raise SystemExit(f"{what}: not a checkpoint: {path} is not a PyTorch checkpoint archive (truncated, or another kind of file)")
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist()):
                raise SystemExit(f"{what}: not a checkpoint: {path} is a zip archive without PyTorch's data.pkl")
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        raise SystemExit(f"{what}: {path} is a damaged archive ({exc})") from exc
    if bad is not None:
        raise SystemExit(f"{what}: {path} is truncated or damaged (member {bad} fails its checksum)")


def load_threestudio(cpu: Optional[bool] = None):
    """Import threestudio in this process and load this extension with launch.py's own
    ``load_custom_module``; the CPU backend first when ``cpu`` (default: when there is no CUDA)."""
    root = threestudio_root()
    link_extension(root)
    if cpu is None:
        cpu = not backend().cuda_available()
    if cpu:
        backend().install(force=True)
    import threestudio

    if EXT_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location("threestudio_launch", root / "launch.py")
        launch = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(launch)
        if not launch.load_custom_module(str(root / "custom" / EXT_NAME)):
            raise RuntimeError(f"threestudio could not load {root / 'custom' / EXT_NAME} (traceback above)")
    return threestudio


def config_path(argv: list) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def expand_base(argv: list) -> list:
    """``argv`` with a ``--config`` that has a ``base:`` replaced by the merged config (config_base.py)."""
    config = config_path(argv)
    if config is None:
        return argv
    from .config_base import merged_config

    try:
        merged = str(merged_config(config, MERGED_CONFIGS))
    except (OSError, ValueError) as e:
        raise SystemExit(f"[run_threestudio] --config {config}: {e}") from e
    if merged == config:
        return argv
    say(f"{config} merged over its base: {merged}")
    return [merged if a == config else "--config=" + merged if a == "--config=" + config else a for a in argv]


def expand_smoke(argv: list) -> list:
    """Replace ``--smoke N`` (the miniature world model, world inputs) or ``--smoke-tiny N`` (the tiny random
    pipeline) by the overrides of an N-step offline run (smoke.py); a DeepFloyd IF config runs on the tiny
    IF-shaped pipeline with either flag."""
    flag = next((f for f in ("--smoke", "--smoke-tiny") if f in argv), None)
    if flag is None:
        return argv
    i = argv.index(flag)
    if i + 1 >= len(argv) or not argv[i + 1].isdigit():
        raise SystemExit(f"[run_threestudio] {flag} takes a number of steps, e.g. {flag} 3")
    steps, argv = int(argv[i + 1]), argv[:i] + argv[i + 2 :]
    config = config_path(argv)
    if config is None:
        raise SystemExit(f"[run_threestudio] {flag} needs --config <yaml>")
    user = _overrides(argv)
    from .smoke import smoke_overrides

    world = flag == "--smoke"
    if uses_deep_floyd(run_config(argv)):
        # a pixel-space (IF) config: no world model of that family; the tiny IF pipeline for both flags
        from dreamsampler.testing.tiny_if_pipeline import build_tiny_if_pipeline, default_location

        model, world = build_tiny_if_pipeline(default_location()), False
        say(f"smoke run: {steps} steps on the tiny DeepFloyd-IF-shaped pipeline {model}")
    elif world:
        from dreamsampler.world import MINI_SD

        model = str(MINI_SD)
        say(f"smoke run: {steps} steps on the miniature world model {model} (world inputs and prompts)")
    else:
        from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline, default_location

        model = build_tiny_pipeline(default_location())
        say(f"smoke run: {steps} steps on the tiny pipeline {model}")
    return [a for a in argv if a not in user] + smoke_overrides(config, steps, model, user, world=world)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cpu = "--cpu" in argv or os.environ.get(CPU_ENV) == "1"
    argv = outputs_here(expand_smoke(expand_base(absolute_config([a for a in argv if a != "--cpu"]))))
    root = threestudio_root()
    cfg = run_config(argv)
    if cfg is not None:
        from .paths import anchor_paths

        check_tag_fields(cfg)
        argv = argv + anchor_paths(cfg, os.getcwd(), str(root)) + schedule_follows_the_run(cfg)
    check_resume(argv)
    link_extension(root)
    if not cpu and not backend().cuda_available():
        say("no CUDA device found: running on the CPU")
        cpu = True
    if cpu:
        os.environ[CPU_ENV] = "1"
        backend().install(force=True)
        n = n_processes(argv)
        cpu_trainer(n)
        say(f"CPU backend installed; Trainer(accelerator='cpu', devices={n})")
    from .resumed_run import install as continue_resumed_runs

    continue_resumed_runs()
    sys.argv = [os.path.abspath(sys.argv[0])] + argv  # DDP ranks re-run the script with these arguments
    os.chdir(root)
    run_launch_py(root / "launch.py")


def run_launch_py(path: Path) -> None:
    """Execute launch.py as a script. Unlike ``runpy.run_path``, ``sys.modules["__main__"]`` stays the
    calling script, so processes spawned during the run (the prompt processor's) re-import it first."""
    code = compile(path.read_text(), str(path), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(path), "__builtins__": __builtins__})


silence_known_warnings()  # here, so DDP ranks and spawned helpers that re-import this file are quiet too

if __name__ == "__main__":
    main()
elif os.environ.get(CPU_ENV) == "1":
    # imported in a process of a CPU run: the prompt processor's spawned helper re-imports the main
    # script (this file, or one importing it) before it unpickles anything from threestudio
    backend().install(force=True)
