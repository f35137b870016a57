"""Launchers: the same evaluation units, fanned out to local worker processes or a Slurm job array.

- :mod:`.dispatch`: ``launch_eval``, the entry point.
- :mod:`.units`: plan + triage once, cut the remaining units into bundles (long units alone).
- :mod:`.worker`: the callable a worker runs (``runner.run`` on a list of unit keys), requeue-aware.
- :mod:`.local`: ``--launcher local --jobs N [--devices 0,1]``.
- :mod:`.slurm`: ``--launcher slurm`` through submitit's AutoExecutor (optional extra ``[slurm]``).
- :mod:`.status`: ``lvmbench status``, the grid at a glance.

No scheduler lives here: the runner's claims keep every unit computed once, its triage skips
finished units and recomputes stale ones, and the epoch checkpoints of detection and segmentation resume a stopped unit.
"""

from __future__ import annotations

from lvmbench.kit.lazy import lazy_attributes

# ``launch_eval`` loads the launchers (and torch) on first use; ``status`` and ``claims`` stay light.
_WHERE = {"launch_eval": "dispatch", "dry_run_units": "dispatch"}


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
