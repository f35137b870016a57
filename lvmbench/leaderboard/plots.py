"""Per-family figures: tasks x encoders, the point estimate of each task's main protocol with its
95% CI as an error bar. Deterministic PNG bytes (Agg backend, fixed size and dpi, no
software/date metadata), so the same results give the same files."""

from __future__ import annotations

import io
import math

import numpy as np

from lvmbench.leaderboard.board import FAMILY_TITLES, SuiteBoard, main_protocol


def plain(text: str) -> str:
    """A name from a result file as literal figure text: a ``$`` would start matplotlib's math
    mode (and an invalid formula would stop the drawing)."""
    return text.replace("$", r"\$")


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt  # heavy (a second): loaded only when a figure is drawn

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def family_plot(board: SuiteBoard, family: str) -> bytes | None:
    """The family's figure, or None when no current encoder has a main-protocol result in it."""
    cols = []
    for g in board.groups(family):
        for t in g.tasks:
            if t in board.specs:
                col = (t, main_protocol(board.specs[t]))
                if any(c.current for c in board.cells.get(col, {}).values()):
                    cols.append(col)
    if not cols:
        return None
    rows = sorted({e for col in cols for e, c in board.cells[col].items() if c.current})

    import matplotlib  # heavy (a second): loaded only when a figure is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # after the backend is chosen

    width = max(4.8, 1.1 * len(cols) + 2.2)
    with matplotlib.rc_context({"svg.hashsalt": "lvmbench", "font.size": 8}):
        fig, ax = plt.subplots(figsize=(width, 3.6), dpi=100)
        step = 0.7 / max(1, len(rows))
        for i, row in enumerate(rows):
            xs, ys, lo, hi = [], [], [], []
            for j, col in enumerate(cols):
                c = board.cell(row, col)
                if c is None:
                    continue
                y = 100 * c.mean
                xs.append(j - 0.35 + step * (i + 0.5))
                ys.append(y)
                ok = c.ci is not None and math.isfinite(c.ci.lo) and math.isfinite(c.ci.hi)
                lo.append(max(0.0, y - 100 * c.ci.lo) if ok else 0.0)  # type: ignore[union-attr]
                hi.append(max(0.0, 100 * c.ci.hi - y) if ok else 0.0)  # type: ignore[union-attr]
            ax.errorbar(xs, ys, yerr=np.array([lo, hi]), fmt="o", ms=4, capsize=2, elinewidth=1, label=plain(row))
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([plain(f"{t}\n{p} · {_metric(board, (t, p))}") for t, p in cols], fontsize=7)
        ax.set_xlim(-0.6, len(cols) - 0.4)
        ax.set_ylabel("primary metric x100 (95% CI)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_title(plain(f"{FAMILY_TITLES[family]} — {board.suite}"))
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        fig.tight_layout()
        return png_bytes(fig)


def _metric(board: SuiteBoard, col: tuple[str, str]) -> str:
    return next(iter(board.cells[col].values())).metric
