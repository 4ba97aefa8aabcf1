"""The launcher: threestudio's launch.py with the extension (``run_threestudio``), smoke runs (``smoke``),
configs stated over a base (``config_base``) and the CPU backend for threestudio (``threestudio_cpu``)."""
