"""One suite's leaderboard as data: cells, their CIs and bold ties, families, the published numbers,
one :class:`View` per metric. The markdown, the plots, the HTML page and the exports all render this
one object, so every view shows the same numbers.

- **Cell**: one encoder row on one task/protocol at label fraction 1, in one metric. Seeds pool into
  a cell only when their identity agrees (:func:`lvmbench.identity.split_current`); an older group of
  the same encoder and column gets a row of its own, ``encoder ‹tag›``, and a note naming what differs.
- **View**: the tables in one metric. ``PRIMARY`` (the default) shows each column in the metric its
  results are ranked by (their primary metric); a named view (``--metric auc``) shows that metric in
  every column whose results or reported rows carry it. Reported numbers stand beside results of
  their own metric only; results measured under other conventions than a column's reported rows
  state are set apart (``moved``: shown under "not the paper's protocol", saying what differs).
- **CI**: :func:`lvmbench.stats.cell_ci` in the view's metric (whole patients/volumes resampled; the
  interval a protocol recorded itself where it did). The cells of a column share one resample draw.
- **Bold**: the best current encoder of a column and every current encoder a paired cluster
  bootstrap (Holm over the column) cannot tell apart from it; ``‹tag›`` rows never compete, nor do
  results measured under different conventions (each set of ``extra.conventions`` has its own best).
- **Families**: ``FAMILY_COLUMNS``; family tables group tasks by their main protocol (the first of
  ``default_protocols``), with each protocol variant as its own rows. The summary (mean rank over
  the tasks every encoder ran, family averages over complete families) is :mod:`.ranking`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvmbench.audit import AUDIT_DIR, load_audits
from lvmbench.compare import encoder_label, matches
from lvmbench.identity import cell_key, differences, pool_key, split_current
from lvmbench.leaderboard.reported import Col, Reported, convention_differences, ranked_metric, result_conventions, suite_rows
from lvmbench.spec import ResultRecord, RunUnit, TaskSpec
from lvmbench.stats import CI, cell_ci, higher_is_better, holm, paired_test, stable_seed
from lvmbench.task_files import parsed_tasks

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
PRIMARY = ""  # the view in which each column shows the metric its results are ranked by
MAIN = "main"  # the protocol label of rows that show each task's own main protocol


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


def metric_value(record: ResultRecord, metric: str) -> float | None:
    """The record's value of ``metric`` (its ``primary`` for the primary metric); None if absent."""
    if metric == record.primary_metric:
        return record.primary
    v = record.metrics.get(metric)
    return None if v is None else float(v)


@dataclass
class Cell:
    row: str  # encoder label, with ``‹tag›`` for an older identity group
    col: Col
    records: list[ResultRecord]  # one per seed, sorted by seed
    metric: str
    ci: CI | None = None
    bold: bool = False
    marks: str = ""  # audit footnotes

    @property
    def current(self) -> bool:
        return "‹" not in self.row

    @property
    def stats(self) -> tuple[float, float, int]:
        return mean_std([v for r in self.records if (v := metric_value(r, self.metric)) is not None])

    @property
    def mean(self) -> float:
        return self.stats[0]


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


