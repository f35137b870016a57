"""Ctrl-C as a request, not an exception thrown into arbitrary code.

During ``lvmbench eval`` the first SIGINT only sets a flag; training steps, feature batches and the
unit loop check it (:func:`check`) and stop cleanly between two of them, so no interrupt lands in a
DataLoader's ``__del__`` or half-way through writing a result. The command then says what was
saved and exits 130. A second Ctrl-C stops at once (Python's default ``KeyboardInterrupt``).

Data-loader workers forked while the handler is installed inherit it, so they keep serving batches
instead of dying with a traceback of their own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_requested = threading.Event()


class Interrupted(BaseException):
    """Raised by :func:`check` after a Ctrl-C; a BaseException so generic handlers let it pass."""


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    if _requested.is_set():
        raise Interrupted()


def interruptible(items: Iterable[T]) -> Iterator[T]:
    """``items``, checking for a Ctrl-C before each one."""
    for item in items:
        check()
        yield item


@contextlib.contextmanager
def handler(log: Callable[[str], None]) -> Iterator[None]:
    """Install the flag-setting SIGINT handler for the block (main thread only; elsewhere a no-op)."""
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame) -> None:
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        log("interrupt: stopping after the current step (finished units are kept); press Ctrl-C again to stop at once")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
