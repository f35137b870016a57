"""One suite's leaderboard as data: cells, their CIs and bold ties, families, the paper's reported
numbers and the summary statistics. The markdown, the plots, the HTML page and the exports all
render this one object, so every view shows the same numbers.

- **Cell**: one encoder row on one task/protocol at label fraction 1. Seeds pool into a cell only
  when their identity agrees (:func:`lvmbench.identity.split_current`); an older group of the same
  encoder and column gets a row of its own, ``encoder ‹tag›``, and a note naming what differs.
- **CI**: :func:`lvmbench.stats.cell_ci` (whole patients/volumes resampled; the interval a protocol
  recorded itself, e.g. similarity queries, where it did).
- **Bold**: the best current encoder of a column and every current encoder a paired cluster
  bootstrap (Holm over the column) cannot tell apart from it; ``‹tag›`` rows never compete.
- **Families**: ``FAMILY_COLUMNS``; a family average exists only when the row has every task of
  the family in the suite (``k/K`` otherwise). Family tables group tasks by their main protocol
  (the first of ``default_protocols``), with each protocol variant as its own rows.
- **Mean rank**: per task of the suite (its main protocol), the rank of each current encoder among
  those that ran it (1 = best, ties share the average rank), averaged over the tasks it ran.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvmbench.audit import AUDIT_DIR, load_audits
from lvmbench.compare import encoder_label, matches
from lvmbench.identity import cell_key, differences, pool_key, split_current
from lvmbench.metric_names import protocol_metric as column_metric
from lvmbench.spec import ResultRecord, RunUnit, TaskSpec
from lvmbench.stats import CI, average_ranks, cell_ci, higher_is_better, holm, paired_test, stable_seed
from lvmbench.tasks import parsed_tasks

FAMILY_COLUMNS = {
    "2D seg": lambda t: t.family == "segmentation" and t.dims == "2d" and not t.ood,
    "3D seg": lambda t: t.family == "segmentation" and t.dims == "3d-slicewise" and not t.ood,
    "OOD": lambda t: bool(t.ood),
    "Cls": lambda t: t.family == "classification",
    "Det": lambda t: t.family == "detection",
}
FAMILY_TITLES = {
    "2D seg": "2D segmentation",
    "3D seg": "3D segmentation, slice-wise",
    "OOD": "Out-of-distribution segmentation",
    "Cls": "Classification",
    "Det": "Detection",
}
OTHER = "Other"  # tasks not registered in this checkout: no family, no average
FAMILY_TITLES[OTHER] = "Tasks not registered here"

# order of protocol rows and of task groups inside a family table (others follow by name)
PROTOCOL_ORDER = ("seg2d", "seg3d", "detection", "linear", "knn", "finetune", "retrieval", "similarity_queries")

Col = tuple[str, str]  # (task, protocol tag)


def family_of(spec: TaskSpec | None) -> str:
    if spec is None:
        return OTHER
    return next((f for f, pred in FAMILY_COLUMNS.items() if pred(spec)), OTHER)


def main_protocol(spec: TaskSpec) -> str:
    return (spec.default_protocols or list(spec.protocols))[0]


def protocol_key(tag: str, main: str = "") -> tuple:
    base = tag.split("-", 1)[0]
    rank = PROTOCOL_ORDER.index(base) if base in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
    return (tag != main, rank, base, tag)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def mean_std(values: list[float]) -> tuple[float, float, int]:
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0), len(values)


@dataclass
class Cell:
    row: str  # encoder label, with ``‹tag›`` for an older identity group
    col: Col
    records: list[ResultRecord]  # one per seed, sorted by seed
    ci: CI | None = None
    bold: bool = False
    marks: str = ""  # audit footnotes

    @property
    def current(self) -> bool:
        return "‹" not in self.row

    @property
    def stats(self) -> tuple[float, float, int]:
        return mean_std([r.primary for r in self.records])

    @property
    def mean(self) -> float:
        return self.stats[0]

    @property
    def metric(self) -> str:
        return self.records[0].primary_metric


@dataclass(frozen=True)
class Reported:
    """A published number (a ``TaskSpec.reported`` row), already x100."""

    encoder: str
    col: Col
    value: float
    std: float | None
    source: str
    metric: str

    @property
    def row(self) -> str:
        return f"{self.encoder} (reported)"


MAIN = "main"  # the protocol label of rows that show each task's own main protocol


@dataclass
class Group:
    """One family table: tasks sharing a main protocol, one block of rows per protocol. Tasks run
    with their main protocol only are merged into one table whose rows say ``main`` (each task's
    own protocol, named in ``mains``)."""

    family: str
    main: str
    tasks: list[str]
    rows: list[tuple[str, str]]  # (row label, protocol tag or MAIN), in display order
    mains: dict[str, str]  # task -> its main protocol

    def col(self, task: str, tag: str) -> Col:
        return (task, self.mains[task] if tag == MAIN else tag)


class SuiteBoard:
    def __init__(
        self,
        records: list[ResultRecord],
        suite: str,
        n_boot: int,
        alpha: float,
        warn: Callable[[str], None],
        results: Path,
        registered: list[TaskSpec] | None = None,
    ):
        self.suite, self.results = suite, results
        self.records = [r for r in records if r.unit.suite == suite]
        self.n_boot, self.alpha, self.warn = n_boot, alpha, warn
        registered = parsed_tasks() if registered is None else registered
        self.specs: dict[str, TaskSpec] = {t.id: (t.for_suite(suite) if t.in_suite(suite) else t) for t in registered}
        self.suite_tasks = sorted(t.id for t in registered if t.in_suite(suite))
        self.units: dict[str, RunUnit] = {}  # row label -> one of its units (for name matching)
        self.cells: dict[Col, dict[str, Cell]] = defaultdict(dict)
        self.variant_notes: list[str] = []
        self._pool()
        self.columns = sorted(self.cells)
        self.rows = sorted({e for c in self.cells.values() for e in c})
        self.unknown = sorted({t for t, _ in self.columns if t not in self.specs})
        for t in self.unknown:
            warn(f"note  results for task '{t}' (suite '{suite}'), which is not registered here: shown without family averages")
        self.reported = self._reported({t.id for t in registered if "lvmmed" in t.suites})
        self._score()
        self.header_marks: dict[str, str] = defaultdict(str)  # task -> footnote marks
        self.notes = self._audit_marks()

    # ------------------------------------------------------------------ cells

    def _pool(self) -> None:
        current, superseded = split_current(self.records)
        pooled: dict[Col, dict[str, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
        now: dict[tuple, dict[str, str]] = {}
        for r in current:
            if r.unit.label_fraction == 1.0:
                lab = encoder_label(r.unit)
                pooled[(r.unit.task_id, r.unit.protocol_tag)][lab].append(r)
                self.units.setdefault(lab, r.unit)
                now[cell_key(r)] = r.identity
        for group in superseded:
            r0 = group[0]
            if r0.unit.label_fraction != 1.0:
                continue
            tag = pool_key(r0.identity)[:6] or "pre-identity"
            lab = f"{encoder_label(r0.unit)} ‹{tag}›"
            col = (r0.unit.task_id, r0.unit.protocol_tag)
            pooled[col][lab] += group
            self.units.setdefault(lab, r0.unit)
            changed = [d for d in differences(r0.identity, now.get(cell_key(r0), {})) if d != "train_subset"]
            self.variant_notes.append(
                f"‹{tag}› {len(group)} older result(s) of {encoder_label(r0.unit)} on {col[0]}/{col[1]} ran with another "
                f"{' and '.join(changed)} than the current ones: shown on their own row, never pooled with them."
            )
        for col, by_row in pooled.items():
            for lab, recs in by_row.items():
                self.cells[col][lab] = Cell(lab, col, sorted(recs, key=lambda r: r.unit.seed))

    def _score(self) -> None:
        """CIs of every cell and the bold group of every column (seeded by the cell's key)."""
        for col in self.columns:
            by_row = self.cells[col]
            key = (self.suite, *col, 1.0)
            for lab in sorted(by_row):
                by_row[lab].ci = cell_ci(by_row[lab].records, n_boot=self.n_boot, alpha=self.alpha, seed=stable_seed(*key))
            for lab in self._top_group({e: c for e, c in by_row.items() if c.current}, key):
                by_row[lab].bold = True

    def _top_group(self, cells: dict[str, Cell], key: tuple) -> set[str]:
        """The best encoder of a column and those not significantly different from it."""
        if len(cells) < 2:
            return set()
        sign = 1.0 if higher_is_better(next(iter(cells.values())).metric) else -1.0
        best = min(cells, key=lambda e: (-sign * cells[e].mean, e))
        others = [e for e in sorted(cells) if e != best]
        tests = [paired_test(cells[best].records, cells[e].records, n_boot=self.n_boot, alpha=self.alpha, seed=stable_seed(*key)) for e in others]
        p_adj = holm([t.p if t is not None else float("nan") for t in tests])
        tied = {best}
        b_ci = cells[best].ci
        for e, t, p in zip(others, tests, p_adj):
            e_ci = cells[e].ci
            if t is not None and math.isfinite(p):
                if p >= self.alpha:
                    tied.add(e)
            elif b_ci is not None and e_ci is not None and math.isfinite(b_ci.lo) and math.isfinite(e_ci.lo):
                if e_ci.hi >= b_ci.lo and e_ci.lo <= b_ci.hi:
                    tied.add(e)
        return tied

    def cell(self, row: str, col: Col) -> Cell | None:
        return self.cells.get(col, {}).get(row)

    # ------------------------------------------------------------------ the paper's numbers

    def _reported(self, lvmmed_tasks: set[str]) -> list[Reported]:
        """Published numbers of the suite's tasks, x100 whatever unit the row states. A task's rows
        show in every suite it runs in, except the LVM-Med tasks': those rows are the paper's tables,
        measured on the full datasets with the paper's budgets, so they stand in the ``lvmmed``
        suite only, never beside synthetic (smoke) or small-budget (shared-data) numbers. A row
        shows only in a column ranked by its own metric (``column_metric``): prostate_ood's per-site
        rows stay in the task file, a prompt row stands beside prompt results only."""
        out = []
        for t in self.suite_tasks:
            if t in lvmmed_tasks and self.suite != "lvmmed":
                continue
            spec = self.specs[t]
            for r in spec.reported:
                metric = r.metric or spec.primary_metric
                if metric != column_metric(spec, r.protocol):
                    continue
                tag = r.protocol if r.head == "linear" else f"{r.protocol}-{r.head}"
                out.append(Reported(r.encoder, (t, tag), r.percent_value, r.percent_std, r.source, metric))
        return sorted(out, key=lambda x: (x.row, x.col))

    def column_metric(self, col: Col) -> str:
        """The metric a column is ranked by: its results' own, else what its protocol ranks by."""
        cells = self.cells.get(col)
        if cells:
            return next(iter(cells.values())).metric
        spec = self.specs.get(col[0])
        if spec is None:  # a task no longer registered: only its results know
            return ""
        return next((r.metric for r in self.reported if r.col == col), None) or column_metric(spec, col[1])

    def reported_value(self, row: str, col: Col) -> Reported | None:
        return next((r for r in self.reported if r.row == row and r.col == col), None)

    def reported_value_any(self, col: Col) -> bool:
        return any(r.col == col for r in self.reported)

    # ------------------------------------------------------------------ families and groups

    def family_tasks(self, family: str) -> list[str]:
        """Tasks of the suite in a family (what completeness counts)."""
        return [t for t in self.suite_tasks if family_of(self.specs[t]) == family]

    def families(self) -> list[str]:
        """Families with a table: some measured cell or reported number, in FAMILY_COLUMNS order."""
        shown = {family_of(self.specs.get(t)) for t, _ in self.columns} | {family_of(self.specs[r.col[0]]) for r in self.reported}
        return [f for f in [*FAMILY_COLUMNS, OTHER] if f in shown]

    def groups(self, family: str) -> list[Group]:
        tasks = sorted({t for t, _ in self.columns} | {r.col[0] for r in self.reported})
        tasks = [t for t in tasks if family_of(self.specs.get(t)) == family]
        mains = {t: main_protocol(self.specs[t]) if t in self.specs else "" for t in tasks}
        by_main: dict[str, list[str]] = defaultdict(list)
        for t in tasks:
            by_main[mains[t]].append(t)
        tags_of = {t: {p for tt, p in self.columns if tt == t} | {r.col[1] for r in self.reported if r.col[0] == t} for t in tasks}
        out, plain = [], []
        for main in sorted(by_main, key=protocol_key):
            ts = by_main[main]
            tags = set().union(*(tags_of[t] for t in ts))
            if tags == {main}:
                plain += ts
                continue
            rows = []
            for tag in sorted(tags, key=lambda p: protocol_key(p, main)):
                rows += [(e, tag) for e in self._row_labels([(t, tag) for t in ts])]
            out.append(Group(family, main, ts, rows, {t: mains[t] for t in ts}))
        if plain:
            if len({mains[t] for t in plain}) == 1:  # one protocol: name it
                main = mains[plain[0]]
                out.append(Group(family, main, plain, [(e, main) for e in self._row_labels([(t, main) for t in plain])], {t: main for t in plain}))
            else:
                rows = [(e, MAIN) for e in self._row_labels([(t, mains[t]) for t in plain])]
                out.append(Group(family, MAIN, sorted(plain), rows, {t: mains[t] for t in plain}))
        return out

    def _row_labels(self, cols: list[Col]) -> list[str]:
        """Measured rows with a cell in any of ``cols`` (sorted), then reported rows."""
        measured = sorted({e for col in cols for e in self.cells.get(col, {})})
        reported = sorted({r.row for r in self.reported if r.col in cols})
        return measured + reported

    def family_average(self, row: str, family: str) -> str:
        """Mean of the family's main-protocol cells (x100), only when the row has every task of the
        family in this suite; otherwise ``k/K`` (an average over a partial set misleads)."""
        family_tasks = self.family_tasks(family)
        if not family_tasks:
            return "–"
        vals = [v for t in family_tasks if (v := self.main_value(row, t)) is not None]
        if len(vals) < len(family_tasks):
            return f"{len(vals)}/{len(family_tasks)}"
        return f"{sum(vals) / len(vals):.2f}"

    def main_value(self, row: str, task: str) -> float | None:
        """The row's number (x100) on the task's main protocol, measured or reported."""
        col = (task, main_protocol(self.specs[task]))
        c = self.cell(row, col)
        if c is not None:
            return 100 * c.mean
        rep = self.reported_value(row, col)
        return rep.value if rep is not None else None

    def summary_families(self) -> list[str]:
        return [f for f in FAMILY_COLUMNS if self.family_tasks(f)]

    def mean_ranks(self) -> dict[str, tuple[float, int]]:
        """Row -> (mean rank over the suite tasks it ran, number of those tasks); current rows only."""
        ranks: dict[str, list[float]] = defaultdict(list)
        for t in self.suite_tasks:
            col = (t, main_protocol(self.specs[t]))
            cells = {e: c for e, c in self.cells.get(col, {}).items() if c.current and math.isfinite(c.mean)}
            if not cells:
                continue
            names = sorted(cells)
            sign = -1.0 if higher_is_better(cells[names[0]].metric) else 1.0
            for e, rk in zip(names, average_ranks([sign * cells[e].mean for e in names])):
                ranks[e].append(float(rk))
        return {e: (float(np.mean(v)), len(v)) for e, v in ranks.items()}

    def summary(self) -> list[dict]:
        """Summary rows: current encoders (most tasks first, then best mean rank), then reported rows."""
        ranks = self.mean_ranks()
        k_total = len(self.suite_tasks)
        fams = self.summary_families()
        out = []
        for e in (e for e in self.rows if "‹" not in e):
            rank, k = ranks.get(e, (float("nan"), 0))
            out.append({"row": e, "kind": "measured", "rank": rank, "tasks": k, "of": k_total, "families": {f: self.family_average(e, f) for f in fams}})
        out.sort(key=lambda d: (-d["tasks"], d["rank"] if math.isfinite(d["rank"]) else math.inf, d["row"]))
        for e in sorted({r.row for r in self.reported}):
            k = sum(1 for t in self.suite_tasks if self.main_value(e, t) is not None)
            if not k:
                continue  # numbers for protocol variants only: in the family tables, not here
            out.append({"row": e, "kind": "reported", "rank": float("nan"), "tasks": k, "of": k_total, "families": {f: self.family_average(e, f) for f in fams}})
        return out

    # ------------------------------------------------------------------ leakage audits

    def _audit_marks(self) -> list[str]:
        """Footnote marks: on the audited encoder's cells, or on the task's column when the audit
        does not say which encoder was pretrained on the data (an LVM-Med file list, say)."""
        notes = []
        # the results folder's own reports, and those of trees nested in it (results/shared/_audit)
        roots = [self.results, *sorted(p.parent for p in self.results.rglob(AUDIT_DIR) if p.is_dir() and p.parent != self.results)]
        for audit in (a for root in roots for a in load_audits(root, self.suite, self.warn)):
            for f in audit.get("tasks", []):
                if not f.get("affected_cases"):
                    continue
                i = len(notes) + 1
                enc = audit.get("encoder")
                c = f.get("counts", {})
                who = f"encoder {enc}" if enc else "the encoders pretrained on it (marked on the column)"
                notes.append(
                    f"†{i} Leakage audit of `{audit['manifest']['name']}` ({audit['manifest']['entries']} pretraining files; applies to {who}): "
                    f"{f['affected_cases']}/{f['test_cases']} test cases of {f['task']} appear in the pretraining data "
                    f"(by name {c.get('name', 0)}, by content {c.get('content', 0)}, by patient {c.get('patient', 0)})."
                )
                if enc is None:
                    self.header_marks[f["task"]] += f"†{i}"
                    continue
                for col in self.columns:
                    if col[0] == f["task"]:
                        for e, cell in self.cells[col].items():
                            if matches(enc, self.units[e]):
                                cell.marks += f"†{i}"
        return notes
