"""One line per training epoch when progress bars are off (``--no-progress``), so a long run in a
batch job's log is never silent; with bars on, the bars say it and nothing is printed."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def epoch_line(ctx: Any, epoch: int, epochs: int, t0: float | None = None, **values: Any) -> None:
    """``epoch 3/35  <unit>  loss 0.412  val_dice 0.701  (12.3 s)`` on stderr, when ``ctx.progress`` is off."""
    if getattr(ctx, "progress", True):
        return
    shown = "  ".join(f"{k} {_fmt(v)}" for k, v in values.items() if v is not None)
    took = f"  ({time.perf_counter() - t0:.1f} s)" if t0 is not None else ""
    tqdm.write(f"epoch {epoch}/{epochs}  {ctx.unit.key()}  {shown}{took}", file=sys.stderr)
