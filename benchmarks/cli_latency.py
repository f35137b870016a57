"""CPU time of the commands that train nothing, beside ``python -c "import lvmbench"`` in the same run.

Each command runs in a fresh process (as a user types it) ``--repeats`` times; the table shows the
median CPU seconds (user + system, children included) and the ratio to the bare import. The no-op
``eval`` runs after one real smoke eval of a few feature units has filled the results and the
caches (and filed the encoder facts), so it only plans, triages and skips.

    python benchmarks/cli_latency.py [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
LVMBENCH = [sys.executable, "-c", "from lvmbench.cli import main; main()"]


def cpu_of(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="folder for the results and caches (default: a temporary one)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lvmbench-latency-"))
    env = {**os.environ, "LVMBENCH_CACHE": str(work / "cache"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    smoke = ["eval", "--encoder", "resnet18", "--suite", "smoke", "--tasks", "brain_tumor_linear,kvasir_seg,fgadr_linear", "--protocol", "knn,linear,seg2d",
             "--results", str(work / "results"), "--no-progress"]
    subprocess.run([*LVMBENCH, *smoke], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)  # fills results and caches
    commands = {
        'python -c "import lvmbench"': [sys.executable, "-c", "import lvmbench"],
        "lvmbench --help": [*LVMBENCH, "--help"],
        "lvmbench tasks": [*LVMBENCH, "tasks"],
        "lvmbench suites": [*LVMBENCH, "suites"],
        "lvmbench protocols": [*LVMBENCH, "protocols"],
        "lvmbench readers": [*LVMBENCH, "readers"],
        "lvmbench task check tasks/kvasir_seg": [*LVMBENCH, "task", "check", "tasks/kvasir_seg"],
        "lvmbench status (smoke results)": [*LVMBENCH, "status", "--results", str(work / "results")],
        "lvmbench eval ... (no-op: 9 units done)": [*LVMBENCH, *smoke],
        "lvmbench leaderboard (reference-results)": [*LVMBENCH, "leaderboard", "--results", "reference-results", "--out", str(work / "lb.md")],
    }
    rows, base = [], None
    for name, cmd in commands.items():
        times, codes = [], set()
        for _ in range(args.repeats):
            t, rc = cpu_of(cmd, env)
            times.append(t)
            codes.add(rc)
        med = statistics.median(times)
        base = base if base is not None else med
        rows.append([name, f"{med:.2f}", f"{med / base:.1f}x", ",".join(map(str, sorted(codes)))])
    print(tabulate(rows, headers=["command", "CPU s (median)", "vs bare import", "exit"], tablefmt="github"))


if __name__ == "__main__":
    main()
