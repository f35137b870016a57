"""The summary of one suite: mean rank, coverage and family averages, fair to encoders that ran
different sets of tasks.

- **Mean rank** is taken over the *common* tasks only: the suite's tasks (each its main protocol)
  that every ranked encoder ran (every current encoder with at least one main-protocol result), each
  encoder ranked among all of them (1 = best, ties share the average rank). An encoder that ran one
  task therefore never outranks one that ran ten on the strength of that one task; the caption
  names the common tasks. No common task: no mean rank.
- **Coverage** (``k/K``) sorts the table first; then the mean rank.
- **Family averages** exist only over complete families (``k/K`` otherwise). An average over tasks
  run at different encoder input sizes (``hyperparameters.encoder_input_size``) or budgets (the
  suite's profile of one task, the task file's own settings for another) is flagged ``§n`` with a
  footnote saying what it mixes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from lvmbench.leaderboard.board import Cell, SuiteBoard, main_protocol
from lvmbench.stats import average_ranks, higher_is_better


@dataclass
class Summary:
    rows: list[dict]  # row, kind, rank, tasks, of, families (text per family)
    families: list[str]
    common: list[str]  # the tasks the mean rank is taken over
    ranked: int  # encoders ranked
    notes: list[str] = field(default_factory=list)  # § footnotes

    def caption(self) -> str:
        if not self.ranked:
            return ""
        if not self.common:
            return (
                "Mean rank: none, since no task of the suite was run by every encoder here (each ran a different set); "
                "compare them in the family tables. Tasks = how many of the suite's tasks each ran (each task's main protocol)."
            )
        names = ", ".join(self.common) if len(self.common) <= 8 else f"{', '.join(self.common[:8])}, …"
        return (
            f"Mean rank over the {len(self.common)} task(s) every encoder here ran ({names}; each task's main protocol, "
            "1 = best, ties share a rank), so encoders are ranked on the same tasks; tasks = how many of the suite's tasks each ran. "
            "Family averages only over complete families (k/K otherwise)" + ("; § = the average mixes input sizes or budgets (footnotes)." if self.notes else ".")
        )


def _size(cell: Cell) -> str:
    """The encoder input size its results ran at (``32 px``, ``224x160``), '' when not recorded."""
    sizes = set()
    for r in cell.records:
        got = r.hyperparameters.get("encoder_input_size")
        if isinstance(got, list) and got:
            sizes.add("/".join(f"{s[0]} px" if isinstance(s, list) and len(s) == 2 and s[0] == s[1] else "x".join(map(str, s)) if isinstance(s, list) else str(s) for s in got))
    return ", ".join(sorted(sizes))


def _budget(board: SuiteBoard, task: str) -> str:
    base = board.base_specs.get(task)
    return f"the {board.suite} profile" if base is not None and board.suite in base.profiles else "the task file's own settings"


class _Notes:
    def __init__(self) -> None:
        self.marks: dict[str, str] = {}

    def mark(self, text: str) -> str:
        if text not in self.marks:
            self.marks[text] = f"§{len(self.marks) + 1}"
        return self.marks[text]

    def lines(self) -> list[str]:
        return [f"{m} {t}" for t, m in self.marks.items()]


def _mixes(board: SuiteBoard, family: str, cells: dict[str, Cell]) -> str:
    """What a family average mixes ('' when its tasks ran alike)."""
    parts = []
    sizes: dict[str, list[str]] = defaultdict(list)
    budgets: dict[str, list[str]] = defaultdict(list)
    for task, cell in cells.items():
        if s := _size(cell):
            sizes[s].append(task)
        budgets[_budget(board, task)].append(task)
    if len(sizes) > 1:
        parts.append("input sizes " + "; ".join(f"{s} ({', '.join(ts)})" for s, ts in sorted(sizes.items())))
    if len(budgets) > 1:
        parts.append("budgets " + "; ".join(f"{b} ({', '.join(ts)})" for b, ts in sorted(budgets.items())))
    return f"The {family} average mixes " + " and ".join(parts) + ": its tasks are not run alike." if parts else ""


def family_average(board: SuiteBoard, row: str, family: str, notes: _Notes | None = None) -> str:
    """Mean of the family's main-protocol cells (x100), only when the row has every task of the
    family in this suite (``k/K`` otherwise), flagged ``§n`` when its tasks ran at different input
    sizes or budgets."""
    family_tasks = board.family_tasks(family)
    if not family_tasks:
        return "–"
    vals = [v for t in family_tasks if (v := board.main_value(row, t)) is not None]
    if len(vals) < len(family_tasks):
        return f"{len(vals)}/{len(family_tasks)}"
    text = f"{sum(vals) / len(vals):.2f}"
    cells = {t: c for t in family_tasks if (c := board.cell(row, (t, main_protocol(board.specs[t])))) is not None}
    if notes is not None and len(cells) == len(family_tasks) and (mix := _mixes(board, family, cells)):
        text += notes.mark(mix)
    return text


def mean_ranks(board: SuiteBoard) -> tuple[dict[str, tuple[float, int]], list[str]]:
    """Row -> (mean rank over the common tasks, tasks it ran), and the common tasks (current rows
    with a main-protocol result only)."""
    ran: dict[str, dict[str, Cell]] = defaultdict(dict)  # row -> task -> main-protocol cell
    for t in board.suite_tasks:
        for e, c in board.cells.get((t, main_protocol(board.specs[t])), {}).items():
            if c.current and math.isfinite(c.mean):
                ran[e][t] = c
    if not ran:
        return {}, []
    common = sorted(set.intersection(*(set(ts) for ts in ran.values())))
    ranks: dict[str, list[float]] = defaultdict(list)
    for t in common:
        names = sorted(ran)
        sign = -1.0 if higher_is_better(ran[names[0]][t].metric) else 1.0
        for e, rk in zip(names, average_ranks([sign * ran[e][t].mean for e in names])):
            ranks[e].append(float(rk))
    return {e: (float(np.mean(ranks[e])) if ranks[e] else float("nan"), len(ts)) for e, ts in ran.items()}, common


def summary(board: SuiteBoard) -> Summary:
    """Summary rows: current encoders (most tasks first, then best mean rank), then reported rows."""
    ranks, common = mean_ranks(board)
    k_total = len(board.suite_tasks)
    fams = board.summary_families()
    notes = _Notes()
    out = []
    for e in (e for e in board.rows if "‹" not in e):
        rank, k = ranks.get(e, (float("nan"), 0))
        out.append({"row": e, "kind": "measured", "rank": rank, "tasks": k, "of": k_total, "families": {f: family_average(board, e, f, notes) for f in fams}})
    out.sort(key=lambda d: (-d["tasks"], d["rank"] if math.isfinite(d["rank"]) else math.inf, d["row"]))
    for e in sorted({r.row for r in board.reported}):
        k = sum(1 for t in board.suite_tasks if board.main_value(e, t) is not None)
        if not k:
            continue  # numbers for protocol variants only: in the family tables, not here
        out.append({"row": e, "kind": "reported", "rank": float("nan"), "tasks": k, "of": k_total, "families": {f: family_average(board, e, f) for f in fams}})
    return Summary(out, fams, common, len(ranks), notes.lines())
