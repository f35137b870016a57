"""Command line: ``lvmbench eval | status | tasks | encoders | protocols | readers | suites | task |
leaderboard | compare | audit | data | pretrain``.

User errors (bad data, bad checkpoint, unknown names) print one line and exit with status 2; only
bugs show a traceback. Commands live in one module per group (``lvmbench/cli/``) and import what they
use inside their own bodies (the light commands stay light); ``main`` is the console script.
"""

from __future__ import annotations

import sys


def plain_streams() -> None:
    """Under an ASCII locale (``LC_ALL=C`` without Python's UTF-8 mode) a ``≥`` or ``…`` in a table or
    the help would end the command with a UnicodeEncodeError: such characters print as escapes."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main() -> None:
    """The ``lvmbench`` console script. A Ctrl-C while the command line itself is still being
    imported (its first second or two) ends with one line and exit 130, as one later does."""
    try:
        plain_streams()
        from lvmbench.cli.assembled import run  # a Ctrl-C during this import is caught here
    except KeyboardInterrupt:
        print("interrupted before the command started; nothing was run", file=sys.stderr)
        sys.exit(130)
    run()


ASSEMBLED = ("app", "run", "usage_line", "INTERRUPTED")


def __getattr__(name: str) -> object:
    """``lvmbench.cli.app`` and the other names of the assembled command line, imported on first use."""
    if name not in ASSEMBLED:
        raise AttributeError(f"module 'lvmbench.cli' has no attribute '{name}'")
    from lvmbench.cli import assembled  # the assembled app: imported only when asked for

    return getattr(assembled, name)
