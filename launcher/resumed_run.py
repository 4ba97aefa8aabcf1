"""A run resumed with ``resume=<ckpt>`` continues the killed run's logs and shows its progress bar's total.

launch.py gives every run ``CSVLogger(trial_dir, name="csv_logs")`` and ``TensorBoardLogger(trial_dir,
name="tb_logs")``, which open a new ``version_<n+1>`` folder each time, and Lightning's progress bar sets
its total when an epoch starts, which a run resumed mid-epoch skips (``40/?``). :func:`install` wraps
``Trainer.fit`` so that a resumed run writes into the trial's newest log folders from the checkpoint's step
on (the killed run's rows from that step are replaced: no step is logged twice) and the bar gets its total.
"""
from __future__ import annotations

import csv
import functools
import inspect
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment


def newest_version(root: Path) -> Optional[int]:
    """The largest n of the ``version_<n>`` folders in ``root``; None when there is none."""
    return max((int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit() and p.is_dir()), default=None)


def checkpoint_step(path) -> Optional[int]:
    """The global step a Lightning checkpoint was saved at (its tensors are mapped, not read), loaded as
    Lightning loads a local file (torch's default ``weights_only``, nothing more permissive); None when it
    cannot be read that way or has no step (Lightning then reports what is wrong with the file)."""
    import pickle

    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True)
    except (pickle.UnpicklingError, RuntimeError, OSError):
        return None
    return ckpt.get("global_step") if isinstance(ckpt, dict) else None


def rows_before(path: Path, step: int) -> List[dict]:
    """The rows of a CSV log logged before ``step`` (none when the file does not exist)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if (row.get("step") or "").isdigit() and int(row["step"]) < step]


class ContinuedCSVLogger(CSVLogger):
    """A CSV log that continues the newest version folder of ``save_dir/name``, keeping the rows logged
    before ``resume_step`` (a new ``version_0`` when there is none)."""

    def __init__(self, save_dir, name: str, resume_step: int):
        self._resume_step: Optional[int] = resume_step
        super().__init__(save_dir, name=name, version=newest_version(Path(save_dir) / name))

    @property
    @rank_zero_experiment
    def experiment(self):
        step, self._resume_step = self._resume_step, None
        if step is None:
            return super().experiment
        kept = rows_before(Path(self.log_dir) / "metrics.csv", step)
        with warnings.catch_warnings():  # it says the old file will be deleted: it is written again below
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            writer = super().experiment
        for row in kept:
            writer.log_metrics({k: v for k, v in row.items() if k != "step" and v not in ("", None)}, int(row["step"]))
        writer.save()
        if kept:
            print(f"[run_threestudio] resumed at step {step}: continuing the log {self.log_dir}", file=sys.stderr)
        return writer


class ResumedBarTotal(Callback):
    """Gives the training progress bar its total in a run resumed mid-epoch: Lightning's TQDMProgressBar sets
    it in ``on_train_epoch_start``, a hook a restarted epoch does not call."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        bar = trainer.progress_bar_callback
        if not isinstance(bar, TQDMProgressBar) or bar.train_progress_bar.total is not None:
            return
        total = trainer.num_training_batches  # inf for an IterableDataset without __len__
        if trainer.max_steps > 0:
            total = min(total, batch_idx + trainer.max_steps - trainer.global_step)
        if total != float("inf"):
            tqdm = bar.train_progress_bar
            tqdm.total, tqdm.initial, tqdm.n = total, batch_idx, batch_idx  # the rate counts this run's batches
            tqdm.set_description(f"Epoch {trainer.current_epoch}")


def continued(logger, resume_step: int):
    """``logger`` continuing its newest log folder from ``resume_step`` (launch.py's CSV and TensorBoard loggers)."""
    if type(logger) is CSVLogger:
        return ContinuedCSVLogger(logger.save_dir, logger.name, resume_step)
    if type(logger) is TensorBoardLogger:
        version = newest_version(Path(logger.root_dir))  # TensorBoard drops that folder's events from the step on
        return TensorBoardLogger(logger.save_dir, name=logger.name, version=version, purge_step=resume_step)
    return logger


def install() -> None:
    """Wrap ``pl.Trainer.fit``: with a ``ckpt_path``, the loggers continue from its step; the bar gets its total."""
    fit = pl.Trainer.fit
    signature = inspect.signature(fit)

    @functools.wraps(fit)
    def fit_continuing(self, *args, **kwargs):
        ckpt_path = signature.bind(self, *args, **kwargs).arguments.get("ckpt_path")
        step = checkpoint_step(ckpt_path) if ckpt_path and Path(ckpt_path).is_file() else None  # not "last", "hpc"
        if step is not None:
            self.loggers = [continued(logger, step) for logger in self.loggers]
        self.callbacks.append(ResumedBarTotal())
        return fit(self, *args, **kwargs)

    pl.Trainer.fit = fit_continuing