@dataclass
class View:
    """The tables of one metric (``PRIMARY``: each column's ranking metric)."""

    board: SuiteBoard
    metric: str
    cells: dict[Col, dict[str, Cell]]
    reported: list[Reported]
    metric_of: dict[Col, str]  # the metric each column shows
    moved: dict[Col, dict[str, str]] = field(default_factory=dict)  # col -> row -> what differs

    @property
    def columns(self) -> list[Col]:
        return sorted(self.cells)

    def cell(self, row: str, col: Col) -> Cell | None:
        return self.cells.get(col, {}).get(row)

    def placed(self, row: str, col: Col) -> Cell | None:
        """The cell as the main table shows it: None where it was set apart (other conventions)."""
        return None if row in self.moved.get(col, {}) else self.cell(row, col)

    def reported_value(self, row: str, col: Col) -> Reported | None:
        return next((r for r in self.reported if r.row == row and r.col == col), None)

    def column_metric(self, col: Col) -> str:
        return self.metric_of.get(col, "")

    def families(self) -> list[str]:
        """Families with a table in this view, in FAMILY_COLUMNS order."""
        specs = self.board.specs
        shown = {family_of(specs.get(t)) for t, _ in self.cells} | {family_of(specs.get(r.col[0])) for r in self.reported}
        return [f for f in [*FAMILY_COLUMNS, OTHER] if f in shown]

    def groups(self, family: str) -> list[Group]:
        specs = self.board.specs
        tasks = sorted({t for t, _ in self.cells} | {r.col[0] for r in self.reported})
        tasks = [t for t in tasks if family_of(specs.get(t)) == family]
        mains = {t: main_protocol(specs[t]) if t in specs else "" for t in tasks}
        by_main: dict[str, list[str]] = defaultdict(list)
        for t in tasks:
            by_main[mains[t]].append(t)
        tags_of = {t: {p for tt, p in self.cells if tt == t} | {r.col[1] for r in self.reported if r.col[0] == t} for t in tasks}
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
        self.base_specs: dict[str, TaskSpec] = {t.id: t for t in registered}
        self.specs: dict[str, TaskSpec] = {t.id: (t.for_suite(suite) if t.in_suite(suite) else t) for t in registered}
        self.suite_tasks = sorted(t.id for t in registered if t.in_suite(suite))
        self.units: dict[str, RunUnit] = {}  # row label -> one of its units (for name matching)
        self.pooled: dict[Col, dict[str, list[ResultRecord]]] = defaultdict(dict)
        self.variant_notes: list[str] = []
        self._pool()
        self.all_reported = suite_rows(registered, suite)
        self.header_marks: dict[str, str] = defaultdict(str)  # task -> footnote marks
        self._marks: dict[tuple[str, str], str] = {}  # (task, row) -> footnote marks of its cells
        self.notes = self._audit_marks()
        self._columns: dict[tuple[Col, str], dict[str, Cell]] = {}  # (col, metric) -> scored cells
        self._views: dict[str, View] = {}
        primary = self.view(PRIMARY)
        self.cells, self.columns, self.reported = primary.cells, primary.columns, primary.reported
        self.rows = sorted({e for c in self.cells.values() for e in c})
        self.unknown = sorted({t for t, _ in self.columns if t not in self.specs})
        for t in self.unknown:
            warn(f"note  results for task '{t}' (suite '{suite}'), which is not registered here: shown without family averages")

    # ------------------------------------------------------------------ cells

    def _pool(self) -> None:
        current, superseded = split_current(self.records)
        now: dict[tuple, dict[str, str]] = {}
        for r in current:
            if r.unit.label_fraction == 1.0:
                lab = encoder_label(r.unit)
                self.pooled[(r.unit.task_id, r.unit.protocol_tag)].setdefault(lab, []).append(r)
                self.units.setdefault(lab, r.unit)
                now[cell_key(r)] = r.identity
        for group in superseded:
            r0 = group[0]
            if r0.unit.label_fraction != 1.0:
                continue
            tag = pool_key(r0.identity)[:6] or "pre-identity"
            lab = f"{encoder_label(r0.unit)} ‹{tag}›"
            col = (r0.unit.task_id, r0.unit.protocol_tag)
            self.pooled[col].setdefault(lab, []).extend(group)
            self.units.setdefault(lab, r0.unit)
            changed = [d for d in differences(r0.identity, now.get(cell_key(r0), {})) if d != "train_subset"]
            self.variant_notes.append(
                f"‹{tag}› {len(group)} older result(s) of {encoder_label(r0.unit)} on {col[0]}/{col[1]} ran with another "
                f"{' and '.join(changed)} than the current ones: shown on their own row, never pooled with them."
            )
        for by_row in self.pooled.values():
            for lab in by_row:
                by_row[lab].sort(key=lambda r: r.unit.seed)

    def _column(self, col: Col, metric: str) -> dict[str, Cell]:
        """The scored cells of one column in one metric (rows whose every seed has it); cached, so
        a metric shown in several views is scored once."""
        key = (col, metric)
        if key not in self._columns:
            by_row = {
                lab: Cell(lab, col, recs, metric, marks=self._marks.get((col[0], lab), ""))
                for lab, recs in sorted(self.pooled.get(col, {}).items())
                if all(metric_value(r, metric) is not None for r in recs)
            }
            self._score(col, metric, by_row)
            self._columns[key] = by_row
        return self._columns[key]

    def _score(self, col: Col, metric: str, by_row: dict[str, Cell]) -> None:
        """CIs of the column's cells and its bold group; one seed for the column (its key), so the
        cells share a resample draw wherever they scored the same cases."""
        seed = stable_seed(self.suite, *col, 1.0) if metric == self._primary_of(col) else stable_seed(self.suite, *col, 1.0, metric)
        for lab in sorted(by_row):
            by_row[lab].ci = cell_ci(by_row[lab].records, n_boot=self.n_boot, alpha=self.alpha, seed=seed, metric=metric)
        # like with like: cells measured under different conventions (prompt preset, empty policy)
        # are never compared; each set of conventions gets its own best and ties
        by_conv: dict[tuple, dict[str, Cell]] = defaultdict(dict)
        for e, c in by_row.items():
            if c.current:
                by_conv[tuple(sorted(result_conventions(c.records[0]).items()))][e] = c
        for cells in by_conv.values():
            for lab in self._top_group(cells, seed, metric):
                by_row[lab].bold = True

    def _primary_of(self, col: Col) -> str:
        recs = next(iter(self.pooled.get(col, {}).values()), [])
        return recs[0].primary_metric if recs else ""

    def _top_group(self, cells: dict[str, Cell], seed: int, metric: str) -> set[str]:
        """The best encoder of a column and those not significantly different from it."""
        if len(cells) < 2:
            return set()
        sign = 1.0 if higher_is_better(metric) else -1.0
        best = min(cells, key=lambda e: (-sign * cells[e].mean, e))
        others = [e for e in sorted(cells) if e != best]
        tests = [paired_test(cells[best].records, cells[e].records, n_boot=self.n_boot, alpha=self.alpha, seed=seed, metric=metric) for e in others]
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

    # ------------------------------------------------------------------ views

    def view(self, metric: str = PRIMARY) -> View:
        """The tables in ``metric`` (``PRIMARY``: each column's ranking metric), built once."""
        if metric not in self._views:
            self._views[metric] = self._build_view(metric)
        return self._views[metric]

    def _build_view(self, metric: str) -> View:
        cells: dict[Col, dict[str, Cell]] = {}
        metric_of: dict[Col, str] = {}
        for col in sorted(self.pooled):
            m = metric or self._primary_of(col)
            by_row = self._column(col, m)
            if by_row:
                cells[col], metric_of[col] = by_row, m
        rep_cols: dict[Col, set[str]] = defaultdict(set)
        for r in self.all_reported:
            rep_cols[r.col].add(r.metric)
        for col, metrics in rep_cols.items():
            if col not in metric_of:
                spec = self.specs.get(col[0])
                m = metric if metric else (ranked_metric(spec, metrics) if spec is not None else None)
                if m is not None and m in metrics:
                    metric_of[col] = m
        reported = [r for r in self.all_reported if metric_of.get(r.col) == r.metric]
        view = View(self, metric, cells, reported, metric_of)
        view.moved = self._set_apart(view)
        return view

    def _set_apart(self, view: View) -> dict[Col, dict[str, str]]:
        """Cells whose results disagree with a convention stated by a reported row of their column
        (or state none where the row states one): col -> row -> what differs."""
        moved: dict[Col, dict[str, str]] = {}
        for col, by_row in view.cells.items():
            stated = sorted({kv for r in view.reported if r.col == col for kv in r.conventions})
            if not stated:
                continue
            for lab, cell in by_row.items():
                diff = convention_differences(stated, cell.records)
                if diff:
                    moved.setdefault(col, {})[lab] = "; ".join(diff)
        return moved

    def metrics_available(self) -> list[str]:
        """Every metric some result or reported number of this suite carries, in the order the
        suite's tasks list them (then by name): what ``--metric all`` and the page's switch offer."""
        have = {m for by_row in self.pooled.values() for recs in by_row.values() for r in recs for m, v in [(r.primary_metric, r.primary), *r.metrics.items()] if v is not None}
        have |= {r.metric for r in self.all_reported}
        listed = [m for t in self.suite_tasks for m in self.specs[t].metrics]
        return [m for m in dict.fromkeys(listed) if m in have] + sorted(have - set(listed))

    # ------------------------------------------------------------------ compatibility (primary view)

    def column_metric(self, col: Col) -> str:
        return self.view().column_metric(col)

    def reported_value(self, row: str, col: Col) -> Reported | None:
        return self.view().reported_value(row, col)

    def families(self) -> list[str]:
        return self.view().families()

    def groups(self, family: str) -> list[Group]:
        return self.view().groups(family)

    def family_tasks(self, family: str) -> list[str]:
        """Tasks of the suite in a family (what completeness counts)."""
        return [t for t in self.suite_tasks if family_of(self.specs[t]) == family]

    def summary_families(self) -> list[str]:
        return [f for f in FAMILY_COLUMNS if self.family_tasks(f)]

    def main_value(self, row: str, task: str) -> float | None:
        """The row's number (x100) on the task's main protocol, measured or reported."""
        col = (task, main_protocol(self.specs[task]))
        c = self.cell(row, col)
        if c is not None:
            return 100 * c.mean
        rep = self.reported_value(row, col)
        return rep.value if rep is not None else None

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
                for (task, _), by_row in self.pooled.items():
                    if task == f["task"]:
                        for e in by_row:
                            if matches(enc, self.units[e]):
                                self._marks[(task, e)] = self._marks.get((task, e), "") + f"†{i}"
        return notes
