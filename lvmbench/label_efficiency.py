"""Label-efficiency section of the leaderboard: metric vs training-label fraction, AULC, a PNG plot.

Results at several ``--label-fraction`` values (nested, patient-grouped, class-stratified training
subsets fixed by seed: :func:`lvmbench.data.splits.label_subset`) give one curve per encoder and
task/protocol. The summary per curve is the AULC of :func:`lvmbench.stats.aulc` — the trapezoid
area under metric vs log10(fraction), divided by the log-range — taken over the fractions every
encoder of that task/protocol has, so the numbers of one column are comparable.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from tabulate import tabulate

from lvmbench.compare import encoder_label
from lvmbench.spec import ResultRecord
from lvmbench.stats import aulc

Curve = dict[float, tuple[float, float, int]]  # fraction -> (mean, std over seeds, n seeds)


def curves(records: list[ResultRecord], suite: str) -> dict[tuple[str, str], dict[str, Curve]]:
    """(task, protocol) -> encoder label -> curve, for columns with at least two fractions."""
    vals: dict[tuple[str, str], dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        u = r.unit
        if u.suite == suite:
            vals[(u.task_id, u.protocol_tag)][encoder_label(u)][float(u.label_fraction)].append(r.primary)
    out: dict[tuple[str, str], dict[str, Curve]] = {}
    for col in sorted(vals):
        fracs = {f for enc in vals[col].values() for f in enc}
        if len(fracs) < 2:
            continue
        out[col] = {
            enc: {f: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for f, v in sorted(by_f.items())}
            for enc, by_f in sorted(vals[col].items())
        }
    return out


def common_fractions(by_enc: dict[str, Curve]) -> list[float]:
    sets = [set(c) for c in by_enc.values()]
    return sorted(set.intersection(*sets)) if sets else []


def section(records: list[ResultRecord], suite: str, png_name: str, draw: bool = True, escape: Callable[[str], str] = str) -> tuple[list[str], bytes | None]:
    """Markdown lines of the section and the PNG (None when the suite has no curves or not ``draw``);
    ``escape`` makes names from result files safe in markdown (the leaderboard passes its own)."""
    cols = curves(records, suite)
    if not cols:
        return [], None
    fracs = sorted({f for by_enc in cols.values() for c in by_enc.values() for f in c})
    rows, per_enc = [], defaultdict(list)
    for (task, proto), by_enc in cols.items():
        common = common_fractions(by_enc)
        for enc, curve in by_enc.items():
            a = aulc(common, [curve[f][0] for f in common]) if len(common) >= 2 else float("nan")
            if math.isfinite(a):
                per_enc[enc].append(a)
            cells = [_pt(curve.get(f)) for f in fracs]
            rows.append([escape(f"{task}/{proto}"), escape(enc), *cells, "–" if not math.isfinite(a) else f"{100 * a:.2f}", ", ".join(f"{f:g}" for f in common)])
    head = ["task/protocol", "encoder", *[f"f={f:g}" for f in fracs], "AULC", "AULC over"]
    n_cols = len(cols)
    summary = [[escape(enc), f"{100 * float(np.mean(v)):.2f}", f"{len(v)}/{n_cols}"] for enc, v in sorted(per_enc.items())]
    lines = [
        "### Label efficiency",
        "",
        "Primary metric x100 (mean ± std over seeds) when training on a fraction of the training labels "
        "(nested, patient-grouped, class-stratified subsets fixed by seed). "
        "AULC = trapezoid area under metric vs log10(fraction) divided by log10(f_max / f_min), over the fractions "
        "all encoders of the row's task/protocol have: the average metric over the log-fraction range.",
        "",
        tabulate(rows, headers=head, tablefmt="github", disable_numparse=True),
        "",
        "Mean AULC per encoder (over the task/protocols where it is defined):",
        "",
        tabulate(summary, headers=["encoder", "mean AULC", "task/protocols"], tablefmt="github", disable_numparse=True),
        "",
        f"![label efficiency]({png_name})",
        "",
    ]
    return lines, (plot(cols, suite) if draw else None)


def _pt(p: tuple[float, float, int] | None) -> str:
    if p is None:
        return "–"
    mean, std, n = p
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if n > 1 else "")


def plot(cols: dict[tuple[str, str], dict[str, Curve]], suite: str) -> bytes:
    """One panel per task/protocol, one line per encoder (error bars: std over seeds), PNG bytes.

    Deterministic: Agg backend, fixed size and dpi, no software/date metadata in the file.
    """
    import matplotlib  # heavy (a second): loaded only when a figure is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # after the backend is chosen

    n = len(cols)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    with matplotlib.rc_context({"svg.hashsalt": "lvmbench", "font.size": 8}):
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False, dpi=100)
        for ax, ((task, proto), by_enc) in zip(axes.flat, cols.items()):
            for enc, curve in by_enc.items():
                f = sorted(curve)
                ax.errorbar(f, [100 * curve[x][0] for x in f], yerr=[100 * curve[x][1] for x in f], marker="o", ms=3, capsize=2, label=enc.replace("$", r"\$"))  # literal text, never math mode
            ax.set_xscale("log")
            ax.set_title(f"{task}/{proto}".replace("$", r"\$"))
            ax.set_xlabel("label fraction")
            ax.set_ylabel("primary metric x100")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle(f"label efficiency — {suite}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        plt.close(fig)
    return buf.getvalue()
