"""What every task shares: the settings, the held-out scenes, methods as data, one cached threestudio run, and
the helpers that read results back."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import imageio.v3 as iio
import numpy as np
import torch

from dreamsampler.image_io import read_image, to_uint8
from dreamsampler.metrics import psnr, ssim
from dreamsampler.world import COLOUR_NAMES, MINI_SD, SPLIT_OFFSETS, sample_icon
from dreamsampler.world.evaluator import Reader

REPO = Path(__file__).resolve().parents[2]
SCENE_SEED = SPLIT_OFFSETS["eval"] + 700_000  # held-out icons of this benchmark (eval split)
OPERATORS = {  # the paper's restoration operators at the world's scale (64 px)
    "restore-blur": [{"type": "blur", "kernel_size": 5, "sigma": 10.0}],
    "restore-x4": [{"type": "downsample", "factor": 4}],
}
# threads of each run's process (OMP_NUM_THREADS, unless set): a run's tensors are small, so a second thread buys
# little and costs much when two benchmarks share the cores (a degraded-view run side by side with another
# benchmark on 2 cores: 467 s at 2 threads each, 41-81 s at 1)
RUN_THREADS = os.environ.get("OMP_NUM_THREADS") or "1"
# the model fields of the configs that load the model twice (prompt processor and guidance): NeRF, SVG, text-to-NeRF
NERF_MODEL_FIELDS = ("system.prompt_processor.pretrained_model_name_or_path", "system.guidance.pretrained_model_name_or_path")
LMC_TRAINING = ["--world", "2048", "--resolution", "64", "--depth", "2", "--steps", "2000", "--seed", "0"]


@dataclass
class Settings:
    out: Path
    scenes: int
    nfe: int
    quick: bool
    nerf_scenes: int = 3
    nerf_size: int = 32  # render size (resized to the mini model's 64 for the guidance): CPU time
    nerf_warmup: int = 100
    nerf_steps: int = 100  # eq. 18 steps after the warm-up
    nerf_samples: int = 32  # samples per ray
    nerf_val_every: int = 50
    svg_steps: int = 200
    t2i_seeds: int = 4
    t2i_nfe: int = 50  # DDIM steps, as the mini model's card measures it
    t2i_steps: int = 500  # distillation steps of the latent baselines
    t2n_seeds: int = 3
    t2n_steps: int = 200  # CPU time: about 0.4 s a step at these sizes
    t2n_val_every: int = 50
    jobs: int = 1  # runs computed side by side (run_all); each run's process at RUN_THREADS threads
    log: Callable[[str], None] = print
    reader: Reader = field(default_factory=lambda: Reader())  # looked up when made (tests replace it)
    runs_used: List[Path] = field(default_factory=list)  # run folders the current task read (computed or cached)
    runs_computed: int = 0  # of those, computed by this invocation


@dataclass
class Scene:
    """A held-out icon: its image [1,3,64,64] in [0,1], caption, attributes and the PNG the configs read."""

    index: int
    image: torch.Tensor
    caption: str
    attrs: object
    path: Path


def slug(method: str) -> str:
    """A method's name as a folder name."""
    return re.sub(r"[^a-z0-9]+", "-", method.lower().replace("'", "")).strip("-")


