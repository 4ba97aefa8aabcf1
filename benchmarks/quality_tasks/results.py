"""The benchmark's output: summaries, the Markdown table, the figures and curves, and the results pages with
their provenance (command, commit, date, machine, runs)."""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from dreamsampler.image_io import to_uint8

from .common import RUN_THREADS, git_commit  # noqa: F401  (git_commit: provenance of pages; runs record it too)


def summarize(rows: List[dict]) -> List[dict]:
    """Mean over scenes per method (its ``id`` kept); booleans become accuracies. Reads (``*_ok``) and PSNRs
    also get their standard error over scenes (``<key>_se``: sample std / sqrt(n); none for one scene)."""
    by = defaultdict(list)
    for r in rows:
        by[r["method"]].append(r)
    out = []
    for method, rs in by.items():
        agg = {"method": method, **({"id": rs[0]["id"]} if "id" in rs[0] else {}), "scenes": len(rs)}
        for key in rs[0]:
            if key in ("method", "id", "scene", "prompt"):
                continue
            values = [float(r[key]) for r in rs]
            agg[key] = float(np.mean(values))
            if (key.endswith("_ok") or "psnr" in key) and len(values) > 1:
                agg[f"{key}_se"] = float(np.std(values, ddof=1) / np.sqrt(len(values)))
        out.append(agg)
    return out


def title_lines(name: str, width: int = 14) -> List[str]:
    """A column title wrapped into lines of about ``width`` characters (a column's 96 px): at spaces, and a word
    longer than ``width`` also after its hyphens (``magic3d-coarse-sd.yaml``)."""
    pieces = []  # (text, joins the previous piece without a space)
    for word in name.split():
        parts = re.findall(r"[^-]*-|[^-]+$", word) if len(word) > width else [word]
        pieces += [(part, k > 0) for k, part in enumerate(parts)]
    line, lines = "", []
    for part, glued in pieces:
        joined = line + part if glued else f"{line} {part}".strip()
        if len(joined) > width and line:
            lines.append(line)
            line = part
        else:
            line = joined
    return lines + [line]


