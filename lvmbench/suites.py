"""Suites: which tasks run, on which data, with which profile of each task.

A task belongs to suite S when S is in its ``suites`` list or it has a ``profiles.S`` section; the
profile is deep-merged into the task spec (smaller sizes, fewer epochs, another data folder).

Besides the built-in suites (``lvmmed``, ``smoke``, ``shared-data``), any suite a task names is a
suite of its own (real data from ``--data-root``, its own leaderboard table, never mixed into the
LVM-Med tables); a plugin package may describe its suites through the ``lvmbench.suites`` entry
point group (an object mapping name -> description, or -> ``{description, data_root}``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from lvmbench.data.synth import SYNTH, synthetic_suite_root
from lvmbench.errors import UnknownNameError
from lvmbench.paths import data_root as explicit_or_env
from lvmbench.registry import suggest
from lvmbench.spec import TaskSpec
from lvmbench.task_files import SUITES, Suite, declared_suites, parsed_tasks  # noqa: F401 (the suites' API)


def all_suites() -> dict[str, Suite]:
    """Built-in suites, plugin-described suites, and every other suite a task names (task files
    parsed, not checked: naming a suite needs no protocol, and with it no torch)."""
    return declared_suites(parsed_tasks())


def get_suite(name: str) -> Suite:
    if name in SUITES:
        return SUITES[name]
    known = all_suites()
    if name in known:
        return known[name]
    hint = suggest(name, list(known))
    raise UnknownNameError(f"no suite '{name}'" + (f"; did you mean '{hint}'?" if hint else f"; known: {', '.join(known)}"))


def synthetic_folders(specs: list[TaskSpec]) -> list[str]:
    """The synthetic datasets the tasks (their suite profile applied) read: ``data.dir`` and each
    out-of-distribution set's folder, where a synthetic writer is registered for it."""
    known = set(SYNTH.names())
    wanted: list[str] = []
    for spec in specs:
        if spec.data.location != "data_root":
            continue  # a sample shipped in the task folder
        for d in [spec.data.dir, *(o.dir or spec.data.dir for o in spec.ood)]:
            top = Path(d).parts[0] if Path(d).parts else d
            if top in known and top not in wanted:
                wanted.append(top)
    return sorted(wanted)


def suite_data_root(suite: str | None, data_root: Path | None, *, cache_dir: Path | None = None, generate: bool = True,
                    log: Callable[[str], None] | None = None, tasks: list[TaskSpec] | None = None) -> Path | None:
    """The data root ``lvmbench eval --suite S`` uses: ``--data-root`` > LVMBENCH_DATA > the suite's
    default. ``data_root`` is ``--data-root`` as typed; a synthetic suite never uses LVMBENCH_DATA
    (its data is generated under the cache, ``generate=False`` only names the folder; ``tasks``:
    write only the datasets these tasks read, default every one)."""
    if suite and get_suite(suite).synthetic:
        only = synthetic_folders(tasks) if tasks is not None else None
        return synthetic_suite_root(data_root, cache_dir, generate=generate, log=log or (lambda line: print(line, file=sys.stderr)), only=only)
    explicit = explicit_or_env(data_root)
    if explicit or not suite:
        return explicit
    default = get_suite(suite).default_data_root
    return Path(default) if default and Path(default).is_dir() else None


