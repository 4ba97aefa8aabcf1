from . import degraded_multiview, steps_datamodule
