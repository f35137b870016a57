"""Files written at paths a user names (``leaderboard --out/--html/--csv/--parquet``, the figures next
to ``--out``) and every file the harness writes atomically (results, audits, claims' records).

- **Checked before writing** (:func:`check_target`): a path that exists must be a regular file with
  one name. A symbolic link is refused, not written through and not replaced: replacing it would
  turn the user's link into a copy and leave the file it pointed at stale; writing through it would
  write wherever the link points. A folder, FIFO, socket or device is refused (renaming over a FIFO
  or ``/dev/full`` would replace the node itself). A regular file with several hard links is
  refused too (the rename would leave the other names with the old content).
- **Distinct** (:func:`check_distinct`): two outputs of one command naming the same file (after
  resolving links and ``..``, or the same existing file under two names) are refused before any work.
- **Atomic** (:func:`write_atomic`): a temporary file in the same folder, fsynced, renamed over the
  target, the folder fsynced: a reader never sees half a file and a crash or a full disk leaves the
  old file or the new one. The file is created with mode 0666 filtered by the process umask (0644
  under the usual 022), as ``open()`` would; ``tempfile.mkstemp`` would leave 0600.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from lvmbench.errors import UserError

KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_target(path: Path, option: str, error: type[UserError] = UserError) -> None:
    """Refuse to write at ``path`` unless it is absent or a regular file with one name; ``option``
    names the command-line option that chose it (``--csv FILE``), for the message and its fix."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise error("a part of this path is a file, not a folder", path=path, fix=f"pass {option} inside a folder") from None
    except OSError as e:
        raise error(f"cannot inspect the output path ({e.strerror})", path=path, fix=f"pass another {option}") from None
    # an option naming the file itself (--csv FILE) is named; a result inside --results DIR is not
    flag = "" if option.startswith("--results") else f"{option.split()[0]} names "
    if stat.S_ISLNK(st.st_mode):
        raise error(
            f"{flag or 'is '}a symbolic link; lvmbench does not write through or replace links",
            path=path,
            fix=f"pass the file the link points to ({os.path.realpath(path)}) or another path as {option}",
        )
    kind = KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is not None:
        raise error(f"{flag or 'is '}{kind}, not a regular file", path=path, fix=f"pass {option} naming a regular file (or a new one)")
    if st.st_nlink > 1:
        raise error(
            f"{flag or 'is '}a file with {st.st_nlink} hard links; replacing it would leave its other names with the old content",
            path=path,
            fix=f"pass another {option}, or remove the other links first",
        )


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # one existing file under two names (hard links, bind mounts)
    except OSError:
        return False


def check_distinct(outputs: Iterable[tuple[str, Path]]) -> None:
    """Refuse two outputs of one command that name the same file. ``outputs``: ``(what, path)``
    pairs, ``what`` = the option (``--csv``) or a file an option implies (``--html's index.html``,
    ``the figure x.png next to --out``); the fix names the option to change (the first of the two
    that is an option itself)."""
    seen: list[tuple[str, Path]] = []
    for what, path in outputs:
        for other_what, other in seen:
            if _same(path, other):
                flag = next((w for w in (what, other_what) if w.startswith("--") and " " not in w), what.split()[-1])
                raise UserError(f"{other_what} and {what} name the same file; one would overwrite the other", path=path, fix=f"pass another path to {flag}")
        seen.append((what, path))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some filesystems cannot open folders, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """An exclusive new file next to the target, mode 0666 less the umask (the kernel applies it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {name}")


def write_atomic(path: Path, data: str | bytes, option: str = "--results DIR", error: type[UserError] = UserError) -> None:
    """Check ``path`` (:func:`check_target`), then write ``data`` to a temporary file in its folder
    and rename it over ``path``. ``error`` is the class of the one-line error raised."""
    check_target(path, option, error)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent, path.name)
    except OSError as e:
        raise error(f"cannot write there ({e.strerror or e})", path=path.parent, fix=f"pass a writable {option}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        what = "result" if option.startswith("--results") else "file"
        raise error(f"cannot write {what} ({e.strerror})", path=path, fix=f"free disk space or pass another {option}") from None
    _fsync_dir(path.parent)
