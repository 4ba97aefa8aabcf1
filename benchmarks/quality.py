"""Every task's quality on the miniature world model (2D, SVG, NeRF), DreamSampler against its baselines, in one table.

    python benchmarks/quality.py [--quick] [--out outputs/quality] [--tasks restore-blur,inpaint,...]

Each DreamSampler row (and each baseline that is a setting of the same system) is a run of the shipped
config through ``dreamsampler_launcher.run_threestudio --cpu`` (the command a user runs), on the trained
``dreamsampler/world/mini-sd`` at its native 64 px, on held-out world icons (eval seeds, never seen in
training). Baselines that are not settings of our systems are computed here with the core or diffusers:
data consistency alone (the CG solution of supp. eq. 13 with x_ref = 0) and DDIM inversion followed by
CFG resampling (diffusers' ``DDIMInverseScheduler`` and ``StableDiffusionPipeline``).

Metrics: PSNR / SSIM against the clean icon (``dreamsampler.metrics``); attributes read back with the
world's reader (``dreamsampler.world.evaluator``). Every run lands in ``<out>/runs/<task>/<method>/<scene>``
and is skipped when its ``save/metrics.json`` exists, so an interrupted benchmark resumes run by run; a
task's rows go to ``<out>/<task>.json``, its figure (inputs, each method, ground truth) to
``<out>/<task>.png``, and the whole table to ``<out>/quality.json`` and ``<out>/quality.md``.

Each task run also gets its results page, ``docs/results/<task>.md`` (``--results DIR``; none for
``--quick`` unless asked): its table, its figures copied next to it, the command line, the commit, the
date, the machine and the wall time, so that no number in the documentation is copied by hand.

This file is the command line and the ``TASKS`` registry; the tasks, one module per family, are the package
``benchmarks/quality_tasks/`` beside it (``common``, ``image``, ``nerf``, ``svg``, ``text_to_image``,
``text_to_nerf``, ``results``), each task's methods a table of ``common.Method`` (an id, a label, a config and
its overrides).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import torch


def _load_tasks_package(name: str = "quality_tasks"):
    """The package beside this file, loaded by its file location (``benchmarks/`` is no package, nothing here
    edits ``sys.path``, and the tests load this file the same way); its modules then import as usual."""
    if name not in sys.modules:
        folder = Path(__file__).resolve().parent / name
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


_load_tasks_package()
from quality_tasks import common, image, nerf, results, svg, text_to_image, text_to_nerf  # noqa: E402,F401
from quality_tasks.common import REPO, Settings, command_line  # noqa: E402
from quality_tasks.results import (git_commit, machine, markdown, run_records, save_figure, summarize,  # noqa: E402
                                   write_results_page)

TASKS: Dict[str, Callable] = {  # name -> task (a common.Task: its methods, and rows(settings))
    "inpaint": image.inpaint(),
    "edit": image.edit(),
    "restore-blur": image.restore("restore-blur"),
    "restore-x4": image.restore("restore-x4"),
    "nerf-blur": nerf.nerf("nerf-blur"),
    "nerf-x4": nerf.nerf("nerf-x4"),
    "nerf-x8": nerf.nerf("nerf-x8"),
    "nerf-inconsistent": nerf.nerf("nerf-inconsistent"),
    "svg-blur": svg.svg("svg-blur"),
    "svg-x8": svg.svg("svg-x8"),
    "text-to-image": text_to_image.text_to_image(),
    "text-to-nerf": text_to_nerf.text_to_nerf("text-to-nerf"),
    "text-to-nerf-heldout": text_to_nerf.text_to_nerf("text-to-nerf-heldout", first_seed=3,
                                                      ids=["dreamsampler", "dreamsampler-guided", "sds"]),
    "text-to-nerf-peers": text_to_nerf.text_to_nerf("text-to-nerf-peers", methods=text_to_nerf.T2N_PEER_METHODS,
                                                    prompts=text_to_nerf.T2N_PEER_PROMPTS, reference="sdi"),
    "text-to-nerf-long": text_to_nerf.text_to_nerf("text-to-nerf-long", steps=text_to_nerf.T2N_LONG_STEPS, seeds=1,
                                                   val_every=100, ids=["dreamsampler", "sds"]),
    "text-to-nerf-peers-long": text_to_nerf.text_to_nerf("text-to-nerf-peers-long", **text_to_nerf.PEERS_LONG),
    "text-to-nerf-peers-long-heldout": text_to_nerf.text_to_nerf("text-to-nerf-peers-long-heldout", first_seed=3,
                                                                 note=text_to_nerf.HELDOUT_NOTE,
                                                                 **text_to_nerf.HELDOUT),
    "text-to-nerf-schedules": text_to_nerf.text_to_nerf("text-to-nerf-schedules", first_seed=6,
                                                        note=text_to_nerf.SCHEDULES_NOTE, **text_to_nerf.SCHEDULES),
    "text-to-nerf-swaps-heldout": text_to_nerf.text_to_nerf("text-to-nerf-swaps-heldout", first_seed=3,
                                                            note=text_to_nerf.SWAPS_HELDOUT_NOTE,
                                                            **text_to_nerf.SWAPS_HELDOUT),
    "text-to-nerf-swaps": text_to_nerf.text_to_nerf("text-to-nerf-swaps", seeds=1, methods=text_to_nerf.T2N_SWAP_METHODS,
                                                    prompts=text_to_nerf.SWAP_PROMPTS, reference="dreamsampler-swap",
                                                    note=text_to_nerf.SWAP_NOTE, log_evals=True),
}
QUICK_TASKS = ("restore-blur",)


def about(task, s: Settings) -> str:
    """What ``task`` ran, for its results page (its ``about``; "" for tasks that do not say)."""
    say = getattr(task, "about", None)
    return say(s) if say else ""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one icon, the fastest task only (about 5 minutes)")
    ap.add_argument("--out", default="outputs/quality")
    ap.add_argument("--tasks", default=None, help=f"comma-separated subset of {','.join(TASKS)}")
    ap.add_argument("--scenes", type=int, default=None)
    ap.add_argument("--nfe", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None, help="seeds per prompt of the text-to-NeRF tasks that do not fix "
                    "their own (default 3; runs go seed by seed, so a smaller number reuses the first runs of a larger)")
    ap.add_argument("--jobs", type=int, default=1, help="threestudio runs computed side by side (text-to-NeRF tasks; "
                    "each run's process at OMP_NUM_THREADS threads, 1 unless set): at most the cores")
    ap.add_argument("--nerf-steps", type=int, default=None, help="eq. 18 steps after the degraded-view NeRF tasks' "
                    "100-step warm-up (default 100); runs are cached without it, so give another --out")
    ap.add_argument("--nerf-scenes", type=int, default=None, help="world objects of the degraded-view NeRF tasks "
                    "(default 3; the first ones are the same objects, so a larger number reuses their runs)")
    ap.add_argument("--results", default=None, help="folder of the results pages (default docs/results; with --quick "
                    "none unless given; '' for none)")
    args = ap.parse_args(argv)
    command = command_line("quality.py", argv)
    results = args.results if args.results is not None else ("" if args.quick else str(REPO / "docs" / "results"))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    names = args.tasks.split(",") if args.tasks else list(QUICK_TASKS if args.quick else TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"--tasks: unknown task(s) {unknown}; known: {list(TASKS)}")
    s = Settings(out=Path(args.out).resolve(), scenes=args.scenes or (1 if args.quick else 5),
                 nfe=args.nfe or 200, quick=args.quick, jobs=args.jobs, **({"t2n_seeds": args.seeds} if args.seeds else {}),
                 **({"nerf_steps": args.nerf_steps} if args.nerf_steps else {}),
                 **({"nerf_scenes": args.nerf_scenes} if args.nerf_scenes else {}))
    s.out.mkdir(parents=True, exist_ok=True)
    saved = s.out / "quality.json"  # tasks measured earlier in this folder stay in the table
    table, start = (json.loads(saved.read_text())["table"] if saved.exists() else {}), time.time()
    for name in names:
        print(f"[quality] {name}", flush=True)
        t0, s.runs_used, s.runs_computed = time.time(), [], 0
        rows, figure, columns = TASKS[name](s)
        table[name] = summarize(rows)
        (s.out / f"{name}.json").write_text(json.dumps({"rows": rows, "summary": table[name]}, indent=1))
        save_figure(s.out / f"{name}.png", figure, columns)
        print(markdown({name: table[name]}), f"({time.time() - t0:.0f} s)", flush=True)
        if results:
            page = write_results_page(Path(results), name, table[name], {
                "command": command, "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": machine(), "seconds": round(time.time() - t0),
                "runs": {"used": len(set(s.runs_used)), "computed": s.runs_computed, **run_records(s.runs_used)},
                "settings": {"scenes": s.scenes, "nfe": s.nfe,
                             "text-to-NeRF seeds (tasks that do not fix theirs)": s.t2n_seeds,
                             "degraded-view NeRF steps after the warm-up": s.nerf_steps,
                             "degraded-view NeRF scenes": s.nerf_scenes,
                             "model": "dreamsampler/world/mini-sd"}}, s.out, about=about(TASKS[name], s))
            print(f"[quality] results page {page}", flush=True)
    if saved.exists():  # another invocation on the same --out may have finished tasks meanwhile: keep them
        table = {**json.loads(saved.read_text())["table"], **{name: table[name] for name in names}}
    table = {k: table[k] for k in TASKS if k in table}
    meta = {"tasks": names, "scenes": s.scenes, "nfe": s.nfe, "quick": s.quick, "seconds": round(time.time() - start),
            "model": "dreamsampler/world/mini-sd", "threads": torch.get_num_threads()}
    saved.write_text(json.dumps({"meta": meta, "table": table}, indent=1))
    (s.out / "quality.md").write_text(markdown(table) + f"\n{meta}\n")
    print(f"[quality] {meta['seconds']} s; table in {s.out / 'quality.md'}")
    return table


if __name__ == "__main__":
    main()
