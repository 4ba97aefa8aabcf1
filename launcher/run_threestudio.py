"""Run threestudio's own ``launch.py`` with this extension loaded, on GPUs or on the CPU.

    python -m dreamsampler_launcher.run_threestudio --config configs/<name>.yaml --train [--cpu] [key=value ...]

Takes every argument launch.py takes (``--train/--validate/--test/--export``, ``--gpu``, ``--verbose``,
``--typecheck``, ``--gradio``, overrides) plus ``--cpu``, ``--smoke N`` (N steps on the miniature world model with
world inputs) and ``--smoke-tiny N`` (N steps on the tiny offline pipeline), both at small sizes (``smoke.py``).
The arguments are parsed once (:class:`LaunchArgs`); then, before any model is loaded:

- a ``--config`` with a ``base:`` key (a config of the user's stating only what differs from another,
  ``config_base.py``) is merged over its base; relative paths in the config are anchored where the command
  runs (``paths.py``), a relative ``exp_root_dir`` too (outputs land where the user runs the command);
- the whole config is checked (``check_config.py``): threestudio's own parsing, every component's fields, our
  systems' and guidance's values, model folders, the output folder, the trial folder's name; a mistake is one
  line naming the field the user set, and no trial folder is left behind.

Then launch.py runs in this process: its argument parsing and ``main`` as they are, with its loader of
``custom/`` replaced by one that loads this checkout's extension (and every other extension in the
checkout's ``custom/`` but other copies of this one), so one threestudio checkout serves several clones and
nothing is linked or written into it. It runs in ``<this checkout>/.threestudio_run``, where ``load`` links to
the checkout's assets and threestudio's ``.threestudio_cache`` lands.

Without a CUDA device, or with ``--cpu``, the CPU backend (:mod:`threestudio_cpu`) is installed and
launch.py's ``Trainer(accelerator="gpu", devices=-1)`` becomes a CPU trainer with one process per
``--gpu`` id (``--gpu 0,1`` gives Lightning DDP over 2 CPU processes, gloo) and fp32 instead of fp16 mixed
precision. Lightning's DDP ranks re-run this module and threestudio's prompt processor spawns a helper that
re-imports it; both find CPU mode in ``DREAMSAMPLER_CPU=1``. The trial's ``cmd.txt`` is a command that reruns.

A run resumed with ``resume=<ckpt>`` continues the trial's CSV and TensorBoard logs from the checkpoint's
step and shows its progress bar's total (:mod:`resumed_run`).

In-process use (tests, benchmarks): :func:`load_threestudio` imports threestudio and loads the extension
with launch.py's own ``load_custom_module``.
"""
from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import os
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional

from .quiet import silence_known_warnings

REPO = Path(__file__).resolve().parents[1]
EXT_DIR = REPO / "custom" / "threestudio-dreamsampler"
EXT_NAME = "threestudio-dreamsampler"
CPU_ENV = "DREAMSAMPLER_CPU"
MODULE = "dreamsampler_launcher.run_threestudio"
DEFAULT_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "threestudio-dreamsampler" / "threestudio"
MERGED_CONFIGS = DEFAULT_ROOT.parent / "configs"  # configs with a `base:` merged over it (config_base.py)
RUN_DIR = REPO / ".threestudio_run"  # launch.py's working directory (git-ignored)
MODES = ("--train", "--validate", "--test", "--export")


def say(message: str) -> None:
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"[run_threestudio] {message}", file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line naming the argument, not argparse's usage block
        raise SystemExit(f"[run_threestudio] {message} (see `python -m {MODULE} --help`)")


