"""``eval --launcher slurm``: the units left to run become one Slurm job array, through submitit.

Each array task runs one long unit (detection, segmentation, fine-tuning) or a bundle of short
feature-based units, via :class:`lvmbench.launch.worker.UnitWorker`. Logs, the sbatch
script and submitit's pickles go to ``<results>/_jobs/<job id>/`` (with ``units.json``: which array
task runs which units). Slurm sends the job ``SIGUSR2`` ahead of a time-out or preemption
(``--signal=USR2@90``, submitit's default); submitit then calls the worker's ``checkpoint()`` and
requeues the task (``scontrol requeue``). The requeued task skips finished units and a detection
or segmentation unit resumes after its last saved epoch; other units stopped half-way restart. Time-outs requeue
at most ``--max-requeue`` times, preemptions always.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from lvmbench.errors import UserError
from lvmbench.failures import note_failure
from lvmbench.launch.options import SlurmSettings
from lvmbench.launch.units import absolute, bundles, describe, finish, keys, merge, pending
from lvmbench.launch.worker import UnitWorker
from lvmbench.results import write_atomic
from lvmbench.runner import EvalRequest, Planned, Summary

INSTALL_FIX = 'install the extra: pip install -e ".[slurm]" (or pip install submitit)'


def jobs_folder(results: Path) -> Path:
    return results / "_jobs"


def require_submitit() -> Any:
    try:
        import submitit  # optional: the [slurm] extra, needed only by --launcher slurm
    except ImportError:
        raise UserError("--launcher slurm needs submitit, which is not installed", fix=INSTALL_FIX) from None
    return submitit


def executor_parameters(s: SlurmSettings) -> dict[str, Any]:
    """AutoExecutor parameters: submitit's generic names where it has them, ``slurm_*`` otherwise."""
    params: dict[str, Any] = {"name": s.job_name, "timeout_min": s.time_min, "nodes": 1, "tasks_per_node": 1, "slurm_array_parallelism": s.max_parallel}
    if s.gpus_per_task:
        params["gpus_per_node"] = s.gpus_per_task
    if s.cpus_per_task:
        params["cpus_per_task"] = s.cpus_per_task
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.account:
        params["slurm_account"] = s.account
    if s.sbatch:
        params["slurm_additional_parameters"] = dict(s.sbatch)
    return params


def sbatch_preview(s: SlurmSettings, folder: Path, n_tasks: int) -> str:
    """The sbatch script submitit will write for this array (its own renderer, without submitting)."""
    try:
        import submitit  # noqa: F401  (first: the package itself decides whether it is installed)
        from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string  # optional, as above
    except ImportError:
        lines = [f"#   {k}={v}" for k, v in executor_parameters(s).items()] + [f"# job folder: {shlex.quote(str(folder))}"]
        return "\n".join([f"# submitit is not installed ({INSTALL_FIX}): no sbatch script rendered; submitit's parameters would be:", *lines])
    params = executor_parameters(s)
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    native = SlurmExecutor._convert_parameters(SlurmExecutor.__new__(SlurmExecutor), generic)
    native.update({k.removeprefix("slurm_"): v for k, v in params.items() if k.startswith("slurm_")})
    # quoted as submitit quotes its own command (SlurmExecutor._submission_command), so the preview is
    # the script it submits and can be pasted, whatever spaces the paths hold
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=n_tasks if n_tasks > 1 else None, **native)


