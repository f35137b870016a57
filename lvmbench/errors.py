"""User-facing errors: one line that names the file and the fix, printed without a traceback."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (data, checkpoint, arguments), not a bug in lvmbench.

    The CLI prints ``str(err)`` as a single line and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        parts = []
        if path is not None:
            parts.append(f"{path}:")
        parts.append(message.rstrip("."))
        text = " ".join(parts)
        if fix:
            text += f"; fix: {fix}"
        super().__init__(text.replace("\n", " "))
        self.path = None if path is None else str(path)
        self.fix = fix


class DataError(UserError):
    """Dataset missing, unreadable, or inconsistent."""


class CheckpointError(UserError):
    """A weights file that cannot be loaded safely or does not match the architecture."""


class UnknownNameError(UserError):
    """A task, encoder, protocol or suite name that is not registered."""


def user_message(e: UserError) -> str:
    """The one-line message of a user error, also when a DataLoader worker raised it: torch then
    re-raises the same type with the worker's whole traceback as its message, and the original
    message is what follows the traceback's last line's ``module.Class: ``."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    marker = f"{type(e).__module__}.{type(e).__qualname__}: "
    at = text.rfind(marker)
    return text[at + len(marker):].strip() if at >= 0 else text.rsplit(": ", 1)[-1].strip()
