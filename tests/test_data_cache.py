"""The decoded-array cache: keyed by file stamps and preprocessing, safe when runs race."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from lvmbench.data.cache import ArrayCache, cache_key, file_stamp
from lvmbench.data.cases import make_reader
from lvmbench.data.datasets import ImageDataset


def _race(root: str, key: str, seed: int, q) -> None:
    cache = ArrayCache(Path(root))

    def slow() -> np.ndarray:
        time.sleep(0.05)  # both processes compute: the entry does not exist yet
        return np.arange(200_000, dtype=np.int64)

    arr = cache.get_or_compute(key, slow)
    q.put(int(arr.sum()))


def test_concurrent_writers_never_expose_a_partial_entry(tmp_path):
    key = cache_key("race", 1)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), key, i, q)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    want = int(np.arange(200_000, dtype=np.int64).sum())
    assert [q.get(timeout=5) for _ in procs] == [want] * 4
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".npy", files  # no temporary files left behind
    assert oct(files[0].stat().st_mode & 0o777) == "0o644"  # readable by a team sharing the cache


def test_damaged_entry_is_recomputed(tmp_path):
    cache = ArrayCache(tmp_path)
    key = cache_key("x")
    cache.get_or_compute(key, lambda: np.ones(3))
    path = next(tmp_path.rglob("*.npy"))
    path.write_bytes(b"\x93NUMPY garbage")
    assert np.array_equal(cache.get_or_compute(key, lambda: np.full(3, 2.0)), np.full(3, 2.0))


def test_decoded_images_are_cached_and_invalidated_by_file_changes(tmp_path, synth_root):
    import shutil

    shutil.copytree(synth_root / "FGADR", tmp_path / "FGADR")
    reader = make_reader("fgadr", tmp_path / "FGADR")
    cases = reader.cases()[:4]
    cache = ArrayCache(tmp_path / "cache")
    ds = ImageDataset(reader, cases, 24, 3, "bilinear", cache)
    first = [ds.array(i) for i in range(4)]
    assert cache.misses == 4 and cache.hits == 0
    second = [ds.array(i) for i in range(4)]
    assert cache.hits == 4 and all(np.array_equal(a, b) for a, b in zip(first, second))
    # another target size is another entry; a rewritten file (new mtime) is decoded again
    ImageDataset(reader, cases, 16, 3, "bilinear", cache).array(0)
    assert cache.misses == 5
    f = tmp_path / "FGADR" / cases[1].image
    stamp = file_stamp(f)
    os.utime(f, ns=(stamp[2] + 10**9, stamp[2] + 10**9))
    ds.array(1)
    assert cache.misses == 6
