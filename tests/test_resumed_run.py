"""resumed_run without threestudio: a one-parameter Lightning model on an endless IterableDataset, run to
the end, then resumed from its step-2 checkpoint into the same log folders, as launch.py's loggers."""
import csv
import re

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, IterableDataset

from dreamsampler_launcher import resumed_run


class Endless(IterableDataset):  # no __len__, as the NeRF data modules
    def __iter__(self):
        while True:
            yield torch.ones(1)


class One(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        loss = (self.w * batch).square().sum()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(Endless(), batch_size=None)


def fit(trial, ckpt_path=None):
    loggers = [TensorBoardLogger(trial, name="tb_logs"), CSVLogger(trial, name="csv_logs")]
    checkpoints = ModelCheckpoint(trial / "ckpts", every_n_train_steps=2, save_top_k=-1)
    bar = TQDMProgressBar()  # launch.py's bar is one (threestudio's CustomProgressBar)
    trainer = pl.Trainer(max_steps=4, logger=loggers, callbacks=[checkpoints, bar], log_every_n_steps=1,
                         accelerator="cpu", enable_model_summary=False)
    trainer.fit(One(), ckpt_path=ckpt_path)


def logged(trial):
    with open(trial / "csv_logs" / "version_0" / "metrics.csv", newline="") as f:
        return [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r["train/loss"]]


def test_a_resumed_fit_continues_the_log_and_shows_the_bar_total(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pl.Trainer, "fit", pl.Trainer.fit)  # install() wraps it for this test only
    resumed_run.install()
    fit(tmp_path)
    whole = logged(tmp_path)
    capsys.readouterr()

    fit(tmp_path, ckpt_path=tmp_path / "ckpts" / "epoch=0-step=2.ckpt")
    bar = capsys.readouterr().out
    assert [p.name for p in (tmp_path / "csv_logs").iterdir()] == ["version_0"]
    assert [p.name for p in (tmp_path / "tb_logs").iterdir()] == ["version_0"]
    assert [s for s, _ in whole] == [0, 1, 2, 3] and logged(tmp_path) == whole
    assert "| 4/4 [" in bar and not re.search(r"\| [1-9]\d*/\? \[", bar), bar[-2000:]
