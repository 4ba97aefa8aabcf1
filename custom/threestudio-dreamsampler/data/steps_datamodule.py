"""``dreamsampler-steps-datamodule``: one batch per optimizer step for systems whose data live in
the system itself (2D images, SVG): the batch only carries the step index, so threestudio's
Trainer drives the loop, the progress bar, validation and checkpoints as for any other system."""
from dataclasses import dataclass

import pytorch_lightning as pl
import threestudio
import torch
from threestudio.utils.config import parse_structured
from threestudio.utils.typing import *
from torch.utils.data import DataLoader, Dataset


class _Steps(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"index": torch.tensor(i)}


@threestudio.register("dreamsampler-steps-datamodule")
class StepsDataModule(pl.LightningDataModule):
    @dataclass
    class Config:
        train_length: int = 100000  # batches per epoch; trainer.max_steps ends the run
        n_val: int = 1
        n_test: int = 1

    cfg: Config

    def __init__(self, cfg: Optional[Union[dict, DictConfig]] = None) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)

    def _loader(self, n):
        return DataLoader(_Steps(n), batch_size=1, num_workers=0)

    def train_dataloader(self):
        return self._loader(self.cfg.train_length)

    def val_dataloader(self):
        return self._loader(self.cfg.n_val)

    def test_dataloader(self):
        return self._loader(self.cfg.n_test)

    def predict_dataloader(self):
        return self._loader(self.cfg.n_test)
