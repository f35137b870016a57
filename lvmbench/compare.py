"""``lvmbench compare A B``: which per-task differences between two encoders are real.

For every task/protocol both encoders have results for (same suite, same label fraction), a paired
cluster bootstrap over the test cases both scored (patients/volumes resampled together, seeds
averaged; :func:`lvmbench.stats.paired_test`) gives the difference A - B, its 95% interval and a
two-sided p-value; Holm's step-down procedure adjusts the p-values over the tasks of the
comparison, and a difference is called real when its adjusted p-value is below ``alpha``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from lvmbench.errors import UserError
from lvmbench.identity import split_current
from lvmbench.results import iter_results
from lvmbench.spec import ResultRecord, RunUnit
from lvmbench.stats import DEFAULT_BOOT, Paired, higher_is_better, holm, paired_test, stable_seed

RANDOM_INIT = "random-init"


def encoder_label(unit: RunUnit) -> str:
    """How an encoder is shown: ``name @sha12`` or ``name (random-init)``."""
    if unit.weights_sha256 == RANDOM_INIT:
        return f"{unit.encoder} (random-init)"
    return f"{unit.encoder} @{unit.weights_sha256[:12]}"


def encoder_ref(unit: RunUnit) -> str:
    """How a user names it on the command line: ``name@sha12``."""
    return f"{unit.encoder}@{unit.weights_sha256[:12]}"


def load_records(results: Path, warn: Callable[[str], None] = print) -> tuple[list[ResultRecord], int]:
    """Every readable result under ``results`` and the number of files skipped (each warned once)."""
    if not results.is_dir():
        raise UserError("results folder not found", path=results, fix="pass --results DIR holding the output of `lvmbench eval`")
    records, bad = [], 0
    for _, rec in iter_results(results):
        if isinstance(rec, Exception):
            warn(f"skip  {rec}")
            bad += 1
        else:
            records.append(rec)
    return records, bad


def matches(ref: str, unit: RunUnit) -> bool:
    """``ref`` is ``name``, ``name@<sha prefix>``, ``name@random-init`` or a displayed label."""
    ref = ref.strip()
    if ref in (encoder_label(unit), encoder_ref(unit)):
        return True
    name, _, sha = ref.rpartition("@") if "@" in ref else (ref, "", "")
    name = name.strip()
    if name != unit.encoder:
        return False
    return not sha or unit.weights_sha256.startswith(sha.strip())


def resolve(ref: str, records: Iterable[ResultRecord], suite: str | None = None) -> tuple[str, str]:
    """The single (encoder name, weights sha256) that ``ref`` names among the records."""
    units = {(r.unit.encoder, r.unit.weights_sha256): r.unit for r in records if suite is None or r.unit.suite == suite}
    hits = sorted(k for k, u in units.items() if matches(ref, u))
    where = f" in suite '{suite}'" if suite else ""
    if not hits:
        have = ", ".join(sorted(encoder_ref(u) for u in units.values())) or "none"
        raise UserError(f"no results for encoder '{ref}'{where} (have: {have})", fix="name an encoder as NAME or NAME@SHA12 from that list")
    if len(hits) > 1:
        opts = ", ".join(encoder_ref(units[k]) for k in hits)
        raise UserError(f"encoder '{ref}' is ambiguous{where}: {opts}", fix="add @SHA12 to pick one")
    return hits[0]


@dataclass
class TaskComparison:
    task: str
    protocol: str
    metric: str
    a: float
    b: float
    n_seeds: tuple[int, int]
    paired: Paired | None
    p_holm: float = float("nan")
    verdict: str = "not tested"
    note: str = ""


def _cells(records: Iterable[ResultRecord], key: tuple[str, str], suite: str, fraction: float) -> dict[tuple[str, str], list[ResultRecord]]:
    cells: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for r in records:
        u = r.unit
        if u.suite == suite and (u.encoder, u.weights_sha256) == key and math.isclose(u.label_fraction, fraction):
            cells[(u.task_id, u.protocol_tag)].append(r)
    for v in cells.values():
        v.sort(key=lambda r: r.unit.seed)
    return cells


def pick_suite(records: list[ResultRecord], refs: list[str], suite: str | None) -> str:
    if suite:
        return suite
    suites = sorted({r.unit.suite for r in records})
    usable = [s for s in suites if all(any(matches(ref, r.unit) for r in records if r.unit.suite == s) for ref in refs)]
    if len(usable) == 1:
        return usable[0]
    if not usable and len(suites) == 1:
        return suites[0]  # resolve() then names the encoder that is missing
    if not usable:
        raise UserError(f"no suite has results for all of {', '.join(refs)} (suites: {', '.join(suites) or 'none'})", fix="check the names with `lvmbench leaderboard`")
    raise UserError(f"several suites have results for {', '.join(refs)}: {', '.join(usable)}", fix="pass --suite")


def compare(
    records: list[ResultRecord],
    a: str,
    b: str,
    *,
    suite: str | None = None,
    fraction: float = 1.0,
    n_boot: int = DEFAULT_BOOT,
    alpha: float = 0.05,
) -> tuple[str, tuple[str, str], tuple[str, str], list[TaskComparison]]:
    """Paired tests per task (Holm-adjusted over the tasks); returns suite, both keys and rows.

    Only each cell's current results take part: seeds run on an older split, spec or code are
    never pooled with newer ones (:func:`lvmbench.identity.split_current`)."""
    records = split_current(records)[0]
    suite = pick_suite(records, [a, b], suite)
    ka, kb = resolve(a, records, suite), resolve(b, records, suite)
    if ka == kb:
        raise UserError(f"'{a}' and '{b}' name the same encoder", fix="compare two different encoders")
    ca, cb = _cells(records, ka, suite, fraction), _cells(records, kb, suite, fraction)
    rows: list[TaskComparison] = []
    for key in sorted(set(ca) | set(cb)):
        ra, rb = ca.get(key, []), cb.get(key, [])
        if not ra or not rb:
            rows.append(TaskComparison(key[0], key[1], (ra or rb)[0].primary_metric, _mean(ra), _mean(rb), (len(ra), len(rb)), None, note=f"only {'A' if ra else 'B'} has results"))
            continue
        metric = ra[0].primary_metric
        row = TaskComparison(key[0], key[1], metric, _mean(ra), _mean(rb), (len(ra), len(rb)), None)
        if {r.primary_metric for r in ra + rb} != {metric}:
            row.note = "different primary metrics"
        else:
            row.paired = paired_test(ra, rb, n_boot=n_boot, alpha=alpha, seed=stable_seed("compare", suite, *key, fraction))
            if row.paired is None:
                row.note = "no shared per-case scores"
            elif {r.split_hash for r in ra} != {r.split_hash for r in rb}:
                row.note = "different split manifests: compared on the shared test cases only"
        rows.append(row)
    tested = [r for r in rows if r.paired is not None and math.isfinite(r.paired.p)]
    for r, p in zip(tested, holm([r.paired.p for r in tested])):  # type: ignore[union-attr]
        r.p_holm = p
        if p < alpha:
            better_a = (r.paired.diff > 0) == higher_is_better(r.metric)  # type: ignore[union-attr]
            r.verdict = "A better" if better_a else "B better"
        else:
            r.verdict = "no significant difference"
    return suite, ka, kb, rows


def _mean(recs: list[ResultRecord]) -> float:
    return sum(r.primary for r in recs) / len(recs) if recs else float("nan")


def _pct(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{100 * v:.2f}"


def _p(v: float) -> str:
    return "–" if not math.isfinite(v) else ("<0.001" if v < 0.001 else f"{v:.3f}")


def format_report(suite: str, ka: tuple[str, str], kb: tuple[str, str], rows: list[TaskComparison], alpha: float, fraction: float) -> str:
    la, lb = f"{ka[0]}@{ka[1][:12]}", f"{kb[0]}@{kb[1][:12]}"
    table = []
    for r in rows:
        pr = r.paired
        table.append(
            [
                f"{r.task}/{r.protocol}",
                r.metric,
                f"{pr.n_cases}/{pr.n_groups}" if pr else "–",
                _pct(r.a),
                _pct(r.b),
                f"{_pct(pr.diff)} [{_pct(pr.lo)}, {_pct(pr.hi)}]" if pr else "–",
                _p(pr.p) if pr else "–",
                _p(r.p_holm),
                r.verdict,
                r.note,
            ]
        )
    head = ["task/protocol", "metric", "cases/groups", "A", "B", "A-B [95% CI]", "p", "p (Holm)", "verdict", "note"]
    counts = {v: sum(r.verdict == v for r in rows) for v in ("A better", "B better", "no significant difference")}
    lines = [
        f"A = {la}   B = {lb}   suite {suite}, label fraction {fraction:g}",
        f"paired cluster bootstrap per task (patients/volumes resampled together, seeds averaged); Holm over {sum(r.paired is not None for r in rows)} task(s), alpha {alpha:g}",
        "",
        tabulate(table, headers=head, tablefmt="github", disable_numparse=True),
        "",
        f"A better on {counts['A better']}, B better on {counts['B better']}, no significant difference on {counts['no significant difference']} task(s).",
    ]
    return "\n".join(lines) + "\n"
