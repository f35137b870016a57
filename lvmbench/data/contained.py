"""Reading stays inside the dataset folder, and a walk of it ends.

**Paths.** A path a task file names (``data.options.table``, ``images``, ``masks`` ...) and a file
name a dataset's own annotations give (COCO ``file_name``, VOC ``<filename>``) must be relative and
free of ``..``: the same lexical rule as ``data.dir`` under the data root. A task file is shared
data; ``images: /`` or ``../../etc`` would make it read (and cache, and report as this task) whatever
that path holds on each machine. The opt-in for data kept elsewhere is a symlink the user places
inside the dataset folder (``ln -s /elsewhere DATASET/NAME``): links are followed, deliberately.

**Walks.** Listing every file under a folder (a manifest's image index, a ``**`` glob) follows such
links, but enters each real folder once: a link back to the folder or to a parent (``x -> .``) would
otherwise make the walk endless (two such links: 2^40 paths before the kernel's link limit), and a
second link to a folder already listed would list it again. Real folders are walked first, so a
folder reachable both by its own name and through a link keeps its own name.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated

from pydantic import AfterValidator, StrictStr

from lvmbench.errors import DataError

OUTSIDE = "points outside the dataset folder (an absolute path or '..')"
LINK_FIX = "make it a path relative to the dataset folder, without '..'; to read files kept elsewhere, link them in: ln -s /path/to/them DATASET_FOLDER/NAME"


def stays_inside(rel: str) -> bool:
    """True when ``rel``, joined to any folder, stays under that folder (no absolute path, no climb out)."""
    text = rel.replace("\\", "/")  # a task file may be written on Windows; refusing odd names is safe
    if text.startswith("/") or PureWindowsPath(rel).drive:
        return False
    # any '..' counts, even 'a/../b': the OS resolves it after following a symlink 'a', so it may climb out
    return ".." not in PurePosixPath(text).parts


def _inside(value: str) -> str:
    if not stays_inside(value):
        raise ValueError(OUTSIDE)
    return value


# A reader option naming a file, folder, glob or template relative to the dataset folder.
InsidePath = Annotated[StrictStr, AfterValidator(_inside)]
InsidePathOrList = InsidePath | list[InsidePath]


def inside(rel: str, *, what: str, path: str | Path, fix: str) -> str:
    """``rel`` when it stays inside; otherwise one line naming the file that gave it."""
    if not stays_inside(rel):
        raise DataError(f"{what} '{rel}' points outside the dataset folder", path=path, fix=fix)
    return rel


def _key(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def walk(root: Path, within: Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """(folder relative to ``root``, '' for itself; the names of its non-folder entries), for every
    folder under ``root``; hidden folders are skipped, symlinked folders followed once (see above).
    ``within``: the dataset folder ``root`` lies in; a link back to it or to any folder between it
    and ``root`` is a loop too. Unreadable folders are skipped, as ``os.walk`` does."""
    seen: set[tuple[int, int]] = set()
    links: list[str] = []
    start = _key(root)
    if start is None:
        return
    seen.add(start)
    seen.update(k for k in map(_key, _between(within, root)) if k is not None)
    yield from _walk_real(root, "", seen, links)
    while links:  # linked folders after every real one, in name order
        links.sort(reverse=True)
        rel = links.pop()
        key = _key(root / rel)
        if key is None or key in seen:
            continue  # a loop, or a folder already listed under its own name
        seen.add(key)
        yield from _walk_real(root, rel, seen, links)


def _walk_real(root: Path, top: str, seen: set[tuple[int, int]], links: list[str]) -> Iterator[tuple[str, list[str]]]:
    """The real (not linked) folders under ``root/top``; linked folders found go to ``links``."""
    stack = [top]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(root / rel if rel else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        files: list[str] = []
        subdirs: list[str] = []
        for e in entries:
            child = f"{rel}/{e.name}" if rel else e.name
            try:
                is_dir = e.is_dir()  # follows a link: a link to a folder is a folder
                is_link = e.is_symlink()
            except OSError:
                is_dir, is_link = False, False
            if not is_dir:
                files.append(e.name)
            elif e.name.startswith("."):
                continue
            elif is_link:
                links.append(child)
            else:
                key = _key(root / child)
                if key is not None and key not in seen:  # a bind mount may show a folder twice
                    seen.add(key)
                    subdirs.append(child)
        yield rel, files
        stack.extend(reversed(subdirs))


def _between(within: Path | None, root: Path) -> list[Path]:
    """``within`` and the folders between it and ``root`` (lexically), or [] when unrelated."""
    if within is None:
        return []
    try:
        parts = root.relative_to(within).parts
    except ValueError:
        return []
    return [within.joinpath(*parts[:k]) for k in range(len(parts))]


def folders(root: Path, within: Path | None = None) -> list[str]:
    """Every folder under ``root`` (relative, '' for itself) that :func:`walk` enters."""
    return [rel for rel, _ in walk(root, within)]


def glob_inside(root: Path, pattern: str) -> list[str]:
    """``glob.glob(pattern, root_dir=root, recursive=True)`` whose ``**`` cannot loop: a ``**``
    component matches the folders :func:`walk` enters (links followed once); the rest of the pattern is
    matched by ``glob`` itself, at a fixed depth. Relative paths; ``pattern`` must stay inside."""
    if not stays_inside(pattern):
        raise DataError(f"glob '{pattern}' {OUTSIDE}", path=root, fix=LINK_FIX)
    parts = pattern.split("/")
    if "**" not in parts:
        return globlib.glob(pattern, root_dir=root)
    i = parts.index("**")
    head, tail = "/".join(parts[:i]), "/".join(parts[i + 1 :])
    bases = [""] if not head else [b for b in globlib.glob(head, root_dir=root) if (root / b).is_dir()]
    out: set[str] = set()
    for base in bases:
        for sub in folders(root / base if base else root, root):
            prefix = "/".join(p for p in (base, sub) if p)
            if not tail:  # 'a/**': the folders and every file below, as glob lists them
                if prefix:
                    out.add(prefix)
                out.update(globlib.glob(globlib.escape(prefix) + "/*" if prefix else "*", root_dir=root))
                continue
            out.update(glob_inside(root, f"{globlib.escape(prefix)}/{tail}" if prefix else tail))
    return sorted(out)
