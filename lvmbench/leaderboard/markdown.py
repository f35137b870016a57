"""The markdown of one suite: a summary table, one narrow table per family (tasks as columns,
protocol variants as rows, the paper's reported rows beside the measured ones), notes, the
normalised score and the label-efficiency section."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from tabulate import tabulate

from lvmbench.compare import matches
from lvmbench.leaderboard.board import FAMILY_TITLES, MAIN, Cell, Group, SuiteBoard, slug
from lvmbench.stats import CI, normalised

SUITE_TITLES = {
    "smoke": "Smoke suite — synthetic data, tiny models and budgets: checks the pipeline, says nothing about encoders",
    "lvmmed": "LVM-Med suite — real data, paper protocols",
    "shared-data": "Shared-data suite — public subsets in ../shared/data, small budgets",
}

LEGEND = (
    "Each suite opens with a summary: per encoder, its mean rank over the suite's tasks it ran (each task's main "
    "protocol; 1 = best among the encoders that ran the task, ties share a rank), how many of the suite's tasks it "
    "ran (k/K) and each family's average. Family averages take each task's main protocol over every task of the family "
    "in the suite; k/K = results for only k of its K tasks, no average. Then one table per family: tasks as columns, "
    "one row per encoder and protocol (the main protocol first, then its variants), and a plot of the main "
    "protocols with their CIs. "
    "Cells: primary metric x100 at the full training set, mean ± std over seeds, [95% CI] of that mean by a "
    "bootstrap that resamples whole patients/volumes of the test set (the metric recomputed per resample; ‡ = "
    "it cannot be recomputed exactly from the per-case records, so the CI is that of their mean, a stand-in), "
    "(n = seeds). **Bold**: best in the column and every encoder a paired bootstrap "
    "(Holm-adjusted over the column) cannot tell apart from it at 5% (overlapping CIs where no pairing is "
    "possible). ‹tag› rows: older results whose split, spec, code or "
    "data differ from the current ones (never pooled with them, never bold). Rows marked reported: published numbers (each task's "
    "reported rows; the LVM-Med paper's in the lvmmed suite only), on their own data and splits, not recomputed here. † = leakage-audit footnote."
)


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


def summary_table(board: SuiteBoard) -> str:
    fams = board.summary_families()
    rows = []
    for d in board.summary():
        rank = f"{d['rank']:.2f}" if math.isfinite(d["rank"]) else "–"
        rows.append([d["row"], rank, f"{d['tasks']}/{d['of']}", *[d["families"][f] for f in fams]])
    return _table(rows, ["encoder", "mean rank", "tasks", *fams])


def _metrics_line(board: SuiteBoard, group: Group) -> str:
    by_metric: dict[str, list[str]] = {}
    for tag in dict.fromkeys(tag for _, tag in group.rows):
        for t in group.tasks:
            col = group.col(t, tag)
            metrics = {c.metric for c in board.cells.get(col, {}).values()}
            if not metrics and board.reported_value_any(col) and t in board.specs:  # reported numbers only
                metrics = {board.column_metric(col)}
            for m in sorted(metrics):
                if col[1] not in by_metric.setdefault(m, []):
                    by_metric[m].append(col[1])
    line = "Primary metric x100 — " + "; ".join(f"{', '.join(tags)}: {m}" for m, tags in by_metric.items()) + "."
    if group.main == MAIN:
        line = "Rows `main`: each task's main protocol (" + ", ".join(f"{t}: {group.mains[t]}" for t in group.tasks) + "). " + line
    return line


def group_table(board: SuiteBoard, group: Group) -> str:
    rows = []
    for row, tag in group.rows:
        line = [row, tag]
        for t in group.tasks:
            c = board.cell(row, group.col(t, tag))
            rep = board.reported_value(row, group.col(t, tag))
            if c is not None:
                line.append(cell_text(c))
            elif rep is not None:
                line.append(f"{rep.value:.2f}" + (f" ± {rep.std:.2f}" if rep.std is not None else ""))
            else:
                line.append("–")
        rows.append(line)
    return _table(rows, ["encoder", "protocol", *[t + board.header_marks.get(t, "") for t in group.tasks]])


def family_section(board: SuiteBoard, family: str, plot: str | None) -> list[str]:
    lines = [f"### {FAMILY_TITLES[family]} — {board.suite}", ""]
    groups = board.groups(family)
    for g in groups:
        if len(groups) > 1 and g.main != MAIN:
            lines += [f"Tasks whose main protocol is {g.main or 'unknown'}:", ""]
        elif len(groups) > 1:
            lines += ["Tasks run with their main protocol only:", ""]
        lines += [_metrics_line(board, g), "", group_table(board, g), ""]
    if plot:
        lines += [f"![{FAMILY_TITLES[family]}, {board.suite}]({plot})", ""]
    prompt_metrics = sorted({board.column_metric(g.col(t, tag)) for g in groups for _, tag in g.rows for t in g.tasks if "_prompt" in board.column_metric(g.col(t, tag))})
    if prompt_metrics:
        lines += [
            f"The prompt protocols' {', '.join(f'`{m}`' for m in prompt_metrics)} score each prompted slice (all foreground "
            "structures as one object, slices without ground truth not prompted) and average per volume: not comparable with "
            "the volumetric `iou3d`/`dice` of the other rows (paper Tables 4 and 11 vs Table 3).",
            "",
        ]
    sources = sorted({r.source for r in board.reported if r.col[0] in {t for g in groups for t in g.tasks}})
    if sources:
        lines += [f"Sources of the reported rows (per value in each task's `task.yaml`): {'; '.join(sources)}.", ""]
    return lines


def plot_name(out_name: str, suite: str, family: str) -> str:
    return f"{out_name}-{suite}-{slug(family)}.png"


def normalised_section(board: SuiteBoard, reference: str | None, random_anchor: str | None) -> list[str]:
    if not reference:
        return []
    ref = _pick(board, reference, "--reference")
    if ref is None:
        return [f"Normalised score: reference '{reference}' has no results in this suite.", ""]
    arch = board.units[ref].encoder
    rnd = _pick(board, random_anchor, "--random-anchor") if random_anchor else next((e for e in board.rows if (board.units[e].encoder, board.units[e].weights_sha256) == (arch, "random-init")), None)
    if rnd == ref:
        return [f"Normalised score: the reference '{reference}' is the random-init anchor itself; pass a pretrained --reference.", ""]
    if rnd is None:
        return [f"Normalised score: no random-init anchor ('{random_anchor or arch + ' (random-init)'}') in this suite; run it or pass --random-anchor.", ""]
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
        table.append([enc, f"{float(np.mean(vals)):.3f}" if vals else "–", f"{len(vals)}/{len(usable)}"])
    lines = [
        "### Normalised score",
        "",
        f"Per task/protocol (s − s_random) / (s_ref − s_random), averaged: 0 = {rnd}, 1 = {ref} (reference). "
        "Dice, accuracy and AP become comparable on this scale; only task/protocols with both anchors count.",
        "",
        _table(table, ["encoder", "normalised score", "task/protocols"]),
        "",
    ]
    if skipped:
        lines += [f"Skipped (missing anchor): {', '.join(skipped)}.", ""]
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
) -> list[str]:
    """Markdown lines of one suite; ``plots`` names the family PNGs that exist (linked)."""
    section = [f"## {SUITE_TITLES.get(board.suite, board.suite)}", ""]
    if board.columns or board.reported:
        section += [summary_table(board), ""]
        for family in board.families():
            png = plot_name(out_name, board.suite, family)
            section += family_section(board, family, png if png in plots else None)
        section += [n for note in board.notes for n in (note, "")]
        section += [n for note in board.variant_notes for n in (note, "")]
        if board.unknown:
            section += [f"Tasks not registered in this checkout (removed, renamed or from a plugin that is not installed): {', '.join(board.unknown)}; their columns have no family average.", ""]
        section += normalised_section(board, reference, random_anchor)
    section += label_efficiency()
    return section if len(section) > 2 else []
