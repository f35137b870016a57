"""The command-line application and its sub-command groups; every command module adds itself to
these (``lvmbench/cli/__init__.py`` imports them all). Each command imports what it uses inside its
own body, so ``lvmbench --help`` and the light commands never load torch."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate medical-imaging vision encoders on the LVM-Med downstream suite (eval, tasks, leaderboard, data, pretrain ...).")
data_app = typer.Typer(no_args_is_help=True, help="Synthetic data, verification, splits.")
app.add_typer(data_app, name="data")
task_app = typer.Typer(no_args_is_help=True, help="Write and check task folders (out-of-tree tasks, plugins).")
app.add_typer(task_app, name="task")


def csv_list(text: str | None) -> list[str] | None:
    """``a, b,c`` -> ``["a", "b", "c"]``; None for None."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None