@dataclass
class LaunchArgs:
    """The command line, parsed once: launch.py's arguments, ours, and the ``key=value`` overrides."""

    mode: str = "--train"
    config: Optional[str] = None  # absolute path
    gpu: str = "0"
    cpu: bool = False
    smoke: Optional[str] = None  # "world" (--smoke) | "tiny" (--smoke-tiny)
    smoke_steps: int = 0
    flags: List[str] = field(default_factory=list)  # launch.py's --verbose / --typecheck / --gradio
    overrides: List[str] = field(default_factory=list)

    @classmethod
    def parse(cls, argv: List[str]) -> "LaunchArgs":
        p = _Parser(prog=f"python -m {MODULE}", description="threestudio's launch.py with threestudio-dreamsampler")
        p.add_argument("--config", required=True, help="a launch config (YAML)")
        p.add_argument("--gpu", default="0", help="GPU ids, e.g. 0,1 (with --cpu: that many CPU processes)")
        group = p.add_mutually_exclusive_group()
        for mode in MODES:
            group.add_argument(mode, dest="mode", action="store_const", const=mode)
        for flag in ("--verbose", "--typecheck", "--gradio"):
            p.add_argument(flag, action="store_true")
        p.add_argument("--cpu", action="store_true", help="run on the CPU (the default without a CUDA device)")
        smoke = p.add_mutually_exclusive_group()
        smoke.add_argument("--smoke", type=_steps, metavar="N", help="N steps on the miniature world model, small sizes")
        smoke.add_argument("--smoke-tiny", type=_steps, metavar="N", help="N steps on the tiny random pipeline")
        ns, rest = p.parse_known_args(argv)
        unknown = [a for a in rest if a.startswith("-") or "=" not in a]
        if unknown:
            raise SystemExit(
                f"[run_threestudio] unrecognized argument(s) {' '.join(unknown)}: options are --config, --gpu, "
                f"{'/'.join(MODES)}, --cpu, --smoke N, --smoke-tiny N, --verbose, --typecheck, --gradio; "
                "config overrides are key=value"
            )
        kind = "world" if ns.smoke is not None else "tiny" if ns.smoke_tiny is not None else None
        return cls(
            mode=ns.mode or "--train", config=_existing(ns.config), gpu=ns.gpu, cpu=ns.cpu or os.environ.get(CPU_ENV) == "1",
            smoke=kind, smoke_steps=ns.smoke or ns.smoke_tiny or 0,
            flags=[f"--{f}" for f in ("verbose", "typecheck", "gradio") if getattr(ns, f)], overrides=rest,
        )

    def launch_argv(self) -> List[str]:
        """The arguments launch.py parses."""
        return ["--config", self.config, self.mode, "--gpu", self.gpu, *self.flags, *self.overrides]

    def n_processes(self) -> int:
        """How many devices launch.py will use: CUDA_VISIBLE_DEVICES if set, else the ids in ``--gpu``."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return len((visible or self.gpu).split(","))


def _steps(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"takes a number of steps >= 1, e.g. 3 (got {value!r})")
    return int(value)


def _existing(path: str) -> str:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise SystemExit(f"[run_threestudio] --config {path}: no such file ({resolved})")
    return str(resolved)


# ------------------------------------------------------------------ the run's config
def run_config(config: str, overrides: List[str]):
    """The run's config as launch.py will see it: the file with the overrides merged over it (unresolved)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config)
    for override in overrides:  # one at a time, so a failure names its override
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([override]))
        except Exception as exc:  # malformed (YAML), or a mapping where the config has a list (or the reverse)
            key = override.split("=", 1)[0]
            was = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
            kind = "a list" if OmegaConf.is_list(was) else "a mapping" if OmegaConf.is_dict(was) else "a value"
            raise SystemExit(f"[run_threestudio] {override}: does not apply to {config}, where {key} is {kind} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    return cfg


def outputs_here(cfg, overrides: List[str]) -> List[str]:
    """``exp_root_dir=<cwd>/<config's exp_root_dir>`` when that is relative and not overridden: launch.py runs
    elsewhere, but outputs belong where the user is."""
    if any(o.startswith("exp_root_dir=") for o in overrides):
        return []
    root_dir = cfg.get("exp_root_dir", "outputs")
    return [] if os.path.isabs(root_dir) else [f"exp_root_dir={os.path.abspath(root_dir)}"]


def swap_overrides(cfg) -> List[str]:
    """What the one-line swap ``system.guidance_type=dreamsampler-guidance`` into another config (threestudio's own)
    needs and the config cannot say: the decreasing schedule spans the run (``guidance.trainer_max_steps`` =
    ``${trainer.max_steps}`` unless set), and the guidance's ``loss_sds`` has a weight (``sdi.yaml`` weighs its
    guidance's ``loss_sdi`` by ``lambda_sdi``: ours takes that weight)."""
    system = cfg.get("system") or {}
    guidance, loss = system.get("guidance") or {}, system.get("loss")
    if system.get("guidance_type") != "dreamsampler-guidance":
        return []
    out = []
    if "trainer_max_steps" not in guidance:
        say("system.guidance.trainer_max_steps not set: the schedule follows trainer.max_steps")
        out.append("system.guidance.trainer_max_steps=${trainer.max_steps}")
    if loss is not None and "lambda_sds" not in loss and "lambda_sdi" in loss:
        say("system.loss.lambda_sds not set: dreamsampler-guidance's loss_sds takes the config's lambda_sdi")
        out.append("system.loss.lambda_sds=${system.loss.lambda_sdi}")
    return out


def uses_deep_floyd(cfg) -> bool:
    """Whether the run's prompts are encoded by threestudio's DeepFloyd IF prompt processor (an IF config)."""
    system = cfg.get("system") or {}
    return system.get("prompt_processor_type") == "deep-floyd-prompt-processor"


def check_resume(overrides: List[str]) -> None:
    """A ``resume=`` file must be a whole PyTorch checkpoint archive; checked as a zip file, without
    unpickling anything (what it holds is checked by the system when Lightning loads it)."""
    resume = [a.split("=", 1)[1] for a in overrides if a.startswith("resume=")]
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


def expand_smoke(args: LaunchArgs, chain: List[Path], cfg) -> LaunchArgs:
    """``args`` with the overrides of an N-step smoke run (smoke.py) in place of ``--smoke`` / ``--smoke-tiny``;
    a DeepFloyd IF config runs on the tiny IF-shaped pipeline with either flag."""
    if args.smoke is None:
        return args
    from .smoke import smoke_overrides

    world = args.smoke == "world"
    if uses_deep_floyd(cfg):  # a pixel-space (IF) config: no world model of that family
        from dreamsampler.testing.tiny_if_pipeline import build_tiny_if_pipeline, default_location

        model, world = build_tiny_if_pipeline(default_location()), False
        say(f"smoke run: {args.smoke_steps} steps on the tiny DeepFloyd-IF-shaped pipeline {model}")
    elif world:
        from dreamsampler.world import MINI_SD

        model = str(MINI_SD)
        say(f"smoke run: {args.smoke_steps} steps on the miniature world model {model} (world inputs and prompts)")
    else:
        from dreamsampler.testing.tiny_pipeline import build_tiny_pipeline, default_location

        model = build_tiny_pipeline(default_location())
        say(f"smoke run: {args.smoke_steps} steps on the tiny pipeline {model}")
    overrides = smoke_overrides(chain, args.smoke_steps, model, args.overrides, world=world)
    return replace(args, overrides=overrides, smoke=args.smoke if world else "tiny")


def prepare(args: LaunchArgs) -> LaunchArgs:
    """``args`` as launch.py gets them: smoke settings, a ``base:`` config merged over its base, paths anchored
    where the command runs, what a swapped-in guidance needs (``swap_overrides``), the config checked
    (``check_config.py``)."""
    from .check_config import check
    from .config_base import load_with_base, merged_config
    from .paths import anchor_paths

    load_threestudio(cpu=args.cpu)  # its config resolvers (${idiv:...}) too
    try:
        _, chain = load_with_base(args.config)
        merged = str(merged_config(args.config, MERGED_CONFIGS))
    except (OSError, ValueError) as e:
        raise SystemExit(f"[run_threestudio] --config {args.config}: {e}") from e
    if merged != args.config:
        say(f"{args.config} merged over its base: {merged}")
    args = expand_smoke(replace(args, config=merged), chain, run_config(merged, args.overrides))
    cfg = run_config(args.config, args.overrides)
    extra = outputs_here(cfg, args.overrides)
    extra += anchor_paths(run_config(args.config, args.overrides + extra), os.getcwd(), str(threestudio_root()))
    extra += swap_overrides(cfg)
    args = replace(args, overrides=args.overrides + extra)
    check_resume(args.overrides)
    return replace(args, overrides=args.overrides + check(run_config(args.config, args.overrides), args.smoke))


# ------------------------------------------------------------------ threestudio
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


def backend():
    """The CPU backend package, :mod:`dreamsampler_launcher.threestudio_cpu`."""
    from . import threestudio_cpu

    return threestudio_cpu


def use_cpu(wanted: bool) -> bool:
    """Install the CPU backend when ``wanted`` or when there is no CUDA device; returns whether it runs on the CPU.
    Must run before threestudio is imported."""
    if not wanted and not backend().cuda_available():
        say("no CUDA device found: running on the CPU")
        wanted = True
    if wanted:
        os.environ[CPU_ENV] = "1"
        backend().install(force=True)
    return wanted


def is_this_extension(path: Path) -> bool:
    """Whether ``path`` (an entry of threestudio's ``custom/``) is a copy or link of this extension, of any clone."""
    return path.name.startswith(EXT_NAME) or (path / "guidance" / "dreamsampler_guidance.py").is_file()


def load_extensions(load_custom_module, root: Path) -> None:
    """This checkout's extension, then every other extension in ``<root>/custom`` except copies of this one
    (launch.py's ``load_custom_modules`` with its list of folders changed)."""
    if EXT_NAME not in sys.modules and not load_custom_module(str(EXT_DIR)):
        raise SystemExit(f"[run_threestudio] threestudio could not load {EXT_DIR} (traceback above)")
    custom = root / "custom"
    for entry in sorted(custom.iterdir()) if custom.is_dir() else []:
        if entry.name == "__pycache__" or entry.name.endswith("_disabled") or is_this_extension(entry):
            continue
        if entry.is_file() and entry.suffix != ".py":
            continue
        load_custom_module(str(entry))


def load_threestudio(cpu: Optional[bool] = None):
    """Import threestudio in this process and load this extension with launch.py's own
    ``load_custom_module``; the CPU backend first when ``cpu`` (default: when there is no CUDA)."""
    root = threestudio_root()
    if cpu is None:
        cpu = not backend().cuda_available()
    if cpu:
        backend().install(force=True)
    import threestudio

    if EXT_NAME not in sys.modules:
        launch = launch_namespace(root / "launch.py")
        if not launch["load_custom_module"](str(EXT_DIR)):
            raise RuntimeError(f"threestudio could not load {EXT_DIR} (traceback above)")
    return threestudio


def launch_namespace(path: Path) -> dict:
    """launch.py's definitions (its functions and imports), without running its ``__main__`` block."""
    tree = ast.parse(path.read_text(), str(path))
    tree.body = [node for node in tree.body if not _is_main_block(node)]
    ns = {"__name__": "threestudio_launch", "__file__": str(path), "__builtins__": __builtins__}
    exec(compile(tree, str(path), "exec"), ns)
    return ns


def _is_main_block(node) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)