class _Values(dict):
    """The values a method's override templates are filled with; a callable is called only when a template names it."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        return value() if callable(value) else value


@dataclass(frozen=True)
class Method:
    """One row of a task's table, as data.

    ``id``: a short stable key (the JSON rows' ``id``; what the tests name). ``label``: the row's name in the
    tables and results pages (the JSON rows' ``method``). ``config``: the run's ``configs/<config>.yaml``
    (``threestudio:<name>``: the threestudio checkout's), or "" for a baseline the benchmark computes itself.
    ``overrides``: threestudio overrides after the task's own, as ``str.format`` templates whose ``{name}``
    fields the task fills in (:meth:`args`; ``{{`` and ``}}`` for literal braces). ``folder``: the run folder
    under ``runs/<task>/`` when it is not ``slug(label)``. ``unet_per_step``: UNet evaluations per optimization
    step (NeRF: after the warm-up). ``schedule``: a NeRF run's warm-up and length (``nerf.SCHEDULES``).
    ``runs_of``: another task whose runs of this method (same config, overrides and folder) this task reads
    instead of computing its own (``runs/<runs_of>/<folder>/``); "" for the task's own runs."""

    id: str
    label: str
    config: str = ""
    overrides: Tuple[str, ...] = ()
    folder: str = ""
    unet_per_step: int = 0
    schedule: str = ""
    runs_of: str = ""

    @property
    def run_folder(self) -> str:
        """The folder of this method's runs under ``runs/<task>/``."""
        return self.folder or slug(self.label)

    def where(self, task: str, scene) -> str:
        """``<task>/<folder>/<scene>``: the run's folder under ``runs/`` (``<runs_of>/...`` for runs another task
        computes)."""
        return f"{self.runs_of or task}/{self.run_folder}/{scene}"

    def args(self, **values) -> List[str]:
        """The overrides with their ``{name}`` fields filled in from ``values`` (a callable value is called
        only when an override names it); an override that is one field alone, ``"{name}"``, whose value is a
        list stands for that list's overrides."""
        filled = _Values(values)
        out = []
        for o in self.overrides:
            whole = re.fullmatch(r"\{(\w+)\}", o)
            if not whole:
                out.append(o.format_map(filled))
                continue
            value = filled[whole.group(1)]
            out += list(value) if isinstance(value, (list, tuple)) else [format(value)]
        return out


DEGRADED = Method("degraded-input", "degraded input")  # the measurement itself, scored as a row


def pick(methods: Tuple[Method, ...], ids=None) -> Tuple[Method, ...]:
    """The methods of ``ids`` in that order (all of them without ``ids``)."""
    if not ids:
        return tuple(methods)
    by_id = {m.id: m for m in methods}
    return tuple(by_id[i] for i in ids)


def row(method: Method, scene, **values) -> dict:
    """A row of a task's JSON: the method's label and id, the scene, its scores."""
    return {"method": method.label, "id": method.id, "scene": scene, **values}


@dataclass(frozen=True)
class Task:
    """One task of the table: its methods (data) and ``rows(settings)`` -> (rows, figure, column titles);
    ``about(settings)``, when given: what the task ran (sizes, seeds, each method's settings), in Markdown, for
    its results page."""

    methods: Tuple[Method, ...]
    rows: Callable[[Settings], tuple]
    about: Optional[Callable[[Settings], str]] = None

    def __call__(self, s: Settings) -> tuple:
        return self.rows(s)


def scenes(s: Settings, count: int = 1) -> List[Scene]:
    out = []
    for i in range(s.scenes):
        img, caption, attrs = sample_icon(torch.Generator().manual_seed(SCENE_SEED + 1000 * count + i), count=count)
        path = s.out / "scenes" / f"icon{count}-{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            iio.imwrite(path, to_uint8(img))
        out.append(Scene(i, read_png(path), caption, attrs, path))
    return out


def read_png(path) -> torch.Tensor:
    """A saved image as ``[1, 3, H, W]``, read as the 2D system reads its inputs."""
    return read_image(str(path), "image")[None]


def quantized(x: torch.Tensor) -> torch.Tensor:
    """An image as it would be saved (8 bits), so computed baselines are scored like saved results."""
    return torch.from_numpy(to_uint8(x[0]).astype(np.float32) / 255).permute(2, 0, 1)[None]


def cached_image(path: Path, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()`` (an 8-bit-quantized image ``[1, 3, H, W]``), saved at ``path`` and read back on later calls."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, to_uint8(make()[0]))
    return read_png(path)


def command_line(script: str, argv: Optional[List[str]]) -> str:
    """How ``benchmarks/<script>`` was called (``argv``, else the process's), with paths in the checkout made
    relative, for a results page."""
    given = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *(a.replace(f"{REPO}{os.sep}", "") for a in given)])


def git_commit(repo: Path = REPO) -> str:
    """The checkout's short commit, with ``+modified`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" +modified" if dirty.stdout.strip() else "")


def run(s: Settings, config: str, where: str, overrides: List[str], steps: int | None = None,
        model_fields=("system.pretrained_model_name_or_path",), val_every: int | None = None,
        marker: str = "metrics.json") -> Path:
    """The ``save/`` folder of one run of ``configs/<config>.yaml`` on the mini model (cached: done when
    ``save/<marker>`` exists)."""
    root = s.out / "runs" / where
    s.runs_used.append(root)
    steps = steps or s.nfe
    done = next(root.glob(f"*/*/save/{marker}"), None) if root.exists() else None
    if done is not None:
        cached = json.loads((root / "run.json").read_text()).get("steps") if (root / "run.json").exists() else None
        if cached not in (None, steps):
            raise RuntimeError(f"{where}: the run cached in {root} has {cached} steps, not {steps}: give another --out")
        return done.parent
    cmd = [sys.executable, "-m", "dreamsampler_launcher.run_threestudio", "--config", str(config_file(config)),
           "--train", "--cpu", f"exp_root_dir={root}", *(f"{k}={MINI_SD}" for k in model_fields),
           f"trainer.max_steps={steps}", f"trainer.val_check_interval={val_every or steps}", *overrides]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": RUN_THREADS})
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{where}: {config} failed ({root / 'run.log'}):\n" + "\n".join(proc.stderr.splitlines()[-20:]))
    s.log(f"  {where}: {time.time() - start:.0f} s")
    with _COUNTING:
        s.runs_computed += 1
    (root / "run.json").write_text(json.dumps({"commit": git_commit(), "seconds": round(time.time() - start), "steps": steps}))
    return next(root.glob(f"*/*/save/{marker}")).parent


_COUNTING = threading.Lock()  # run_all's threads count their runs into the same Settings


def run_all(s: Settings, runs: List[dict]) -> None:
    """Compute the runs of ``runs`` (each :func:`run`'s keyword arguments) that are not cached, ``s.jobs`` at a
    time and started in the given order, so that an interrupted benchmark has the first ones; the task then reads
    each with :func:`run` (cached by then). With ``s.jobs`` 1 it does nothing: :func:`run` computes each run as the
    task reads it."""
    if s.jobs <= 1:
        return
    with ThreadPoolExecutor(s.jobs) as pool:
        for done in [pool.submit(run, s, **r) for r in runs]:
            done.result()


def config_file(config: str) -> Path:
    """``configs/<config>.yaml``, or for ``threestudio:<name>`` the threestudio checkout's ``configs/<name>.yaml``."""
    if config.startswith("threestudio:"):
        from dreamsampler_launcher.run_threestudio import threestudio_root

        return threestudio_root() / "configs" / f"{config.split(':', 1)[1]}.yaml"
    return REPO / "configs" / f"{config}.yaml"


def rect_of(attrs, k: int = 0, margin: float = 1.25) -> List[float]:
    """[x0, y0, x1, y1] (fractions) around shape ``k`` of an icon."""
    (x, y), r = attrs.positions[k], attrs.sizes[k] * margin
    return [round(max(0.0, x - r), 4), round(max(0.0, y - r), 4), round(min(1.0, x + r), 4), round(min(1.0, y + r), 4)]


def other_colour(colour: str) -> str:
    return COLOUR_NAMES[(COLOUR_NAMES.index(colour) + 1) % len(COLOUR_NAMES)]


def read_at(s: Settings, image: torch.Tensor, rect) -> Dict[str, str]:
    """(colour, shape) of the shape read nearest the centre of ``rect`` (None when nothing is there)."""
    read = s.reader(image, "icon")[0]
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    inside = [(abs(x - cx) + abs(y - cy), k) for k, (x, y) in enumerate(read["positions"])
              if rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3]]
    if not inside:
        return {"colour": None, "shape": None}
    k = min(inside)[1]
    return {"colour": read["colours"][k], "shape": read["shapes"][k]}


def image_scores(result: torch.Tensor, clean: torch.Tensor) -> Dict[str, float]:
    return {"psnr": float(psnr(result, clean)), "ssim": float(ssim(result, clean))}


def mini_corrective(s: Settings) -> Path:
    """k_psi for the mini model, trained by ``scripts/train_lmc.py`` on training-split world images (cached)."""
    path = s.out / "k-mini-sd.safetensors"
    if not path.exists():
        start = time.time()
        cmd = [sys.executable, str(REPO / "scripts" / "train_lmc.py"), "--model", str(MINI_SD), *LMC_TRAINING, "--out", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        (s.out / "k-mini-sd.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"train_lmc.py failed ({s.out / 'k-mini-sd.log'})")
        s.log(f"  k_psi for the mini model: {time.time() - start:.0f} s")
    return path
