"""One worker's job: run a fixed list of units through ``lvmbench.runner.run``.

The same callable serves the local launcher (called in a worker process) and Slurm (pickled by
submitit, called in an array task). On preemption or time-out submitit calls :meth:`checkpoint`,
which returns the same work as a new submission: after the requeue, finished units are skipped by
the runner's triage and a detection or segmentation unit resumes from its last saved epoch
(``<cache>/resume/<protocol>/``); any other unit stopped half-way restarts.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from typing import Any

from lvmbench.launch.units import RESUMES
from lvmbench.results import owner_info
from lvmbench.runner import EvalRequest, Summary, run


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class UnitWorker:
    """Callable: runs ``keys`` (unit keys of ``req``'s plan); returns the summary as a dict.

    ``redo`` are the keys to recompute although they have a result (``--overwrite``); a requeued
    worker drops those it already recomputed, so a preemption never makes it redo them again.
    """

    def __init__(self, req: EvalRequest, keys: list[str], redo: list[str] | None = None, launcher: dict[str, Any] | None = None, prefix: str = ""):
        # the launch applied --shard already: the worker's keys are its share
        self.req = dataclasses.replace(req, overwrite=False, run=req.run.model_copy(update={"progress": False}), units=None, shard=None)
        self.keys = list(keys)
        self.redo = list(redo or [])
        self.launcher = dict(launcher or {})
        self.prefix = prefix
        self.started: float | None = None

    def log(self, line: str) -> None:
        log(self.prefix + line if self.prefix else line)

    def __call__(self) -> dict[str, Any]:
        self.started = time.time()
        info = {**self.launcher, **{k: v for k, v in owner_info().items() if k in ("host", "job")}}
        summary = Summary()
        redo = set(self.redo)
        for units, overwrite in (([k for k in self.keys if k in redo], True), ([k for k in self.keys if k not in redo], False)):
            if not units:
                continue
            req = dataclasses.replace(self.req, units=units, overwrite=overwrite, run=self.req.run.model_copy(update={"launcher": info}))
            part = run(req, log=self.log)
            for f in ("done", "skipped", "busy", "failed"):
                getattr(summary, f).extend(getattr(part, f))
            if part.interrupted:
                summary.interrupted = True
                break
        return dataclasses.asdict(summary)

    def remaining_redo(self) -> list[str]:
        """``redo`` keys whose result was not rewritten since this worker started."""
        out = []
        for key in self.redo:
            path = self.req.results / key
            try:
                fresh = self.started is not None and path.stat().st_mtime >= self.started
            except OSError:
                fresh = False
            if not fresh:
                out.append(key)
        return out

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption/time-out: the same units, submitted again."""
        from submitit.helpers import DelayedSubmission  # optional: only a Slurm job is ever checkpointed

        resumable = [k for k in self.keys if k.split("/")[-1].split("-")[0] in RESUMES]
        self.log(
            f"requeue: job {owner_info().get('job', '?')} on {socket.gethostname()} (pid {os.getpid()}) stopped; "
            f"{len(self.keys)} unit(s) resubmitted: finished ones are skipped, "
            f"{'detection and segmentation resume after their last saved epoch, ' if resumable else ''}other units stopped half-way restart"
        )
        return DelayedSubmission(UnitWorker(self.req, self.keys, self.remaining_redo(), self.launcher, self.prefix))
