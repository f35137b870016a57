"""Wall time of the smoke suite: one process (sequential) vs ``--launcher local --jobs N``.

Both runs use the same synthetic data (written once, up front, with ``lvmbench data synth``), a
cold cache and a results folder of their own, on this machine, in this one invocation; they run one
after the other (never at the same time). The table gives wall time, units done, the exit status
(1 = a unit did not beat its baseline), the speed-up, the largest difference of a primary metric
between the two runs (CPU thread counts differ: 1 process x all cores vs N workers x cores/N) and
the load average before and after each run (other jobs on the machine move the numbers).

    .venv/bin/python benchmarks/launch_local.py                       # resnet50, whole smoke suite, --jobs 2
    .venv/bin/python benchmarks/launch_local.py --encoder resnet18 --tasks brain_tumor_linear,drive
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tabulate import tabulate


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_eval(label: str, args: list[str], results: Path, cache: Path) -> dict:
    cmd = [sys.executable, "-m", "lvmbench.cli", "eval", *args, "--results", str(results), "--cache-dir", str(cache), "--no-progress"]
    before = load()
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = next((ln for ln in res.stderr.splitlines() if " done, " in ln), "(no summary line)")
    (results.parent / "eval.log").write_text(res.stderr, encoding="utf-8")  # kept with --keep
    runs = Counter(re.findall(r"^(?:\[w\d+\] )?done  (\S+)", res.stderr, flags=re.M))
    if res.returncode not in (0, 1):
        sys.stderr.write(res.stderr)
    print(f"{label}: {wall:.1f} s, exit {res.returncode}: {summary}", file=sys.stderr)
    return {"label": label, "wall": wall, "code": res.returncode, "before": before, "after": load(), "primary": primaries(results), "twice": sum(1 for n in runs.values() if n > 1)}


def primaries(results: Path) -> dict[str, float]:
    out = {}
    for p in results.rglob("*.json"):
        if p.relative_to(results).parts[0].startswith("_"):
            continue
        doc = json.loads(p.read_text(encoding="utf-8"))
        out[p.relative_to(results).as_posix()] = float(doc["primary"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="resnet50")
    ap.add_argument("--tasks", default=None, help="comma-separated smoke tasks (default: the whole suite)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="keep the runs' folders here (default: a temporary folder)")
    ap.add_argument("--data", type=Path, default=None, help="synthetic data written before by `lvmbench data synth DIR` (default: written here, untimed)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lvmbench-launch-bench-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        data = args.data or base / "synth"
        if args.data is None:
            subprocess.run([sys.executable, "-m", "lvmbench.cli", "data", "synth", str(data)], check=True, capture_output=True)
        common = ["--encoder", args.encoder, "--suite", "smoke", "--data-root", str(data)] + (["--tasks", args.tasks] if args.tasks else [])
        runs = [
            run_eval("sequential (1 process)", common, base / "seq" / "results", base / "seq" / "cache"),
            run_eval(f"--launcher local --jobs {args.jobs}", [*common, "--launcher", "local", "--jobs", str(args.jobs)], base / "local" / "results", base / "local" / "cache"),
        ]
    seq, loc = runs
    same = sorted(seq["primary"]) == sorted(loc["primary"])
    diff = max((abs(seq["primary"][k] - loc["primary"][k]) for k in seq["primary"] if k in loc["primary"]), default=float("nan"))
    rows = [[r["label"], f"{r['wall']:.1f}", len(r["primary"]), r["twice"], r["code"], f"{seq['wall'] / r['wall']:.2f}x", r["before"], r["after"]] for r in runs]
    print(f"smoke suite{' (' + args.tasks + ')' if args.tasks else ''}, {args.encoder}, {os.cpu_count()} CPU core(s); the same units in both runs: {same}; largest |primary difference|: {diff:.4f}")
    print(tabulate(rows, headers=["mode", "wall s", "units", "units run twice", "exit", "speed-up", "load before", "load after"], tablefmt="github"))
    return 0 if same and not any(r["twice"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
