"""``dreamsampler-text-to-nerf-system``: text-to-NeRF with DreamSampler (supplementary sec. 5.3).

threestudio's DreamFusion system (implicit-volume geometry, NeRF volume renderer, its sparsity /
opacity / orientation / z-variance regularizers, validation images, the test-time 360-degree video,
mesh export through ``--export``) driven by ``dreamsampler-guidance``: the timestep decreases over
the run and the noise is the previous prediction (main paper Alg. 2); with ``guidance.pixel_loss``
the guidance also returns the pixel regularizer R = ||g - D(z0^_t(c))||^2, weighted by
``system.loss.lambda_pixel`` through DreamFusion's ``loss_* x lambda_*`` loop.

What this class adds: the guidance state (schedule position and carried noise) travels with the
checkpoint, and with ``reseed_every_step`` every training step draws its random numbers from
``(seed, global_step, rank)``, so a run resumed from a checkpoint continues as the uninterrupted run
would (given a data module whose batches are a function of the step, e.g. the degraded-view one).
"""
from dataclasses import dataclass

import pytorch_lightning as pl
import threestudio
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.typing import *

from .guidance_state import GuidanceStateMixin
from .run_fingerprint import RunFingerprintMixin


@threestudio.register("dreamsampler-text-to-nerf-system")
class DreamSamplerNeRF(RunFingerprintMixin, GuidanceStateMixin, DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        seed: int = 0  # set to ${seed}
        reseed_every_step: bool = True

    cfg: Config
    RUN_SHAPING = ("guidance_type", "guidance.mode")

    def on_fit_start(self) -> None:
        super().on_fit_start()  # builds the prompt processor and the guidance
        self.restore_guidance_state()

    def on_train_batch_start(self, batch, batch_idx, unused=0):
        if self.cfg.reseed_every_step:
            step_seed = (self.cfg.seed * 1_000_003 + self.true_global_step * 101 + self.global_rank) % 2**32
            pl.seed_everything(step_seed, workers=False, verbose=False)
        super().on_train_batch_start(batch, batch_idx, unused)
