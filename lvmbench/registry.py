"""One registry type for every pluggable name (tasks, encoders, protocols, readers, heads).

Lookups of unknown names fail with a near-match suggestion, as lm-evaluation-harness does. Plugin
packages add names through entry-point groups (``lvmbench.tasks``, ``lvmbench.encoders``,
``lvmbench.readers``, ``lvmbench.protocols``, ``lvmbench.synth``, ``lvmbench.suites``); a plugin
that fails to load is recorded as broken under its name, so it spoils only lookups of that name.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from lvmbench.errors import UnknownNameError, UserError

PLUGIN_GROUPS = ("lvmbench.tasks", "lvmbench.encoders", "lvmbench.readers", "lvmbench.protocols", "lvmbench.synth", "lvmbench.suites")

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str | None:
    """Closest registered name to ``name`` (typo, dash/underscore swap, case), or None."""
    norm = {c.lower().replace("-", "_"): c for c in choices}
    key = name.lower().replace("-", "_")
    if key in norm:
        return norm[key]
    close = difflib.get_close_matches(key, list(norm), n=5, cutoff=0.6)
    if not close:
        return None
    # equal similarity: the one sharing the longer start (lable -> label, not table)
    def rank(c: str) -> tuple[float, int]:
        return (round(difflib.SequenceMatcher(None, key, c).ratio(), 6), len(os.path.commonprefix([key, c])))

    return norm[max(close, key=rank)]


class Registry(Generic[T]):
    """Name -> object mapping with a loader hook for lazy discovery."""

    def __init__(self, kind: str, loader: Callable[["Registry[T]"], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._broken: dict[str, UserError] = {}
        self._loader = loader
        self._loaded = loader is None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader(self)

    def reset(self) -> None:
        """Forget what the loader found: the next lookup discovers again (task folders changed on disk)."""
        if self._loader is not None:
            self._items.clear()
            self._broken.clear()
            self._loaded = False

    def add(self, name: str, item: T, *, replace: bool = False) -> T:
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def add_broken(self, name: str, error: UserError) -> None:
        """A name whose definition could not be loaded: looking it up raises ``error``."""
        if name not in self._items:
            self._broken[name] = error

    def broken(self) -> dict[str, UserError]:
        self._ensure_loaded()
        return dict(sorted(self._broken.items()))

    def get(self, name: str) -> T:
        self._ensure_loaded()
        if name in self._items:
            return self._items[name]
        if name in self._broken:
            raise self._broken[name]
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


def import_members(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (by name) so that their ``@REG.register`` decorators run.

    A registry finds its built-in members the way it finds plugins' (entry points): by name, at its
    first lookup. The modules it imports register into the registry's module, so an import
    statement there would be a circle (registry module -> member -> registry module)."""
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in skip:
            importlib.import_module(f"{package}.{mod.name}")


def dist_label(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unnamed package"


def load_entry_points(reg: Registry, group: str, adapt: Callable[[str, object], object] | None = None) -> None:
    """Add every entry point of ``group`` to ``reg`` (``adapt(name, loaded)`` may wrap or check the
    loaded object); one that fails to import is recorded as broken with a one-line error."""
    for ep in entry_points(group=group):
        if ep.name in reg._items:
            continue  # registered by the import of another entry point's module (a decorator)
        try:
            obj = ep.load()
            if adapt is not None:
                obj = adapt(ep.name, obj)
        except UserError as e:
            reg.add_broken(ep.name, e)
            continue
        except Exception as e:  # noqa: BLE001 - a plugin's import error must not break other names
            reg.add_broken(ep.name, plugin_error(ep, group, e))
            continue
        reg.add(ep.name, obj, replace=True)


def plugin_error(ep: EntryPoint, group: str, e: BaseException) -> UserError:
    msg = str(e).splitlines()[0][:160] if str(e) else ""
    return UserError(
        f"plugin {reg_kind(group)} '{ep.name}' from {dist_label(ep)} failed to load ({e.__class__.__name__}{': ' + msg if msg else ''})",
        fix=f"fix or reinstall that package (entry point {ep.value} in group {group}), or uninstall it",
    )


def reg_kind(group: str) -> str:
    return group.split(".", 1)[-1].rstrip("s")


@functools.cache
def plugin_packages() -> dict[str, str]:
    """Installed packages that plug into lvmbench (any ``lvmbench.*`` entry point): name -> version.
    Once per process; every result records them, since a plugin can move a number."""
    out: dict[str, str] = {}
    for group in PLUGIN_GROUPS:
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            if dist is not None and dist.name != "lvmbench":
                out[dist.name] = dist.version
    return dict(sorted(out.items()))
