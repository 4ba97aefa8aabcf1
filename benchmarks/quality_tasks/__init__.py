"""The tasks of ``benchmarks/quality.py``, one module per family; ``quality.py`` keeps the command line and the
``TASKS`` registry and loads this package by its file location (``benchmarks/`` is no package).

- ``common``: ``Settings``, ``Scene``, ``Method`` (a row of a task's table as data: id, label, config,
  overrides), ``Task``, ``run`` (one cached threestudio run), the held-out scenes and the reading helpers
- ``image``: restoration (``restore-blur``, ``restore-x4``), ``inpaint`` and ``edit`` (supp. Alg. 3 and 4)
- ``nerf``: NeRF from degraded views (``nerf-blur``, ``nerf-x4``; supp. eq. 18-19)
- ``svg``: SVG restoration (``svg-blur``, ``svg-x8``; eq. 21)
- ``text_to_image``: ``text-to-image`` (the identity generator against distilled latents)
- ``text_to_nerf``: ``text-to-nerf``, ``-heldout``, ``-peers`` and ``-long``
- ``results``: summaries, the Markdown table, figures and curves, results pages and their provenance
"""
