"""The assembled command line: every command module added to the app, the pretrainer's command,
and how errors end a command (one line, an exit code; a traceback only for a bug)."""

from __future__ import annotations

import sys

import typer

from lvmbench.cli.groups import app
from lvmbench.cli.pretrain import pretrain_cmd
from lvmbench.errors import UserError
from lvmbench.registry import suggest

# each command module adds its commands to the app, in the order `lvmbench --help` lists them
# isort: off
from lvmbench.cli import evaluate, catalog, results, data  # noqa: E402, F401
# isort: on

app.command("pretrain")(pretrain_cmd)


INTERRUPTED = "interrupted; finished units are saved (a unit stopped half-way is not), rerun the same command to resume"


def run() -> None:
    try:
        command = typer.main.get_command(app)
        if sys.argv[1:2] == ["eval"] and "--help" in sys.argv[2:]:
            evaluate.describe_suites(command)  # computed for this help only: `lvmbench --help` stays light
        rv = command(standalone_mode=False)
        if rv == 130:  # typer's own answer to a Ctrl-C inside a command: say so, like the paths below
            print(INTERRUPTED, file=sys.stderr)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # click turns a KeyboardInterrupt into Abort
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors (typer vendors its own click: matched by class name)
        if any(c.__name__ == "ClickException" for c in type(e).__mro__):
            print(f"error: {usage_line(e)}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", 2))
        raise


def usage_line(e: Exception) -> str:
    """A command-line usage error (unknown option or command, bad value) as one line with the fix."""
    msg = " ".join(str(e.format_message() if hasattr(e, "format_message") else e).split())
    ctx = getattr(e, "ctx", None)
    names, c = [], ctx
    while c is not None and c.parent is not None:  # the root's name is however python was started
        names.append(c.info_name)
        c = c.parent
    where = " ".join(["lvmbench", *reversed(names)])
    name = getattr(e, "option_name", None)
    if name and not getattr(e, "possibilities", None) and ctx is not None:
        opts = [o for p in ctx.command.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", []) if o.startswith("--")]
        hint = suggest(name.lstrip("-"), [o[2:] for o in opts])
        if hint:
            msg += f" (did you mean --{hint}?)"
    return f"{where}: {msg.rstrip('.')}; fix: see `{where} --help`"
