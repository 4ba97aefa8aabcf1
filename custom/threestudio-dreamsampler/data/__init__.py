from . import steps_datamodule
