"""The markdown of one suite: a summary table, one narrow table per family (tasks as columns,
protocol variants as rows, the published numbers beside measured ones of the same metric), the
tables of each metric asked for (``--metric``), notes, the normalised score and the
label-efficiency section.

Text that comes from result files or task files (encoder names, protocol tags, sources, notes) is
escaped (:func:`md`): HTML is shown as text, never rendered (``<img onerror=...>`` in an encoder
name), and ``|``, ``[``, ``]``, ``*``, backticks and backslashes cannot break a table or make a link.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

import numpy as np
from tabulate import tabulate

from lvmbench.compare import matches
from lvmbench.leaderboard.board import FAMILY_TITLES, MAIN, PRIMARY, Cell, Group, SuiteBoard, View, slug
from lvmbench.leaderboard.ranking import summary
from lvmbench.stats import CI, normalised

SUITE_TITLES = {
    "smoke": "Smoke suite — synthetic data, tiny models and budgets: checks the pipeline, says nothing about encoders",
    "lvmmed": "LVM-Med suite — real data, paper protocols",
    "shared-data": "Shared-data suite — public subsets in ../shared/data, small budgets",
}

LEGEND = (
    "Each suite opens with a summary: per encoder, its mean rank over the tasks every encoder of the suite ran (each task's "
    "main protocol; 1 = best, ties share a rank; the caption names those tasks), how many of the suite's tasks it ran (k/K) "
    "and each family's average. Family averages take each task's main protocol over every task of the family in the suite; "
    "k/K = results for only k of its K tasks, no average; § = the average mixes tasks run at different input sizes or budgets. "
    "Then one table per family: tasks as columns, one row per encoder and protocol (the main protocol first, then its "
    "variants), and a plot of the main protocols with their CIs; tables of other metrics follow where asked for (--metric). "
    "Cells: the metric x100 at the full training set, mean ± std over seeds, [95% CI] of that mean by a "
    "bootstrap that resamples whole patients/volumes of the test set (the metric recomputed per resample; ‡ = "
    "it cannot be recomputed exactly from the per-case records, so the CI is that of their mean, a stand-in), "
    "(n = seeds). **Bold**: best in the column and every encoder a paired bootstrap "
    "(Holm-adjusted over the column) cannot tell apart from it at 5% (overlapping CIs where no pairing is "
    "possible). ‹tag› rows: older results whose split, spec, code or "
    "data differ from the current ones (never pooled with them, never bold). Rows marked reported: published numbers (each task's "
    "reported rows, in the one suite whose budget they were measured under: the LVM-Med paper's in the lvmmed suite), on their "
    "own data and splits, not recomputed here, each beside results of its own metric. ↓ = a result measured under other "
    "conventions (prompt preset, empty-mask policy, metric definition) than the column's reported rows state: shown below the "
    "table under 'not the paper's protocol', saying what differs. † = leakage-audit footnote."
)

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\|[]*`"})


def md(text: object) -> str:
    """Text from a result or task file made safe inside markdown (and a table cell): HTML as
    entities, markdown's link/emphasis/code/table characters escaped, one line."""
    return html.escape(" ".join(str(text).split()), quote=False).translate(_MD_SPECIAL)


def fmt(mean: float, std: float, n: int, ci: CI | None = None, bold: bool = False, marks: str = "") -> str:
    if math.isnan(mean):
        return "–"
    s = f"**{100 * mean:.2f}**" if bold else f"{100 * mean:.2f}"
    if n > 1:
        s += f" ± {100 * std:.2f}"
    if ci is not None and math.isfinite(ci.lo):
        s += f" [{100 * ci.lo:.2f}, {100 * ci.hi:.2f}]" + ("‡" if ci.method.endswith("(approx.)") else "")
    return s + f" (n={n})" + marks


def cell_text(cell: Cell) -> str:
    return fmt(*cell.stats, cell.ci, cell.bold, cell.marks)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def summary_lines(board: SuiteBoard) -> list[str]:
    s = summary(board)
    rows = []
    for d in s.rows:
        rank = f"{d['rank']:.2f}" if math.isfinite(d["rank"]) else "–"
        rows.append([md(d["row"]), rank, f"{d['tasks']}/{d['of']}", *[d["families"][f] for f in s.families]])
    out = [s.caption(), ""] if s.caption() else []
    out += [_table(rows, ["encoder", "mean rank", "tasks", *s.families]), ""]
    out += [n for note in s.notes for n in (md(note), "")]
    return out


