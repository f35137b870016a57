"""First-epoch vs later-epoch data time through the decoded-array cache.

Iterates a task's training cases twice through the loader the protocols use (segmentation:
``seg_data.prepare``; classification/detection: ``ImageDataset``) with an empty cache folder: pass 1
decodes, resizes and stores every array; pass 2 (a later epoch, or the next run) reads them back.
A third pass with the cache disabled is the no-cache baseline. Prints a table with the ratio.

    .venv/bin/python benchmarks/data_cache.py --task kvasir_seg --suite shared-data
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from lvmbench.data.cache import ArrayCache
from lvmbench.data.datasets import ImageDataset
from lvmbench.data.task_data import load_task_data
from lvmbench.suites import suite_data_root
from lvmbench.tasks import suite_tasks as select


def one_pass(spec, data, cases, cache: ArrayCache, workers: int) -> float:
    t0 = time.perf_counter()
    pre = spec.preprocess
    if spec.family == "segmentation":
        from lvmbench.protocols.seg_data import Prep, prepare

        hp = spec.settings(spec.default_protocols[0])
        prep = Prep(pre.size, pre.channels, pre.resize, hp.minmax, getattr(hp, "volume_norm", "med3d"))
        prepare(data.reader, cases, prep, cache, native=False, volumes=spec.dims != "2d", workers=workers, progress=False)
    else:
        from torch.utils.data import DataLoader

        ds = ImageDataset(data.reader, cases, pre.size, pre.channels, pre.resize, cache)
        for _ in DataLoader(ds, batch_size=32, num_workers=workers):
            pass
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="kvasir_seg")
    ap.add_argument("--suite", default="shared-data")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training cases (0 = all)")
    ap.add_argument("--workers", type=int, default=0, help="data-loader workers (0 = in the main process)")
    args = ap.parse_args(argv)

    spec = select([args.task], args.suite)[0]
    root = suite_data_root(args.suite, args.data_root)
    data = load_task_data(spec, root)
    cases = data.split.train[: args.limit or None]
    with tempfile.TemporaryDirectory(prefix="lvmbench-cache-bench-") as tmp:
        cache = ArrayCache(Path(tmp))
        cold = one_pass(spec, data, cases, cache, args.workers)
        misses = cache.misses
        warm = one_pass(spec, data, cases, cache, args.workers)
        hits = cache.hits
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.npy"))
    off = one_pass(spec, data, cases, ArrayCache(None, enabled=False), args.workers)
    rows = [
        ["epoch 1 (cache empty: decode + resize + store)", f"{cold:.2f}", f"{len(cases) / cold:.0f}", f"{misses} misses"],
        ["epoch 2 (cache warm: read arrays)", f"{warm:.2f}", f"{len(cases) / warm:.0f}", f"{hits} hits"],
        ["no cache (decode + resize every epoch)", f"{off:.2f}", f"{len(cases) / off:.0f}", ""],
    ]
    print(f"{spec.id} ({args.suite}): {len(cases)} training cases, size {spec.preprocess.size}, workers {args.workers}, cache {size / 2**20:.1f} MiB")
    print(tabulate(rows, headers=["pass", "seconds", "cases/s", "cache"], tablefmt="simple"))
    print(f"epoch 1 / epoch 2 = {cold / warm:.1f}x; no cache / epoch 2 = {off / warm:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
