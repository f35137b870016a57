"""A fake Slurm for tests: ``sbatch``, ``srun``, ``sacct``, ``squeue``, ``scancel``, ``scontrol`` that
run submitted jobs on this machine and answer the way submitit parses them (no tests here).

:func:`install` writes one small shell script per command into ``<tmp>/bin`` (each runs this file
with the command's name); put that folder first on PATH. State lives in ``FAKE_SLURM_DIR``:

- ``sbatch SCRIPT``: reads the ``#SBATCH`` lines (``--array=0-N%P``, ``--output``, ``--error``),
  prints ``Submitted batch job ID`` and leaves a detached runner that runs each array task with the
  variables Slurm sets (SLURM_JOB_ID, SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID, SLURM_PROCID, ...),
  at most ``FAKE_SLURM_SLOTS`` (default 2) at once and at most P.
- ``srun [--output F] [--error F] CMD``: runs CMD in place (exec) with its output appended to F
  (``%A %a %j %t`` replaced) and records its pid, so signals reach the Python process itself.
- ``scancel ID --signal SIG`` signals a running task; ``scancel ID`` cancels.
- ``scontrol requeue ID``: the task runs again when its process has exited (SLURM_RESTART_COUNT+1).
- ``sacct -o JobID,State,NodeList --parsable2 -j ID``: one ``ID_i|STATE|node`` line per task.
- ``squeue -h [-r] -j IDS -o "%i %T"``: the pending and running tasks, one line each.

Preemption: with ``FAKE_SLURM_PREEMPT_GLOB`` set, the runner watches for a file matching that glob
while a task (only array index ``FAKE_SLURM_PREEMPT_TASK`` when set) runs for the first time and
then preempts it like Slurm does (SIGTERM, then the job's ``--signal`` signal, USR2 for submitit);
the job requeues itself through ``scontrol requeue``.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scancel", "scontrol")
NODE = "fakenode0"
FINAL = ("COMPLETED", "FAILED", "CANCELLED")


def install(tmp: Path, slots: int = 2) -> dict[str, str]:
    """Write the command scripts; returns the environment variables to set (PATH first)."""
    bin_dir, state = tmp / "bin", tmp / "slurm-state"
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    for cmd in COMMANDS:
        script = bin_dir / cmd
        script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} {cmd} \"$@\"\n", encoding="utf-8")
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_SLURM_DIR": str(state), "FAKE_SLURM_SLOTS": str(slots)}


def state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


# -- task state: one JSON per task, updated under a lock ------------------------------------------


def _task_file(key: str) -> Path:
    return state_dir() / "tasks" / f"{key}.json"


def read_task(key: str) -> dict:
    try:
        return json.loads(_task_file(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def update_task(key: str, **changes) -> dict:
    path = _task_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(state_dir() / ".lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = read_task(key)
        doc.update(changes)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, path)
    return doc


def tasks_of(job: str) -> list[str]:
    """Task keys of a job id (``123`` = every task of array 123; ``123_4`` = that one)."""
    folder = state_dir() / "tasks"
    if not folder.is_dir():
        return []
    keys = sorted(p.stem for p in folder.glob("*.json"))
    if "_" in job:
        return [k for k in keys if k == job]
    return [k for k in keys if k == job or k.split("_")[0] == job]


def new_job_id(count: int) -> int:
    path = state_dir() / "next_id"
    with open(state_dir() / ".lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        first = int(path.read_text(encoding="utf-8")) if path.exists() else 1000
        path.write_text(str(first + count + 1), encoding="utf-8")
    return first


# -- commands -------------------------------------------------------------------------------------


def sbatch(args: list[str]) -> int:
    script = Path(args[-1])
    opts = {}
    for line in script.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#SBATCH\s+--([\w-]+)(?:=(.*))?$", line.strip())
        if m:
            opts[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else True
    for a in args[:-1]:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            opts[k] = v
    array, parallel = None, None
    if "array" in opts:
        m = re.fullmatch(r"(\d+)-(\d+)(?:%(\d+))?", str(opts["array"]))
        array = list(range(int(m.group(1)), int(m.group(2)) + 1))
        parallel = int(m.group(3)) if m.group(3) else None
    job = new_job_id(len(array or [0]))
    keys = [f"{job}_{i}" for i in array] if array is not None else [str(job)]
    for n, key in enumerate(keys):
        update_task(key, state="PENDING", runs=0, job_id=str(job + 1 + n) if array is not None else str(job), array=array is not None)
    spec = {"job": job, "script": str(script), "opts": opts, "keys": keys, "parallel": parallel, "cwd": os.getcwd(), "env": dict(os.environ)}
    (state_dir() / "jobs").mkdir(exist_ok=True)
    (state_dir() / "jobs" / f"{job}.json").write_text(json.dumps(spec), encoding="utf-8")
    log = open(state_dir() / f"runner-{job}.log", "ab")
    subprocess.Popen([sys.executable, __file__, "_runner", str(job)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    print(f"Submitted batch job {job}")
    return 0


def _pattern(text: str, env: dict) -> str:
    job = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID", "")
    return text.replace("%A", job).replace("%a", env.get("SLURM_ARRAY_TASK_ID", "")).replace("%j", env.get("SLURM_JOB_ID", "")).replace("%t", env.get("SLURM_PROCID", "0"))


def _runner(job: str) -> int:
    spec = json.loads((state_dir() / "jobs" / f"{job}.json").read_text(encoding="utf-8"))
    slots = max(1, min(int(os.environ.get("FAKE_SLURM_SLOTS", "2")), spec["parallel"] or 10**6))
    sem = threading.Semaphore(slots)
    threads = [threading.Thread(target=_run_task, args=(spec, key, sem)) for key in spec["keys"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


def _run_task(spec: dict, key: str, sem: threading.Semaphore) -> None:
    with sem:
        preempt = spec["env"].get("FAKE_SLURM_PREEMPT_GLOB")
        while True:
            info = read_task(key)
            if info.get("state") == "CANCELLED":
                return
            runs = int(info.get("runs", 0))
            env = dict(spec["env"])
            env.update({
                "SLURM_JOB_ID": info["job_id"], "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": NODE, "SLURMD_NODENAME": NODE, "SLURM_SUBMIT_DIR": spec["cwd"],
                "SLURM_RESTART_COUNT": str(runs), "SLURM_JOB_NAME": str(spec["opts"].get("job-name", "sbatch")), "FAKE_SLURM_TASK": key,
            })
            if info.get("array"):
                env.update({"SLURM_ARRAY_JOB_ID": str(spec["job"]), "SLURM_ARRAY_TASK_ID": key.split("_")[1], "SLURM_ARRAY_TASK_COUNT": str(len(spec["keys"]))})
            if "cpus-per-task" in spec["opts"]:
                env["SLURM_CPUS_PER_TASK"] = str(spec["opts"]["cpus-per-task"])
            out = _pattern(str(spec["opts"].get("output", f"slurm-{key}.out")), env)
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            update_task(key, state="RUNNING", runs=runs + 1, pid=None)
            with open(out, "ab") as f:
                proc = subprocess.Popen(["bash", spec["script"]], cwd=spec["cwd"], env=env, stdout=f, stderr=subprocess.STDOUT)
                watcher = None
                target = spec["env"].get("FAKE_SLURM_PREEMPT_TASK")  # an array index: preempt only that task
                if preempt and runs == 0 and (target is None or key.split("_")[-1] == target):
                    watcher = threading.Thread(target=_preempt_when, args=(preempt, key, proc, str(spec["opts"].get("signal", "USR2@90")).split("@")[0]), daemon=True)
                    watcher.start()
                rc = proc.wait()
            info = read_task(key)
            if info.get("requeue"):
                update_task(key, requeue=False, state="REQUEUED", pid=None)
                continue
            if info.get("state") != "CANCELLED":
                update_task(key, state="COMPLETED" if rc == 0 else "FAILED", exit_code=rc, pid=None)
            return


def _preempt_when(pattern: str, key: str, proc: subprocess.Popen, sig: str) -> None:
    while proc.poll() is None:
        if glob.glob(pattern):
            pid = read_task(key).get("pid")
            if pid:
                update_task(key, preempted=True)
                os.kill(int(pid), signal.SIGTERM)
                time.sleep(0.2)
                os.kill(int(pid), getattr(signal, "SIG" + sig.removeprefix("SIG")))
                return
        time.sleep(0.05)


def srun(args: list[str]) -> int:
    out = err = None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a in ("--output", "--error"):
            if a == "--output":
                out = args[i + 1]
            else:
                err = args[i + 1]
            i += 2
            continue
        i += 1  # --unbuffered and the like
    cmd = args[i:]
    env = dict(os.environ)
    for path, fd in ((out, 1), (err, 2)):
        if path:
            target = _pattern(path, env)
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            f = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(f, fd)
            os.close(f)
    key = env.get("FAKE_SLURM_TASK")
    if key:
        update_task(key, pid=os.getpid())
    os.execvp(cmd[0], cmd)
    return 1


def sacct(args: list[str]) -> int:
    jobs = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for job in jobs:
        for key in tasks_of(job):
            state = read_task(key).get("state", "PENDING")
            print(f"{key}|{state}|{NODE}")
            if state in FINAL:
                print(f"{key}.batch|{state}|{NODE}")
    return 0


def squeue(args: list[str]) -> int:
    jobs: list[str] = []
    fmt = "%i %T"
    header = True
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-j", "--jobs"):
            jobs += args[i + 1].split(",")
            i += 1
        elif a.startswith("--jobs="):
            jobs += a.split("=", 1)[1].split(",")
        elif a in ("-o", "--format"):
            fmt = args[i + 1]
            i += 1
        elif a in ("-h", "--noheader"):
            header = False
        i += 1
    if not jobs:
        jobs = sorted({p.stem.split("_")[0] for p in (state_dir() / "tasks").glob("*.json")})
    if header:
        print(fmt.replace("%i", "JOBID").replace("%T", "STATE"))
    for job in jobs:
        for key in tasks_of(job):
            state = read_task(key).get("state", "PENDING")
            if state not in FINAL:
                print(fmt.replace("%i", key).replace("%T", state))
    return 0


def scancel(args: list[str]) -> int:
    sig = None
    ids = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--signal", "-s"):
            sig = args[i + 1]
            i += 1
        elif a.startswith("--signal="):
            sig = a.split("=", 1)[1]
        else:
            ids.append(a)
        i += 1
    for job in ids:
        for key in tasks_of(job):
            info = read_task(key)
            if sig:
                if info.get("pid"):
                    os.kill(int(info["pid"]), getattr(signal, "SIG" + sig.removeprefix("SIG")))
                continue
            update_task(key, state="CANCELLED")
            if info.get("pid"):
                os.kill(int(info["pid"]), signal.SIGKILL)
    return 0


def scontrol(args: list[str]) -> int:
    if args[:1] == ["requeue"]:
        for job in args[1].split(","):
            for key in tasks_of(job):
                update_task(key, requeue=True)
        return 0
    print(f"scontrol (fake): unsupported {' '.join(args)}", file=sys.stderr)
    return 1


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "_runner":
        return _runner(args[0])
    return {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scancel": scancel, "scontrol": scontrol}[cmd](args)


if __name__ == "__main__":
    sys.exit(main())
