"""Published numbers beside the measured ones, and the conventions both were measured under.

- **Which suite**: a task's ``reported`` rows show in one suite only, the one whose budget they were
  measured under (:meth:`lvmbench.spec.TaskSpec.reported_in`: ``reported_suite``, else the first
  suite that runs the task at its file's own settings; ``lvmmed`` for LVM-Med's tasks), never
  beside smoke or reduced-budget numbers of the same task.
- **Every metric**: one :class:`Reported` per number of a row (a row may state several metrics);
  each stands beside results of the same metric (:class:`lvmbench.leaderboard.board.View`).
- **Like with like**: a row may state ``conventions`` (``prompt_preset``, ``empty_policy``,
  ``metric_definition``, ...); a result states its own in ``extra["conventions"]``. A result stands
  in the column of such a row only when it agrees on every key the row states; a result that states
  nothing agrees with rows that state nothing only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvmbench.spec import ResultRecord, TaskSpec

Col = tuple[str, str]  # (task, protocol tag)


@dataclass(frozen=True)
class Reported:
    """One published number (x100) in one column and metric."""

    encoder: str
    col: Col
    value: float
    std: float | None
    source: str
    metric: str
    conventions: tuple[tuple[str, str], ...] = ()

    @property
    def row(self) -> str:
        return f"{self.encoder} (reported)"


def protocol_tag(protocol: str, head: str) -> str:
    return protocol if head == "linear" else f"{protocol}-{head}"


def suite_rows(registered: Iterable[TaskSpec], suite: str) -> list[Reported]:
    """Every number of the reported rows that belong to ``suite`` (the suite's profile of the task
    may restate them), sorted."""
    out = []
    for spec in registered:
        if spec.reported_in() != suite:
            continue
        merged = spec.for_suite(suite)
        for r in merged.reported:
            conv = tuple(sorted(r.conventions.items()))
            for metric, value, std in r.values(merged.primary_metric):
                out.append(Reported(r.encoder, (spec.id, protocol_tag(r.protocol, r.head)), value, std, r.source, metric, conv))
    return sorted(out, key=lambda x: (x.row, x.col, x.metric))


def ranked_metric(spec: TaskSpec, metrics: set[str]) -> str | None:
    """For a column with reported numbers and no result: the one its results would be ranked by.
    The task's primary metric; else its protocol twin (``iou3d_prompt`` for ``iou3d``,
    ``dice_prompt_avg`` for ``dice_avg``: the prompt protocols rank by those); else the only metric
    stated; else none (the numbers then show in their metrics' views only)."""
    p = spec.primary_metric
    if p in metrics:
        return p
    twins = sorted(m for m in metrics if m.replace("_prompt", "") == p)
    if twins:
        return twins[0]
    return next(iter(metrics)) if len(metrics) == 1 else None


def result_conventions(record: ResultRecord) -> dict[str, str]:
    """What a result states about how it was measured (``extra.conventions``, flat str -> str)."""
    conv = record.extra.get("conventions")
    if not isinstance(conv, Mapping):
        return {}
    return {str(k): str(v) for k, v in conv.items()}


def convention_differences(stated: Iterable[tuple[str, str]], records: list[ResultRecord]) -> list[str]:
    """What differs between a reported row's conventions and a cell's results (empty: they agree):
    ``prompt_preset tight (reported: lvmmed)``, ``empty_policy not stated (reported: one)``."""
    mine = [result_conventions(r) for r in records]
    out = []
    for key, want in stated:
        got = sorted({c.get(key, "not stated") for c in mine})
        if got != [want]:
            out.append(f"{key} {'/'.join(got)} (reported: {want})")
    return out