def run_launch_py(path: Path, root: Path) -> None:
    """launch.py's ``__main__`` block with its extension loader replaced (:func:`load_extensions`)."""
    tree = ast.parse(path.read_text(), str(path))
    main_blocks = [node for node in tree.body if _is_main_block(node)]
    if len(main_blocks) != 1:
        raise SystemExit(f"[run_threestudio] {path} has no `if __name__ == \"__main__\":` block: not threestudio's launch.py")
    ns = launch_namespace(path)
    ns["load_custom_modules"] = functools.partial(load_extensions, ns["load_custom_module"], root)
    main = ast.Module(body=main_blocks[0].body, type_ignores=[])
    exec(compile(main, str(path), "exec"), ns)


def run_directory(root: Path) -> Path:
    """``RUN_DIR`` with ``load`` linking to the checkout's assets (threestudio reads ``load/...`` relative paths)."""
    RUN_DIR.mkdir(exist_ok=True)
    link = RUN_DIR / "load"
    if not (link.is_symlink() and link.resolve() == (root / "load").resolve()):
        tmp = RUN_DIR / f".load.{os.getpid()}"
        tmp.symlink_to(root / "load", target_is_directory=True)
        os.replace(tmp, link)  # atomic: a concurrent run never sees the link missing
    return RUN_DIR


