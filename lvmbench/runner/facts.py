"""What planning and triage need to know of the encoder, and a cache of it.

Four facts: the name resolves, the weights' sha256, the kind (``cnn`` / ``transformer``: which
recipe a task's settings follow) and, per seed, what beyond the weights shapes the embedding
(pooling, a ViT's pyramid: part of a result's identity). Loaded (``pools.EncoderPool``) they cost
torch, timm and building the model: seconds. Every run stores them under the cache folder
(``encoder-facts/``, one file per encoder and weights) with the key of everything they can depend
on: the encoder name, the weights' sha256, the bytes of lvmbench's own code, the installed torch /
timm / torchvision and the encoder plugins; facts under another key are never read. A command
that only has to learn that every unit is already done (``quick.py``) reads them back; a missing or
unreadable file is never guessed at, the full path runs instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata as md
from pathlib import Path
from typing import Any, Protocol

from lvmbench.errors import UserError
from lvmbench.kit.files import sha256_file
from lvmbench.outputs import write_atomic

RANDOM_INIT = "random-init"  # the weights identity of an encoder without a checkpoint
PACKAGES = ("torch", "timm", "torchvision", "segment-anything", "safetensors")
FORMAT = "lvmbench-encoder-facts/1"
MAX_BYTES = 1 << 20


class NotCached(Exception):
    """A fact the cache does not hold (yet): the caller takes the full path."""


class EncoderFacts(Protocol):
    """What ``planner.plan_units`` and ``triager.triage`` ask of the encoder."""

    def check_known(self) -> None: ...  # raises the one-line "no encoder 'x'; did you mean" error
    def weights_sha256(self) -> str: ...
    def kind(self) -> str: ...
    def info(self, seed: int) -> dict: ...


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over lvmbench's own source files (names and bytes): an edited checkout is new code."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Installed versions the facts depend on, and the encoder plugins (name, target, package)."""
    out: dict[str, Any] = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    plugins = []
    for ep in md.entry_points(group="lvmbench.encoders"):
        dist = getattr(ep, "dist", None)
        plugins.append([ep.name, ep.value, f"{dist.name} {dist.version}" if dist is not None else ""])
    out["encoder_plugins"] = sorted(plugins)
    return out


def weights_sha256(weights: Path | None) -> str:
    """The weights' identity: the file's sha256, or ``random-init``."""
    return sha256_file(weights) if weights is not None else RANDOM_INIT


class FactsFile:
    """The cached facts of one (encoder, weights) under the current code and packages."""

    def __init__(self, cache_dir: Path, encoder: str, weights_sha: str):
        key = {"format": FORMAT, "encoder": encoder, "weights_sha256": weights_sha, "code": code_digest(), **environment()}
        # one file per (encoder, weights): facts under other code or packages are replaced, not piled up
        name = hashlib.sha256(f"{encoder}\0{weights_sha}".encode()).hexdigest()[:32]
        self.path = Path(cache_dir) / "encoder-facts" / f"{name}.json"
        self.key = key
        self._facts: dict[str, Any] | None = None

    def read(self) -> dict[str, Any]:
        if self._facts is None:
            try:
                # a regular file of sane size only: a FIFO there would block the read, a huge file stall it
                if not self.path.is_file() or self.path.stat().st_size > MAX_BYTES:
                    raise ValueError("not a facts file")
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                self._facts = dict(doc["facts"]) if isinstance(doc, dict) and doc.get("key") == self.key and isinstance(doc.get("facts"), dict) else {}
            except (OSError, ValueError, KeyError, TypeError):
                self._facts = {}
        return self._facts

    def get(self, fact: str) -> Any:
        facts = self.read()
        if fact not in facts:
            raise NotCached(fact)
        return facts[fact]

    def put(self, new: dict[str, Any]) -> None:
        """File ``new`` facts in one write. Best effort: a cache that cannot be written only costs
        the next command its shortcut."""
        facts = self.read()  # facts filed under another key read as none: this write replaces them
        if all(facts.get(k) == v for k, v in new.items()):
            return
        facts.update(new)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"key": self.key, "facts": facts}, indent=1, sort_keys=True))
        except (OSError, ValueError, UserError):
            pass


class CachedEncoder:
    """``EncoderFacts`` read from the cache only (no torch); any fact missing raises ``NotCached``."""

    def __init__(self, name: str, weights: Path | None, cache_dir: Path):
        if weights is not None and not Path(weights).is_file():
            raise NotCached("weights")  # the full path says what is wrong with the file
        self.name = name
        self._sha = weights_sha256(weights)
        self.file = FactsFile(cache_dir, name, self._sha)

    def check_known(self) -> None:
        """Known, and not a preset of released weights (whose file the full path resolves)."""
        if self.file.get("known") is not True or self.file.get("preset") is not False:
            raise NotCached("known")

    def weights_sha256(self) -> str:
        return self._sha

    def kind(self) -> str:
        kind = self.file.get("kind")
        if kind not in ("cnn", "transformer"):
            raise NotCached("kind")
        return kind

    def info(self, seed: int) -> dict:
        info = self.file.get(f"info:{seed}")
        if not isinstance(info, dict):
            raise NotCached(f"info:{seed}")
        return info