def run_slurm(req: EvalRequest, s: SlurmSettings, log: Callable[[str], None], dry_run: bool = False) -> Summary | None:
    """Submit (or, with ``dry_run``, only show) the job array. Returns the launch's summary when
    ``--wait`` waited for it, None when the array was left running."""
    req = absolute(req)
    if not dry_run:  # before any planning work: a missing extra or a machine without Slurm is one line
        submitit = require_submitit()
        missing = [c for c in ("sbatch", "srun", "sacct") if shutil.which(c) is None]
        if missing:
            raise UserError(f"--launcher slurm: no {', '.join(missing)} on PATH; this is not a Slurm login node", fix="run it where sbatch works, or use --launcher local --jobs N here")
    pend = pending(req, log, prepare=not dry_run)
    if not pend.todo:
        return finish(req, pend, pend.summary)
    items = bundles(pend.todo, s.bundle)
    folder = jobs_folder(req.results) / "%A"
    if dry_run:
        print_plan(items, s, folder)
        return None
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=s.max_requeue)
    params = executor_parameters(s)
    try:
        ex.update_parameters(**params)
    except (ValueError, NameError, AssertionError) as e:
        raise UserError(f"submitit refused the Slurm parameters ({str(e).splitlines()[0]})", fix="check --sbatch KEY=VALUE names against `man sbatch`") from None
    redo = req.overwrite
    workers = [UnitWorker(req, keys(b), keys(b) if redo else [], {"kind": "slurm"}) for b in items]
    try:
        jobs = ex.submit_array(workers)
    except Exception as e:  # sbatch's own refusal (bad partition, account, QOS): its first line
        first = str(e).strip().splitlines()
        raise UserError(f"sbatch refused the job array: {first[-1] if first else e.__class__.__name__}", path=jobs_folder(req.results), fix="check --partition, --account, --time and --sbatch flags") from None
    job_id = str(jobs[0].job_id).split("_")[0]
    logs = jobs_folder(req.results) / job_id
    write_manifest(logs / "units.json", job_id, jobs, items, params)
    log(f"submitted Slurm job {job_id}: {len(jobs)} array task(s), {len(pend.todo)} unit(s); logs in {shlex.quote(str(logs) + '/')}")
    if not s.wait:
        log(f"follow it with: lvmbench status --results {shlex.quote(str(req.results))}   (cancel: scancel {job_id})")
        return None
    return finish(req, pend, wait_for(jobs, items, req, pend.summary, log))


def print_plan(items: list[list[Planned]], s: SlurmSettings, folder: Path) -> None:
    n_units = sum(len(b) for b in items)
    print(f"dry run: {n_units} unit(s) in {len(items)} array task(s); nothing submitted")
    print(tabulate(describe(items), headers=["task", "units", "protocols", "if stopped", "first unit"], tablefmt="simple"))
    print()
    print(f"# settings: {json.dumps(s.model_dump(mode='json'), sort_keys=True)}")
    print(sbatch_preview(s, folder, len(items)))


def write_manifest(path: Path, job_id: str, jobs: list, items: list[list[Planned]], params: dict) -> None:
    doc = {
        "job": job_id,
        "submitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "parameters": params,
        "tasks": {str(j.job_id): keys(b) for j, b in zip(jobs, items)},
    }
    write_atomic(path, json.dumps(doc, indent=1) + "\n")


def wait_for(jobs: list, items: list[list[Planned]], req: EvalRequest, summary: Summary, log: Callable[[str], None]) -> Summary:
    """Wait for every array task (requeues included) and merge what each worker reports; a task that
    ended without a report (killed, timed out too often) fails its units that have no result."""
    try:
        for job, b in zip(jobs, items):
            try:
                out = job.result()
            except Exception as e:  # noqa: BLE001 - submitit's FailedJobError / UncompletedJobError
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                msg = f"Slurm job {job.job_id} ended without finishing ({lines[0][:200] if lines else e.__class__.__name__}); log: {job.paths.stderr}"
                for p in b:
                    if not (req.results / p.unit.key()).is_file():
                        summary.failed.append(p.unit.key())
                        note_failure(req.results, p.unit, msg)
                        log(f"FAIL  {p.unit.key()}: {msg}")
                continue
            merge(summary, out)
            for line in out.get("failed", []):
                log(f"FAIL  {line} (job {job.job_id}; log: {job.paths.stderr})")
    except KeyboardInterrupt:
        log("stopped waiting; the jobs keep running (lvmbench status shows them, scancel stops them)")
        summary.interrupted = True
    return summary