def rerun_command(args: LaunchArgs) -> str:
    cpu = ["--cpu"] if args.cpu else []
    return shlex.join([sys.executable, "-m", MODULE, *args.launch_argv(), *cpu])


def wrap_trainer(args: LaunchArgs) -> None:
    """launch.py's ``Trainer``: on the CPU, CPU processes in fp32; always, the trial's ``cmd.txt`` rewritten as a
    command that reruns (launch.py writes ``python`` + its arguments, which names no runnable script here)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    init = pl.Trainer.__init__

    @functools.wraps(init)
    def __init__(self, *a, **kwargs):
        if args.cpu:
            kwargs["accelerator"], kwargs["devices"] = "cpu", args.n_processes()
            if str(kwargs.get("precision")) in ("16", "16-mixed"):
                kwargs["precision"] = "32-true"  # fp16 autocast does not exist on CPU; bf16 would change numerics
        for cb in kwargs.get("callbacks") or []:
            cmd = Path(cb.dirpath).parent / "cmd.txt" if isinstance(cb, ModelCheckpoint) and cb.dirpath else None
            if cmd is not None and cmd.is_file() and os.environ.get("LOCAL_RANK", "0") == "0":
                lines = cmd.read_text().splitlines()
                cmd.write_text("\n".join([rerun_command(args), *lines[1:]]) + "\n")
        init(self, *a, **kwargs)

    pl.Trainer.__init__ = __init__


def main(argv=None) -> None:
    args = LaunchArgs.parse(list(sys.argv[1:] if argv is None else argv))
    root = threestudio_root()
    args = replace(args, cpu=use_cpu(args.cpu))
    if args.cpu:
        say(f"CPU backend installed; Trainer(accelerator='cpu', devices={args.n_processes()})")
    args = prepare(args)
    wrap_trainer(args)
    from .resumed_run import install as continue_resumed_runs

    continue_resumed_runs()
    # launch.py parses these; DDP ranks re-run this module (or the calling script) with them, CPU mode in CPU_ENV
    sys.argv = [os.path.abspath(sys.argv[0]), *args.launch_argv()]
    os.chdir(run_directory(root))
    run_launch_py(root / "launch.py", root)


silence_known_warnings()  # here, so DDP ranks and spawned helpers that re-import this file are quiet too

if __name__ == "__main__":
    main()
elif os.environ.get(CPU_ENV) == "1":
    # imported in a process of a CPU run: the prompt processor's spawned helper re-imports the main
    # script (this file, or one importing it) before it unpickles anything from threestudio
    backend().install(force=True)
