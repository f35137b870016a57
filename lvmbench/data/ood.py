"""Out-of-distribution test sets (``task.ood``): each is read by its own reader and every case of it
is a test case, scored with the model trained on the task's own training split.

An OOD set reuses the task's reader and options unless it names another reader; ``sites`` selects
the sites of a multi-site layout; the task's classes are filled in. ``verify``, the pre-run check,
the data fingerprint (so an edited OOD label file makes results stale) and the segmentation
protocols all read the sets through :func:`load_ood`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvmbench.data.cases import Case, DatasetReader, make_reader
from lvmbench.spec import OODSet, TaskSpec


@dataclass
class OODData:
    spec: OODSet
    reader: DatasetReader
    cases: list[Case]

    @property
    def name(self) -> str:
        return self.spec.name


def ood_reader(spec: TaskSpec, o: OODSet, data_root: Path) -> DatasetReader:
    """The reader of one OOD set under the data root (the task's data root, not its dataset folder)."""
    same = o.reader is None or o.reader == spec.data.reader
    options = {**(spec.data.options if same else {}), **o.options}
    if o.sites:
        options["sites"] = list(o.sites)
    options.setdefault("classes", list(spec.classes))
    return make_reader(o.reader or spec.data.reader, Path(data_root) / (o.dir or spec.data.dir), options)


def ood_readers(spec: TaskSpec, data_root: Path) -> list[tuple[str, DatasetReader]]:
    """(name, reader) of every OOD set, without listing their cases (``data verify`` lists them itself)."""
    return [(o.name, ood_reader(spec, o, data_root)) for o in spec.ood]


def load_ood(spec: TaskSpec, data_root: Path) -> list[OODData]:
    """Every OOD set with its cases."""
    out = []
    for o in spec.ood:
        reader = ood_reader(spec, o, data_root)
        out.append(OODData(o, reader, reader.cases()))
    return out
