"""Score distillation: the guidance modes (``modes``), their weights and losses (``gradients``) and
the learned manifold corrective of LMC-SDS (``lmc``)."""
from .gradients import WEIGHTING_STRATEGIES, pixel_loss, surrogate_loss, weighting
from .modes import (
    ARTIFACT_DESCRIPTORS,
    MODES,
    bridge_distillation,
    dds_distillation,
    guided_prediction,
    lmc_distillation,
    score_distillation,
    sdi_gradient,
    sds_gradient,
    source_prompt,
)
