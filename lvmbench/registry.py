"""One registry type for every pluggable name (tasks, encoders, protocols, readers, heads).

Lookups of unknown names fail with a near-match suggestion, as lm-evaluation-harness does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lvmbench.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str | None:
    """Closest registered name to ``name`` (typo, dash/underscore swap, case), or None."""
    norm = {c.lower().replace("-", "_"): c for c in choices}
    key = name.lower().replace("-", "_")
    if key in norm:
        return norm[key]
    close = difflib.get_close_matches(key, list(norm), n=1, cutoff=0.6)
    return norm[close[0]] if close else None


class Registry(Generic[T]):
    """Name -> object mapping with a loader hook for lazy discovery."""

    def __init__(self, kind: str, loader: Callable[["Registry[T]"], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loader = loader
        self._loaded = loader is None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader(self)

    def add(self, name: str, item: T, *, replace: bool = False) -> T:
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        self._ensure_loaded()
        if name in self._items:
            return self._items[name]
        hint = suggest(name, list(self._items))
        msg = f"no {self.kind} '{name}'"
        if hint:
            msg += f"; did you mean '{hint}'?"
        else:
            msg += f"; known: {', '.join(sorted(self._items)) or '(none)'}"
        raise UnknownNameError(msg)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._items

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._ensure_loaded()
        return iter(sorted(self._items.items()))
