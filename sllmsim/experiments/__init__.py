"""Experiments: a base trace × a grid of variations × seeds, run in parallel, cached, and reported.

- :mod:`sllmsim.experiments.spec` — the experiment YAML, its variation keys, and the points it expands to;
- :mod:`sllmsim.experiments.points` — running one point (trace → simulation → summary + invariants) and its cache key;
- :mod:`sllmsim.experiments.runner` — local processes or Ray tasks, progress bar, the result cache;
- :mod:`sllmsim.experiments.stats` — means, Student-t 95% intervals across seeds, paired comparisons;
- :mod:`sllmsim.experiments.experiment_report` and :mod:`sllmsim.experiments.plots` — the report folder.
"""
