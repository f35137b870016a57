"""``lvmbench leaderboard --csv FILE / --parquet FILE``: one row per result unit, for users' own
analysis (pandas).

Columns: where the unit belongs (suite, task, family, protocol, head, encoder, weights sha256,
seed, label fraction), its identity parts and ``pool_key``, whether it is in the current identity
group (``current``) and its leaderboard row (``row``: ``encoder ‹tag›`` for an older group), the
primary metric and its value, the unit's own 95% CI (``ci_low``/``ci_high``/``ci_method``, one seed),
its cell's seed-mean and CI (``cell_*``, what the leaderboard shows for label fraction 1), test
counts, flags, provenance, the result file (relative to the results folder), then every metric as
``metric.<name>``. Rows sorted, CIs seeded from the unit: the same results give the same file.

Text cells are safe to open in a spreadsheet: one that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return (a result field edited to ``=HYPERLINK(...)``, say) gets a leading ``'`` (OWASP's
CSV-injection rule), in the CSV and the Parquet file alike; numbers stay numbers.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from lvmbench.compare import encoder_label
from lvmbench.errors import UserError
from lvmbench.identity import POOL_PARTS, cell_key, pool_key, split_current
from lvmbench.leaderboard.board import family_of
from lvmbench.outputs import write_atomic
from lvmbench.stats import CI, cell_ci, stable_seed

PARQUET_FIX = 'pip install "lvmbench[parquet]" (or: pip install pyarrow)'


# OWASP's CSV-injection rule: a cell a spreadsheet would read as a formula (=, +, -, @) or that starts
# with a tab or carriage return gets a leading apostrophe, so it opens as text
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """A string cell made safe to open in a spreadsheet; numbers and everything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def require_parquet() -> None:
    try:
        import pyarrow  # noqa: F401  (optional: the parquet extra; only --parquet needs it)
    except ImportError:
        raise UserError("--parquet needs pyarrow, which is not installed", fix=PARQUET_FIX) from None


def _ci_cols(prefix: str, ci: CI | None) -> dict:
    ok = ci is not None and math.isfinite(ci.lo)
    return {f"{prefix}ci_low": ci.lo if ok else math.nan, f"{prefix}ci_high": ci.hi if ok else math.nan, f"{prefix}ci_method": ci.method if ok else ""}  # type: ignore[union-attr]


def unit_table(lb):
    """A pandas DataFrame, one row per readable result under the leaderboard's results folder."""
    rows = []
    for board in lb.boards:
        current, superseded = split_current(board.records)
        # the units of one cell: the current group of a (suite, encoder, task, protocol, fraction),
        # or one older identity group of it (its own row on the leaderboard)
        cells: dict[tuple, list] = {}
        for r in current:
            cells.setdefault((True, *cell_key(r)), []).append(r)
        for g in superseded:
            cells[(False, *cell_key(g[0]), pool_key(g[0].identity))] = list(g)
        shown = {id(r): cell for col in board.cells.values() for cell in col.values() for r in cell.records}
        for key in sorted(cells, key=repr):
            recs = sorted(cells[key], key=lambda x: x.unit.seed)
            cell = shown.get(id(recs[0]))  # on the leaderboard (label fraction 1): its CI as shown there
            cci = cell.ci if cell is not None else cell_ci(recs, seed=stable_seed(*key), n_boot=board.n_boot, alpha=board.alpha)
            vals = [x.primary for x in recs]
            for r in recs:
                own = cci if len(recs) == 1 else cell_ci([r], seed=stable_seed(r.unit.key(), "unit"), n_boot=board.n_boot, alpha=board.alpha)
                label = cell.row if cell is not None else encoder_label(r.unit) + ("" if key[0] else f" ‹{pool_key(r.identity)[:6] or 'pre-identity'}›")
                rows.append(_row(board, r, key[0], label, own, cci, vals, lb.file_of(r)))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in df.columns:
        if not (pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col])):  # text (object or str dtype)
            df[col] = df[col].map(neutralise)
    fixed = [c for c in df.columns if not c.startswith("metric.")]
    df = df[fixed + sorted(c for c in df.columns if c.startswith("metric."))]
    order = ["suite", "encoder", "weights_sha256", "task", "protocol_tag", "label_fraction", "current", "pool_key", "seed", "finished_at"]
    return df.sort_values(order, kind="mergesort").reset_index(drop=True)


def _row(board, r, is_current: bool, label: str, own: CI | None, cci: CI | None, vals: list[float], file: str) -> dict:
    u = r.unit
    return {
        "suite": u.suite,
        "task": u.task_id,
        "family": family_of(board.specs.get(u.task_id)),
        "protocol": u.protocol,
        "head": u.head,
        "protocol_tag": u.protocol_tag,
        "encoder": u.encoder,
        "weights_sha256": u.weights_sha256,
        "row": label,
        "seed": u.seed,
        "label_fraction": u.label_fraction,
        "current": is_current,
        "pool_key": pool_key(r.identity),
        **{f"identity.{k}": r.identity.get(k, "") for k in (*POOL_PARTS, "train_subset")},
        "primary_metric": r.primary_metric,
        "primary": r.primary,
        **_ci_cols("", own),
        "cell_mean": sum(vals) / len(vals),
        "cell_n": len(vals),
        **_ci_cols("cell_", cci),
        "n_test": r.counts.get("test", 0),
        "flags": ";".join(r.flags),
        "split_hash": r.split_hash,
        "task_version": r.task_version,
        "git_commit": r.git_commit or "",
        "device": r.device,
        "finished_at": r.finished_at,
        "file": file,
        **{f"metric.{k}": (float(v) if v is not None else math.nan) for k, v in sorted(r.metrics.items())},
    }


def write_table(df, path: Path, kind: str) -> None:
    """Write atomically (a temp file renamed), as every other output."""
    if kind == "csv":
        # RFC 4180 line ends (CRLF): a carriage return or newline inside a cell is then quoted, so a
        # field edited to hold one cannot split a row for a reader
        write_atomic(path, df.to_csv(index=False, lineterminator="\r\n"), option=f"--{kind} FILE")
    else:
        require_parquet()
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        write_atomic(path, buf.getvalue(), option=f"--{kind} FILE")


def write_exports(lb, csv: Path | None, parquet: Path | None) -> None:
    """The unit table as CSV and/or Parquet (``leaderboard --csv/--parquet``)."""
    table = unit_table(lb)
    if csv is not None:
        write_table(table, csv, "csv")
    if parquet is not None:
        write_table(table, parquet, "parquet")
