"""``launch_eval``: one request run here, on local workers or as a Slurm array (see the package's doc)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tabulate import tabulate

from lvmbench.errors import UserError
from lvmbench.launch import options as opt
from lvmbench.launch.local import run_local
from lvmbench.launch.slurm import run_slurm
from lvmbench.launch.units import RESUMES, bundles, describe, pending
from lvmbench.runner import EvalRequest, Summary, run


def launch_eval(
    req: EvalRequest,
    launcher: str = "none",
    *,
    jobs: int | None = None,
    devices: str | None = None,
    bundle: int | None = None,
    dry_run: bool = False,
    slurm: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> Summary | None:
    """Run ``req`` in this process (``none``), on local workers or on Slurm. None: nothing ran here
    (a dry run, or a job array left running)."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    slurm = dict(slurm or {})
    opt.check_combination(launcher, {"--jobs": jobs, "--devices": devices}, {opt.SLURM_OPTIONS[k]: v for k, v in slurm.items()})
    if launcher == "none" and bundle is not None:
        raise UserError("--bundle applies to --launcher local or slurm", fix="add --launcher local --jobs N (or --launcher slurm), or drop --bundle")
    if launcher == "local":
        settings = opt.local_settings(jobs, devices, req.run.device, bundle)
        if dry_run:
            return dry_run_units(req, settings.bundle, log)
        return run_local(req, settings, log)
    if launcher == "slurm":
        if bundle is not None:
            slurm["bundle"] = bundle
        return run_slurm(req, opt.slurm_settings(slurm), log, dry_run=dry_run)
    if dry_run:
        return dry_run_units(req, None, log)

    return run(req)


def dry_run_units(req: EvalRequest, bundle: int | None, log: Callable[[str], None]) -> None:
    """Print what ``eval`` would run (after skipping finished units): in the order this process
    runs them, or (``bundle``: local workers) in the bundles the workers take."""
    pend = pending(req, log, prepare=False)
    done = len(pend.summary.skipped)
    if bundle is None:
        print(f"dry run: {len(pend.todo)} unit(s) to run, {done} already done; nothing run")
        rows = [[p.unit.key(), "resumes at epoch" if p.unit.protocol in RESUMES else "restarts"] for p in pend.todo]
        if rows:
            print(tabulate(rows, headers=["unit", "if stopped"], tablefmt="simple"))
        return None
    items = bundles(pend.todo, bundle)
    print(f"dry run: {len(pend.todo)} unit(s) to run in {len(items)} bundle(s), {done} already done; nothing run")
    if items:
        print(tabulate(describe(items), headers=["bundle", "units", "protocols", "if stopped", "first unit"], tablefmt="simple"))
    return None
