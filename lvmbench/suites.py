"""Suites: which tasks run, on which data, with which profile of each task.

A task belongs to suite S when S is in its ``suites`` list or it has a ``profiles.S`` section; the
profile is deep-merged into the task spec (smaller sizes, fewer epochs, another data folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvmbench.errors import UnknownNameError
from lvmbench.paths import cache_root
from lvmbench.registry import suggest


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    synthetic: bool = False
    default_data_root: str | None = None


SUITES = {
    "lvmmed": Suite("lvmmed", "the 15 LVM-Med downstream tasks on real data from --data-root, paper protocols"),
    "smoke": Suite("smoke", "every task on generated synthetic data in the publishers' layouts, tiny sizes, 1-2 epochs", synthetic=True),
    "shared-data": Suite(
        "shared-data",
        "tasks whose real data is in ../shared/data (subsets), small budgets",
        default_data_root=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
    ),
}


def get_suite(name: str) -> Suite:
    if name in SUITES:
        return SUITES[name]
    hint = suggest(name, list(SUITES))
    raise UnknownNameError(f"no suite '{name}'" + (f"; did you mean '{hint}'?" if hint else f"; known: {', '.join(SUITES)}"))


def synthetic_root(cache_dir: Path | None = None) -> Path:
    """Where the smoke suite's synthetic data is generated: under ``--cache-dir`` when one is given."""
    from lvmbench.data.synth import SYNTH_VERSION

    return (cache_dir or cache_root()) / f"synth-v{SYNTH_VERSION}"