def _metrics_line(view: View, group: Group) -> str:
    by_metric: dict[str, list[str]] = {}
    for tag in dict.fromkeys(tag for _, tag in group.rows):
        for t in group.tasks:
            col = group.col(t, tag)
            m = view.column_metric(col)
            if m and (col in view.cells or any(r.col == col for r in view.reported)) and col[1] not in by_metric.setdefault(m, []):
                by_metric[m].append(col[1])
    kind = "Primary metric" if view.metric == PRIMARY else "Metric"
    line = f"{kind} x100 — " + "; ".join(f"{md(', '.join(tags))}: {md(m)}" for m, tags in by_metric.items() if tags) + "."
    if group.main == MAIN:
        line = "Rows `main`: each task's main protocol (" + ", ".join(f"{md(t)}: {md(group.mains[t])}" for t in group.tasks) + "). " + line
    return line


def _reported_text(rep) -> str:
    return f"{rep.value:.2f}" + (f" ± {rep.std:.2f}" if rep.std is not None else "")


def group_table(board: SuiteBoard, view: View, group: Group) -> str:
    rows = []
    for row, tag in group.rows:
        line = [md(row), md(tag)]
        for t in group.tasks:
            col = group.col(t, tag)
            c, rep = view.cell(row, col), view.reported_value(row, col)
            if c is not None:
                line.append("↓" if row in view.moved.get(col, {}) else cell_text(c))
            elif rep is not None:
                line.append(_reported_text(rep))
            else:
                line.append("–")
        rows.append(line)
    return _table(rows, ["encoder", "protocol", *[md(t) + board.header_marks.get(t, "") for t in group.tasks]])


def set_apart_lines(view: View, groups: Sequence[Group]) -> list[str]:
    """The results of this family measured under other conventions than their columns' reported
    rows: a table of their own and what differs, cell by cell."""
    moved = [(row, col, why) for g in groups for t in g.tasks for col, rows in view.moved.items() if col[0] == t for row, why in rows.items()]
    moved = sorted(set(moved))
    if not moved:
        return []
    cols = sorted({col for _, col, _ in moved})
    rows = sorted({row for row, _, _ in moved})
    table = [[md(r), *[cell_text(c) if (c := view.cell(r, col)) is not None and r in view.moved.get(col, {}) else "–" for col in cols]] for r in rows]
    lines = ["Not the paper's protocol — results measured under other conventions than the reported rows of their column state (so not in that column):", ""]
    lines += [_table(table, ["encoder", *[md(f"{t} / {p}") for t, p in cols]]), ""]
    lines += [f"- {md(f'{row} on {col[0]} / {col[1]}: {why}.')}" for row, col, why in moved]
    return lines + [""]


def family_tables(board: SuiteBoard, view: View, family: str) -> list[str]:
    lines = []
    groups = view.groups(family)
    for g in groups:
        if len(groups) > 1 and g.main != MAIN:
            lines += [f"Tasks whose main protocol is {md(g.main or 'unknown')}:", ""]
        elif len(groups) > 1:
            lines += ["Tasks run with their main protocol only:", ""]
        lines += [_metrics_line(view, g), "", group_table(board, view, g), ""]
    lines += set_apart_lines(view, groups)
    return lines


def family_section(board: SuiteBoard, family: str, plot: str | None, metrics: Sequence[str] = ()) -> list[str]:
    view = board.view()
    lines = [f"### {FAMILY_TITLES[family]} — {md(board.suite)}", ""]
    lines += family_tables(board, view, family)
    if plot:
        lines += [f"![{FAMILY_TITLES[family]}, {md(board.suite)}]({plot})", ""]
    groups = view.groups(family)
    prompt_metrics = sorted({m for g in groups for _, tag in g.rows for t in g.tasks if "_prompt" in (m := view.column_metric(g.col(t, tag)))})
    if prompt_metrics:
        lines += [
            f"The prompt protocols' {', '.join(f'`{m}`' for m in prompt_metrics)} score each prompted slice (all foreground "
            "structures as one object, slices without ground truth not prompted) and average per volume: not comparable with "
            "the volumetric `iou3d`/`dice` of the other rows (paper Tables 4 and 11 vs Table 3).",
            "",
        ]
    for m in metrics:
        other = board.view(m)
        if family in other.families():
            lines += [f"#### {FAMILY_TITLES[family]} — {md(board.suite)}, in {md(m)}", ""]
            lines += family_tables(board, other, family)
    tasks = {t for g in groups for t in g.tasks} | {t for m in metrics for g in board.view(m).groups(family) for t in g.tasks}
    sources = sorted({r.source for r in board.all_reported if r.col[0] in tasks})
    if sources:
        lines += [f"Sources of the reported rows (per value in each task's `task.yaml`): {md('; '.join(sources))}.", ""]
    return lines