def save_figure(path: Path, figure: List[List[torch.Tensor]], columns: List[str]) -> None:
    from PIL import Image, ImageDraw

    size = 96
    titles = ["\n".join(title_lines(name)) for name in columns]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    head = max([40] + [measure.multiline_textbbox((0, 0), text, spacing=0)[3] + 2 for text in titles])  # every line
    sheet = Image.new("RGB", (size * len(columns), head + size * len(figure)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(titles):
        draw.multiline_text((j * size + 2, 0), text, fill="black", spacing=0)
    for i, row in enumerate(figure):
        for j, img in enumerate(row):
            big = F.interpolate(img, size=size, mode="nearest")
            sheet.paste(Image.fromarray(to_uint8(big[0])), (j * size, head + i * size))
    sheet.save(path)


def save_curves(path: Path, curves: Dict[str, List[List[dict]]], x: str, panels: Sequence[Tuple[str, str]], xlabel: str,
                title: str | None = None, figsize=(6, 4), logx: bool = False) -> None:
    """One panel per ``(key, ylabel)`` of ``panels``: for each method (``curves``: name -> its runs, each a list
    of points), the mean over runs of ``key`` against the mean of ``x``, over the points every run has (``logx``: a
    logarithmic x axis). More methods than matplotlib's 10 default colours: 20 colours, the legend beside the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(curves) > 10
    fig, axes = plt.subplots(1, len(panels), figsize=(figsize[0] + 4, figsize[1]) if many else figsize, squeeze=False)
    axes = axes[0]
    colours = plt.cm.tab20(np.linspace(0, 1, 20))[:len(curves)] if many else [None] * len(curves)
    for (name, runs), colour in zip(curves.items(), colours):
        n = min(len(r) for r in runs)
        if n == 0:
            continue
        xs = [np.mean([r[k][x] for r in runs]) for k in range(n)]
        for ax, (key, _) in zip(axes, panels):
            ax.plot(xs, [np.mean([r[k][key] for r in runs]) for k in range(n)], marker="o", label=name, color=colour)
    for ax, (_, ylabel) in zip(axes, panels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
    if title is not None:
        axes[0].set_title(title)
    if many:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize=7)
        fig.tight_layout(rect=(0, 0, 1 - 4 / (figsize[0] + 4), 1))
    else:
        axes[0].legend(fontsize=7)
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cell(key: str, value) -> str:
    """Accuracies (and their standard errors) to 3 decimals, other floats to 2."""
    if isinstance(value, float):
        return f"{value:.3f}" if key.endswith(("_ok", "_ok_se")) else f"{value:.2f}"
    return str(value)


def markdown(table: Dict[str, List[dict]]) -> str:
    lines = []
    for task, rows in table.items():
        keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("method", "id")))
        lines += [f"**{task}**", "", "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in rows:
            cells = [cell(k, r.get(k, "")) for k in keys]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- results pages


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> Dict[str, str]:
    """What the numbers were measured on."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    threads = f"{torch.get_num_threads()} (each run's process: {RUN_THREADS})"
    return {"cpu": cpu_model(), "cores": str(os.cpu_count()), "threads": threads, "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(), "os": f"{platform.system()} {platform.machine()}"}


def run_records(roots: List[Path]) -> dict:
    """What the run folders ``roots`` recorded when they were computed (``run.json``, each read once): how many each
    commit computed (older runs: unrecorded) and the wall time they took (0 where unrecorded)."""
    counts: Dict[str, int] = defaultdict(int)
    seconds = 0
    for root in dict.fromkeys(roots):
        record = root / "run.json"
        data = json.loads(record.read_text()) if record.exists() else {"commit": "unrecorded"}
        counts[data["commit"]] += 1
        seconds += data.get("seconds", 0)
    return {"commits": dict(counts), "seconds": seconds}


def results_page(task: str, rows: List[dict], provenance: dict, figures: List[str], about: str = "") -> str:
    """The Markdown page of one task: what it ran (``about``, when the task says), its table, figures, and how,
    where and when it was measured."""
    p = provenance
    runs = p["runs"]
    lines = [f"# {task}", "", f"Written by `benchmarks/quality.py` on {p['date']}; do not edit by hand: rerun the "
             "command below.", ""] + ([about.rstrip(), ""] if about else []) + [
             markdown({task: rows}).split("\n", 2)[2].rstrip(), ""]
    lines += [f"![{task}: {name}]({name})" for name in figures] + ([""] if figures else [])
    lines += ["| | |", "|---|---|", f"| command | `{p['command']}` |", f"| commit | `{p['commit']}` |",
              f"| date | {p['date']} |"]
    lines += [f"| {key} | {value} |" for key, value in p["machine"].items()]
    lines += [f"| wall time | {p['seconds']} s (this task, this invocation)"
              + (f"; its runs took {runs['seconds']} s when computed" if runs.get("seconds") else "") + " |",
              f"| runs | {runs['used']} run folders: {runs['computed']} computed by this invocation, "
              f"{runs['used'] - runs['computed']} read from `--out`'s cache"
              + "".join(f"; {n} computed at `{c}`" for c, n in sorted(runs["commits"].items())) + " |",
              f"| settings | {', '.join(f'{k} {v}' for k, v in p['settings'].items())} |", ""]
    return "\n".join(lines)


def write_results_page(results: Path, task: str, rows: List[dict], provenance: dict, out: Path, about: str = "") -> Path:
    """``<results>/<task>.md`` (``about``: what the task ran, above its table) and the task's figures from ``out``
    (``<task>.png``, ``<task>-curves.png``) copied next to it."""
    results.mkdir(parents=True, exist_ok=True)
    figures = []
    for name in (f"{task}.png", f"{task}-curves.png"):
        if (out / name).exists():
            shutil.copyfile(out / name, results / name)
            figures.append(name)
    page = results / f"{task}.md"
    page.write_text(results_page(task, rows, provenance, figures, about))
    return page
