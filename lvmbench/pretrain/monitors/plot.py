"""``lvmbench pretrain plot RUN``: the monitors of a run as one PNG (matplotlib).

Panels (x = optimiser step): the loss and each other loss term the objective logs (each scaled to its
first value so terms of different size share an axis), the online kNN accuracy per task with its
step-0 value (the initial weights) as a dashed line, the effective rank and spread (std) of the
training batch's embeddings and projections and of the kNN queries' embeddings, the objective's
agreement diagnostics (graph matching: noisy and noise-free matching vs identity, vertex top-1;
SimCLR: contrastive top-1), and throughput. Complete collapse marks the step with a red line.
"""

from __future__ import annotations

import io
from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.outputs import write_atomic
from lvmbench.pretrain.monitors.record import NAME, read_metrics

MAX_LOG_BYTES = 64 << 20  # one entry is ~1 kB and a run writes ~20: far above any real log
AGREEMENT = ("match_acc", "match_acc_clean", "vertex_top1", "graphs_exact_clean", "vertex_gap", "contrastive_acc")


def _series(entries: list[dict], get) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for e in entries:
        try:
            v = get(e)
        except (KeyError, TypeError):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(e["step"])
            ys.append(float(v))
    return xs, ys


def plot_run(run: Path, out: Path | None = None) -> Path:
    path = run / NAME if run.is_dir() else run
    if out is not None and not out.parent.is_dir():
        raise UserError("PNG's folder does not exist", path=out, fix="create the folder first, or leave PNG out (RUN/metrics.png)")
    if path.is_file() and path.stat().st_size > MAX_LOG_BYTES:
        raise UserError(f"larger than {MAX_LOG_BYTES >> 20} MiB: not a pretraining run's monitor log", path=path, fix="point at a pretraining --out folder that holds metrics.jsonl")
    entries = read_metrics(path)
    if not entries:
        raise UserError("no monitor entries to plot", path=path, fix="point at a pretraining --out folder that holds metrics.jsonl")
    # matplotlib takes half a second to import and only this command draws
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend, which must come first

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax = axes[0][0]
    terms = sorted({k for e in entries for k in e.get("objective", {}) if k not in AGREEMENT and k not in ("graphs",) and not k.endswith("_std")})
    for k in terms:
        xs, ys = _series(entries, lambda e, k=k: e["objective"][k])
        if ys:
            base = ys[0] if ys[0] else 1.0
            ax.plot(xs, [y / base for y in ys], marker=".", label=f"{k} (÷{base:.3g})")
    ax.set_title("loss terms (relative to first interval)")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    tasks = sorted({t for e in entries for t in e.get("knn", {})})
    for t in tasks:
        xs, ys = _series(entries, lambda e, t=t: e["knn"][t]["acc"])
        if ys:
            line = ax.plot(xs, ys, marker="o", label=t)[0]
            if xs[0] == 0:
                ax.axhline(ys[0], ls="--", color=line.get_color(), alpha=0.6)
    ax.set_title("online kNN accuracy (validation split; dashed = step 0)")
    if tasks:
        ax.legend(fontsize=7)
    ax = axes[0][2]
    for group in ("embedding", "projection"):
        xs, ys = _series(entries, lambda e, g=group: e[g]["effective_rank"])
        if ys:
            ax.plot(xs, ys, marker=".", label=f"{group} (batch)")
    for t in tasks:
        xs, ys = _series(entries, lambda e, t=t: e["knn"][t]["effective_rank"])
        if ys:
            ax.plot(xs, ys, ls=":", marker=".", label=f"{t} queries")
    ax.set_title("effective rank")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    for group in ("embedding", "projection"):
        xs, ys = _series(entries, lambda e, g=group: e[g]["std"])
        if ys:
            ax.plot(xs, ys, marker=".", label=group)
    ax.set_title("per-dim std of normalised outputs × √D\n(0 = collapse)")
    ax.legend(fontsize=7)
    ax = axes[1][1]
    for k in AGREEMENT:
        xs, ys = _series(entries, lambda e, k=k: e["objective"][k])
        if ys:
            ax.plot(xs, ys, marker=".", label=k)
    ax.set_title("matcher agreement with the identity pairing\n(vertex_gap in score units)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax = axes[1][2]
    xs, ys = _series(entries, lambda e: e["time"]["images_per_s"])
    ax.plot(xs, ys, marker=".")
    ax.set_title("throughput (images/s, wall)")
    for row in axes:
        for a in row:
            a.set_xlabel("step")
            for e in entries:
                if e.get("collapsed"):
                    a.axvline(e["step"], color="red", alpha=0.3)
    fig.suptitle(f"{path.parent.name}: {len(entries)} monitor entries, last step {entries[-1]['step']}/{entries[-1].get('steps_total')}")
    fig.tight_layout()
    out = out or path.parent / "metrics.png"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_atomic(out, buf.getvalue(), option="PNG")  # a link, FIFO or folder there is refused; never half a PNG
    return out