def plot_name(out_name: str, suite: str, family: str) -> str:
    return f"{out_name}-{suite}-{slug(family)}.png"


def normalised_section(board: SuiteBoard, reference: str | None, random_anchor: str | None) -> list[str]:
    if not reference:
        return []
    ref = _pick(board, reference, "--reference")
    if ref is None:
        return [f"Normalised score: reference '{md(reference)}' has no results in this suite.", ""]
    arch = board.units[ref].encoder
    rnd = _pick(board, random_anchor, "--random-anchor") if random_anchor else next((e for e in board.rows if (board.units[e].encoder, board.units[e].weights_sha256) == (arch, "random-init")), None)
    if rnd == ref:
        return [f"Normalised score: the reference '{md(reference)}' is the random-init anchor itself; pass a pretrained --reference.", ""]
    if rnd is None:
        return [f"Normalised score: no random-init anchor ('{md(random_anchor or arch + ' (random-init)')}') in this suite; run it or pass --random-anchor.", ""]
    usable, skipped = [], []
    for col in board.columns:
        c = board.cells[col]
        if ref in c and rnd in c and math.isfinite(normalised(0.0, c[rnd].mean, c[ref].mean)):
            usable.append(col)
        else:
            why = "reference" if ref not in c else ("random-init" if rnd not in c else "anchors equal")
            skipped.append(f"{col[0]}/{col[1]} ({why})")
    table = []
    for enc in board.rows:
        vals = [normalised(board.cells[c][enc].mean, board.cells[c][rnd].mean, board.cells[c][ref].mean) for c in usable if enc in board.cells[c]]
        table.append([md(enc), f"{float(np.mean(vals)):.3f}" if vals else "–", f"{len(vals)}/{len(usable)}"])
    lines = [
        "### Normalised score",
        "",
        f"Per task/protocol (s − s_random) / (s_ref − s_random), averaged: 0 = {md(rnd)}, 1 = {md(ref)} (reference). "
        "Dice, accuracy and AP become comparable on this scale; only task/protocols with both anchors count.",
        "",
        _table(table, ["encoder", "normalised score", "task/protocols"]),
        "",
    ]
    if skipped:
        lines += [f"Skipped (missing anchor): {md(', '.join(skipped))}.", ""]
    return lines


def _pick(board: SuiteBoard, ref: str, what: str) -> str | None:
    hits = [e for e in board.rows if matches(ref, board.units[e])]
    if len(hits) == 1:
        return hits[0]
    board.warn(f"note  {what} '{ref}' " + ("matches no encoder" if not hits else f"is ambiguous ({', '.join(hits)})") + f" in suite '{board.suite}'")
    return None


def suite_section(
    board: SuiteBoard,
    *,
    out_name: str,
    reference: str | None,
    random_anchor: str | None,
    label_efficiency: Callable[[], list[str]],
    plots: set[str],
    metrics: Sequence[str] = (),
) -> list[str]:
    """Markdown lines of one suite; ``plots`` names the family PNGs that exist (linked); ``metrics``
    the views shown after each family's primary tables."""
    section = [f"## {md(SUITE_TITLES.get(board.suite, board.suite))}", ""]
    if board.columns or board.reported:
        section += summary_lines(board)
        extra = [m for m in metrics if m in board.metrics_available()]
        families = list(dict.fromkeys([*board.families(), *(f for m in extra for f in board.view(m).families())]))
        for family in (f for f in [*FAMILY_TITLES] if f in families):
            png = plot_name(out_name, board.suite, family)
            section += family_section(board, family, png if png in plots else None, extra)
        section += [n for note in board.notes for n in (md(note).replace("\\`", "`"), "")]
        section += [n for note in board.variant_notes for n in (md(note), "")]
        if board.unknown:
            section += [f"Tasks not registered in this checkout (removed, renamed or from a plugin that is not installed): {md(', '.join(board.unknown))}; their columns have no family average.", ""]
        section += normalised_section(board, reference, random_anchor)
    section += label_efficiency()
    return section if len(section) > 2 else []
