"""``run_threestudio.py`` with every rank recording chosen logged values (host tests only).

Lightning's CSV log holds rank 0's values only. Run this file instead of run_threestudio.py with
``DREAMSAMPLER_RECORD=train/timestep,...`` and ``DREAMSAMPLER_RECORD_DIR=<dir>``: each rank appends
``global_step<TAB>key<TAB>value`` to ``<dir>/rank<LOCAL_RANK>.tsv`` whenever the system logs one of
those keys. DDP ranks re-run this file, so every rank records.
"""
import os
from pathlib import Path

from dreamsampler_launcher import run_threestudio  # in a spawned helper of a CPU run this installs the backend


def record_logged_values(keys, out_dir: Path) -> None:
    import pytorch_lightning as pl

    log = pl.LightningModule.log
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"rank{os.environ.get('LOCAL_RANK', '0')}.tsv"

    def recording_log(self, name, value, *args, **kwargs):
        if name in keys:
            with open(path, "a") as f:
                f.write(f"{self.global_step}\t{name}\t{float(value)}\n")
        return log(self, name, value, *args, **kwargs)

    pl.LightningModule.log = recording_log


if __name__ == "__main__":
    record_logged_values(os.environ["DREAMSAMPLER_RECORD"].split(","), Path(os.environ["DREAMSAMPLER_RECORD_DIR"]))
    run_threestudio.main()
