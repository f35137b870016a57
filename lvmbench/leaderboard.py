"""results/**/*.json -> leaderboard.md (+ label-efficiency PNGs next to it), byte-identical for the
same inputs (bootstrap seeds come from each cell's identity, every listing is sorted).

One section per suite. Rows: encoders (name @ weights sha12) and the paper's reported rows, marked
"(reported)". Columns: task / protocol[-head], then family averages of each task's main protocol.

- **Cell**: primary metric x100 at label fraction 1, mean ± std over seeds, ``[lo, hi]`` the 95%
  bootstrap CI of that seed-mean resampling whole patients/volumes of the test set
  (:func:`lvmbench.stats.cell_ci`), ``(n=seeds)``. ``‡``: the metric could not be recomputed exactly
  from the per-case records (their mean differs from it), so the CI is that of the mean per-case score.
- **Bold**: the best mean of the column and every encoder not significantly different from it:
  paired cluster bootstrap against the best on their shared test cases, Holm-adjusted over the
  column's comparisons, p >= 0.05 (when no paired test is possible: overlapping CIs).
- **Normalised score** (with ``--reference``): per task/protocol ``(s - s_random) / (s_ref - s_random)``
  with s_random the random-init encoder of the reference's architecture (or ``--random-anchor``),
  averaged over the columns that have both anchors and the encoder's own result.
- **Label efficiency** and **leakage-audit footnotes** (``†``): see :mod:`lvmbench.label_efficiency`
  and :mod:`lvmbench.audit`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tabulate import tabulate

from lvmbench import label_efficiency
from lvmbench.audit import load_audits
from lvmbench.compare import encoder_label, load_records, matches
from lvmbench.errors import UserError
from lvmbench.identity import cell_key, differences, pool_key, split_current
from lvmbench.results import write_atomic
from lvmbench.spec import ResultRecord, RunUnit
from lvmbench.stats import CI, DEFAULT_BOOT, cell_ci, higher_is_better, holm, normalised, paired_test, stable_seed
from lvmbench.tasks import all_tasks

FAMILY_COLUMNS = {
    "2D seg": lambda t: t.family == "segmentation" and t.dims == "2d" and not t.ood,
    "3D seg": lambda t: t.family == "segmentation" and t.dims == "3d-slicewise" and not t.ood,
    "OOD": lambda t: bool(t.ood),
    "Cls": lambda t: t.family == "classification",
    "Det": lambda t: t.family == "detection",
}

SUITE_TITLES = {
    "smoke": "Smoke suite — synthetic data, tiny models and budgets: checks the pipeline, says nothing about encoders",
    "lvmmed": "LVM-Med suite — real data, paper protocols",
    "shared-data": "Shared-data suite — public subsets in ../shared/data, small budgets",
}

Col = tuple[str, str]  # (task, protocol tag)


def _main_protocol(task) -> str:
    return (task.default_protocols or list(task.protocols))[0]


def _mean_std(recs: list[ResultRecord]) -> tuple[float, float, int]:
    v = [r.primary for r in recs]
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else 0.0), len(v)


def fmt(mean: float, std: float, n: int, ci: CI | None = None, bold: bool = False, marks: str = "") -> str:
    if math.isnan(mean):
        return "–"
    s = f"**{100 * mean:.2f}**" if bold else f"{100 * mean:.2f}"
    if n > 1:
        s += f" ± {100 * std:.2f}"
    if ci is not None and math.isfinite(ci.lo):
        s += f" [{100 * ci.lo:.2f}, {100 * ci.hi:.2f}]" + ("‡" if ci.method.endswith("(approx.)") else "")
    return s + f" (n={n})" + marks


def top_group(cells: dict[str, list[ResultRecord]], cis: dict[str, CI | None], key: tuple, n_boot: int, alpha: float) -> set[str]:
    """The best encoder of a column and those not significantly different from it."""
    if len(cells) < 2:
        return set()
    metric = next(iter(cells.values()))[0].primary_metric
    sign = 1.0 if higher_is_better(metric) else -1.0
    best = min(cells, key=lambda e: (-sign * _mean_std(cells[e])[0], e))
    others = [e for e in sorted(cells) if e != best]
    tests = [paired_test(cells[best], cells[e], n_boot=n_boot, alpha=alpha, seed=stable_seed(*key, "pair", e)) for e in others]
    p_adj = holm([t.p if t is not None else float("nan") for t in tests])
    tied = {best}
    b_ci = cis.get(best)
    for e, t, p in zip(others, tests, p_adj):
        if t is not None and math.isfinite(p):
            if p >= alpha:
                tied.add(e)
        elif b_ci is not None and cis.get(e) is not None and math.isfinite(b_ci.lo) and math.isfinite(cis[e].lo):  # type: ignore[union-attr]
            if cis[e].hi >= b_ci.lo and cis[e].lo <= b_ci.hi:  # type: ignore[union-attr]
                tied.add(e)
    return tied


class SuiteBoard:
    def __init__(self, records: list[ResultRecord], suite: str, n_boot: int, alpha: float, warn: Callable[[str], None], results: Path):
        self.suite, self.results = suite, results
        self.records = [r for r in records if r.unit.suite == suite]
        self.n_boot, self.alpha, self.warn = n_boot, alpha, warn
        self.tasks = {t.id: t.for_suite(suite) for t in all_tasks() if t.in_suite(suite)}
        known = {t.id for t in all_tasks()}
        cells: dict[Col, dict[str, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
        self.units: dict[str, RunUnit] = {}  # label -> one of its units (for name matching)
        # seeds pool into a cell only when split, spec, code and data agree (lvmbench/identity.py):
        # the newest group is the encoder's row, an older group gets a row of its own and a footnote
        current, superseded = split_current(self.records)
        now: dict[tuple, dict[str, str]] = {}
        for r in current:
            if r.unit.label_fraction == 1.0:
                lab = encoder_label(r.unit)
                cells[(r.unit.task_id, r.unit.protocol_tag)][lab].append(r)
                self.units.setdefault(lab, r.unit)
                now[cell_key(r)] = r.identity
        self.variant_notes: list[str] = []
        for group in superseded:
            r0 = group[0]
            if r0.unit.label_fraction != 1.0:
                continue
            tag = pool_key(r0.identity)[:6] or "pre-identity"
            lab = f"{encoder_label(r0.unit)} ‹{tag}›"
            col = (r0.unit.task_id, r0.unit.protocol_tag)
            cells[col][lab] += group
            self.units.setdefault(lab, r0.unit)
            changed = [d for d in differences(r0.identity, now.get(cell_key(r0), {})) if d != "train_subset"]
            self.variant_notes.append(
                f"‹{tag}› {len(group)} older result(s) of {encoder_label(r0.unit)} on {col[0]}/{col[1]} ran with another "
                f"{' and '.join(changed)} than the current ones: shown on their own row, never pooled with them."
            )
        for col in cells.values():
            for recs in col.values():
                recs.sort(key=lambda r: r.unit.seed)
        self.cells = cells
        self.columns = sorted(cells)
        self.encoders = sorted({e for c in cells.values() for e in c})
        self.unknown = sorted({t for t, _ in self.columns if t not in known})
        for t in self.unknown:
            warn(f"note  results for task '{t}' (suite '{suite}'), which is not registered here: shown without family averages")

    def main_table(self, marks: dict[tuple[str, Col], str], header_marks: dict[Col, str]) -> str:
        text: dict[tuple[str, Col], str] = {}
        for col in self.columns:
            by_enc = self.cells[col]
            key = (self.suite, *col, 1.0)
            cis = {e: cell_ci(recs, n_boot=self.n_boot, alpha=self.alpha, seed=stable_seed(*key, e)) for e, recs in sorted(by_enc.items())}
            # bold compares encoders' current results; an older ‹tag› row never competes
            top = top_group({e: r for e, r in by_enc.items() if "‹" not in e}, cis, key, self.n_boot, self.alpha)
            for e, recs in by_enc.items():
                text[(e, col)] = fmt(*_mean_std(recs), cis[e], e in top, marks.get((e, col), ""))
        table = []
        for enc in self.encoders:
            row = [enc] + [text.get((enc, c), "–") for c in self.columns]
            row += [self.family_average(enc, pred) for pred in FAMILY_COLUMNS.values()]
            table.append(row)
        if self.suite == "lvmmed":
            table += reported_rows(self.columns, self.tasks)
        headers = ["encoder"] + [f"{t}/{p}{header_marks.get((t, p), '')}" for t, p in self.columns] + list(FAMILY_COLUMNS)
        return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)

    def family_average(self, enc: str, pred) -> str:
        """Mean of the family's main-protocol cells, only when the encoder has every task of the
        family in this suite; otherwise ``k/K`` (an average over a partial set misleads)."""
        family = sorted(t for t, spec in self.tasks.items() if pred(spec))
        if not family:
            return "–"
        vals = []
        for t in family:
            col = (t, _main_protocol(self.tasks[t]))
            if col in self.cells and enc in self.cells[col]:
                vals.append(_mean_std(self.cells[col][enc])[0])
        if len(vals) < len(family):
            return f"{len(vals)}/{len(family)}"
        return f"{100 * sum(vals) / len(vals):.2f}"

    def _pick(self, ref: str, what: str) -> str | None:
        hits = [e for e in self.encoders if matches(ref, self.units[e])]
        if len(hits) == 1:
            return hits[0]
        self.warn(f"note  {what} '{ref}' " + ("matches no encoder" if not hits else f"is ambiguous ({', '.join(hits)})") + f" in suite '{self.suite}'")
        return None

    def normalised_section(self, reference: str | None, random_anchor: str | None) -> list[str]:
        if not reference:
            return []
        ref = self._pick(reference, "--reference")
        if ref is None:
            return [f"Normalised score: reference '{reference}' has no results in this suite.", ""]
        arch = self.units[ref].encoder
        rnd = self._pick(random_anchor, "--random-anchor") if random_anchor else next((e for e in self.encoders if (self.units[e].encoder, self.units[e].weights_sha256) == (arch, "random-init")), None)
        if rnd == ref:
            return [f"Normalised score: the reference '{reference}' is the random-init anchor itself; pass a pretrained --reference.", ""]
        if rnd is None:
            return [f"Normalised score: no random-init anchor ('{random_anchor or arch + ' (random-init)'}') in this suite; run it or pass --random-anchor.", ""]
        usable, skipped = [], []
        for col in self.columns:
            c = self.cells[col]
            if ref in c and rnd in c and math.isfinite(normalised(0.0, _mean_std(c[rnd])[0], _mean_std(c[ref])[0])):
                usable.append(col)
            else:
                why = "reference" if ref not in c else ("random-init" if rnd not in c else "anchors equal")
                skipped.append(f"{col[0]}/{col[1]} ({why})")
        rows = []
        for enc in self.encoders:
            vals = [normalised(_mean_std(self.cells[c][enc])[0], _mean_std(self.cells[c][rnd])[0], _mean_std(self.cells[c][ref])[0]) for c in usable if enc in self.cells[c]]
            rows.append([enc, f"{float(np.mean(vals)):.3f}" if vals else "–", f"{len(vals)}/{len(usable)}"])
        lines = [
            "### Normalised score",
            "",
            f"Per task/protocol (s − s_random) / (s_ref − s_random), averaged: 0 = {rnd}, 1 = {ref} (reference). "
            "Dice, accuracy and AP become comparable on this scale; only task/protocols with both anchors count.",
            "",
            tabulate(rows, headers=["encoder", "normalised score", "task/protocols"], tablefmt="github", disable_numparse=True),
            "",
        ]
        if skipped:
            lines += [f"Skipped (missing anchor): {', '.join(skipped)}.", ""]
        return lines

    def audit_marks(self) -> tuple[dict[tuple[str, Col], str], dict[Col, str], list[str]]:
        """Footnote marks: on the audited encoder's cells, or on the column when the audit does not
        say which encoder was pretrained on the data (an LVM-Med file list, say)."""
        marks: dict[tuple[str, Col], str] = defaultdict(str)
        header: dict[Col, str] = defaultdict(str)
        notes = []
        for audit in load_audits(self.results, self.suite, self.warn):
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
                for col in self.columns:
                    if col[0] != f["task"]:
                        continue
                    if enc is None:
                        header[col] += f"†{i}"
                        continue
                    for e in self.cells[col]:
                        if matches(enc, self.units[e]):
                            marks[(e, col)] += f"†{i}"
        return marks, header, notes


def reported_rows(columns: list[Col], tasks: dict) -> list[list[str]]:
    by_enc: dict[str, dict[Col, str]] = {}
    for t, p in columns:
        if t not in tasks:
            continue
        for r in tasks[t].reported:
            tag = r.protocol if r.head == "linear" else f"{r.protocol}-{r.head}"
            if r.metric is not None and r.metric != tasks[t].primary_metric:
                continue  # e.g. prostate_ood's per-site rows: the cell shows the primary metric only
            if tag == p:
                by_enc.setdefault(r.encoder, {})[(t, p)] = f"{r.value:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "")
    return [[f"{enc} (reported)"] + [by_enc[enc].get(c, "–") for c in columns] + ["–"] * len(FAMILY_COLUMNS) for enc in sorted(by_enc)]


LEGEND = (
    "Cells: primary metric x100 at the full training set, mean ± std over seeds, [95% CI] of that mean by a "
    "bootstrap that resamples whole patients/volumes of the test set (the metric recomputed per resample; ‡ = "
    "it cannot be recomputed exactly from the per-case records, so the CI is that of their mean, a stand-in), "
    "(n = seeds). **Bold**: best in the column and every encoder a paired bootstrap "
    "(Holm-adjusted over the column) cannot tell apart from it at 5% (overlapping CIs where no pairing is "
    "possible). Family columns average each task's main protocol over every task of the family in the suite; "
    "k/K = results for only k of its K tasks, no average. ‹tag› rows: older results whose split, spec, code or "
    "data differ from the current ones (never pooled with them). † = leakage-audit footnote."
)


def build(
    results: Path,
    warn: Callable[[str], None] = print,
    *,
    n_boot: int = DEFAULT_BOOT,
    alpha: float = 0.05,
    reference: str | None = None,
    random_anchor: str | None = None,
    out_name: str = "leaderboard",
    figures: dict[str, bytes] | None = None,
) -> str:
    """The leaderboard markdown; PNGs it links are put into ``figures`` (file name -> bytes)."""
    records, bad = load_records(results, warn) if results.is_dir() else ([], 0)
    lines = ["# lvmbench leaderboard", "", "Generated by `lvmbench leaderboard`; do not edit by hand.", ""]
    if bad:
        lines += [f"**{bad} result file(s) could not be read and are not shown** (see the command's output).", ""]
    if not records:
        lines.append("No results yet: run `lvmbench eval`.")
        return "\n".join(lines) + "\n"
    lines += [LEGEND, ""]
    for suite in sorted({r.unit.suite for r in records}, key=lambda s: (s != "lvmmed", s)):
        board = SuiteBoard(records, suite, n_boot, alpha, warn, results)
        marks, header_marks, notes = board.audit_marks()
        section = [f"## {SUITE_TITLES.get(suite, suite)}", ""]
        if board.columns:
            section += [board.main_table(marks, header_marks), ""]
            section += [n for note in notes for n in (note, "")]
            section += [n for note in board.variant_notes for n in (note, "")]
            if board.unknown:
                section += [f"Tasks not registered in this checkout (removed, renamed or from a plugin that is not installed): {', '.join(board.unknown)}; their columns have no family average.", ""]
            section += board.normalised_section(reference, random_anchor)
        png = f"{out_name}-{suite}-label-efficiency.png"
        le_lines, fig = label_efficiency.section(split_current(board.records)[0], suite, png, draw=figures is not None)
        if fig is not None and figures is not None:
            figures[png] = fig
        section += le_lines
        if len(section) > 2:
            lines += section
    return "\n".join(lines).rstrip() + "\n"


def write(results: Path, out: Path, warn: Callable[[str], None] = print, **options) -> str:
    """Write the markdown and its figures (next to it), each atomically."""
    if not results.is_dir():
        raise UserError("results folder not found", path=results, fix="pass --results DIR holding the output of `lvmbench eval`")
    figures: dict[str, bytes] = {}
    text = build(results, warn, out_name=out.stem, figures=figures, **options)
    if out.is_dir():
        raise UserError("--out names a folder", path=out, fix=f"pass --out FILE.md, e.g. --out {out / 'leaderboard.md'}")
    for name, blob in sorted(figures.items()):
        write_atomic(out.parent / name, blob, option="--out FILE.md")
    write_atomic(out, text, option="--out FILE.md")
    return text
