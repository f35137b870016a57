"""``eval --launcher local --jobs N``: N worker processes on this machine, one bundle at a time each.

The launching process plans and triages once, then feeds bundles (longest first) to a queue; each
worker takes the next bundle when it finishes one, so a long detection unit on one worker does not
hold up the short units. Workers are fresh processes (``spawn``): with ``--devices 0,1`` each sees
one GPU (``CUDA_VISIBLE_DEVICES``), on CPU the cores are divided (N workers x threads <= cores, and
no data-loader processes unless ``--workers`` asks). A worker that dies (killed, out of memory)
marks its bundle's unfinished units failed and is replaced. Ctrl-C reaches every worker of the
terminal's process group: each stops after its current training step, as ``eval`` does.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import sys
from collections.abc import Callable
from typing import Any

import torch

from lvmbench import interrupt
from lvmbench.errors import UserError
from lvmbench.failures import note_failure
from lvmbench.launch.options import LocalSettings
from lvmbench.launch.units import absolute, bundles, finish, keys, merge, pending
from lvmbench.launch.worker import UnitWorker
from lvmbench.runner import EvalRequest, Planned, Summary, user_message

POLL_S = 0.5


def worker_env(index: int, settings: LocalSettings) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)}
    if settings.devices:
        env["CUDA_VISIBLE_DEVICES"] = str(settings.devices[index % len(settings.devices)])
    return env


def _worker_main(index: int, env: dict[str, str], threads: int, req: EvalRequest, redo: bool, launcher: dict, todo: Any, events: Any, stop: Any) -> None:
    """A worker process: take bundles until the queue says stop (``None``) or a stop is asked."""
    os.environ.update(env)  # before torch touches CUDA: this worker sees only its GPU
    # SIGINT was blocked since before this process existed (Pool.start_worker): a Ctrl-C that came
    # while it started is pending here. The launcher saw the same Ctrl-C and is stopping: leave quietly.
    if signal.SIGINT in signal.sigpending():
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # between bundles; ``run`` installs its own handler
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    torch.set_num_threads(threads)

    prefix = f"[w{index}] "
    while not stop.is_set():
        item = todo.get()
        if item is None:
            break
        n, unit_keys = item
        events.put(("start", index, n))
        try:
            out = UnitWorker(req, unit_keys, unit_keys if redo else [], {**launcher, "worker": index}, prefix=prefix)()
        except Exception as e:  # a bad data root or checkpoint: the whole bundle fails with its one line
            msg = user_message(e) if isinstance(e, UserError) else f"{e.__class__.__name__}: {e}"
            print(f"{prefix}FAIL  bundle {n}: {msg}", file=sys.stderr, flush=True)
            out = {"failed": list(unit_keys), "error": msg}
        events.put(("end", index, n, out))
        if out.get("interrupted") or interrupt.requested():  # a Ctrl-C that came as its last unit ended: take no more
            break


def run_local(req: EvalRequest, settings: LocalSettings, log: Callable[[str], None]) -> Summary:
    req = absolute(req)
    if req.run.workers is None and not settings.devices:
        req = dataclasses.replace(req, run=req.run.model_copy(update={"workers": 0}))  # the cores are the workers' threads already
    pend = pending(req, log)
    summary = pend.summary
    if not pend.todo:
        return finish(req, pend, summary)
    items = bundles(pend.todo, settings.bundle)
    jobs = min(settings.jobs, len(items))
    where = f"GPUs {','.join(map(str, settings.devices))}" if settings.devices else "CPU"
    log(f"local: {len(pend.todo)} unit(s) in {len(items)} bundle(s) on {jobs} worker(s) ({where}, {settings.threads} thread(s) each)")
    launcher = {"kind": "local", "jobs": settings.jobs, "threads": settings.threads}
    return finish(req, pend, Pool(req, settings, launcher, items, log).run(jobs, summary))


class Pool:
    """The worker processes, their bundle queue and their reports."""

    def __init__(self, req: EvalRequest, settings: LocalSettings, launcher: dict, items: list[list[Planned]], log: Callable[[str], None]):
        self.req, self.settings, self.launcher, self.items, self.log = req, settings, launcher, items, log
        self.ctx = mp.get_context("spawn")  # fresh processes: no forked torch thread pools or CUDA state
        self.todo = self.ctx.Queue()
        self.events = self.ctx.Queue()
        self.stop = self.ctx.Event()
        self.procs: dict[int, Any] = {}
        self.slots: dict[int, int] = {}  # worker index -> its device slot (a replacement inherits it)
        self.running: dict[int, int] = {}  # worker index -> bundle number
        self.next_index = 0

    def start_worker(self, slot: int) -> None:
        i = self.next_index
        self.next_index += 1
        self.slots[i] = slot
        devices = worker_env(slot, self.settings)
        launcher = {**self.launcher, **({"device": devices["CUDA_VISIBLE_DEVICES"]} if "CUDA_VISIBLE_DEVICES" in devices else {})}
        p = self.ctx.Process(
            target=_worker_main,
            args=(i, devices, self.settings.threads, self.req, self.req.overwrite, launcher, self.todo, self.events, self.stop),
            name=f"lvmbench-w{i}",
            daemon=False,
        )
        # A spawned worker spends its first seconds importing torch before _worker_main can ignore
        # Ctrl-C; a KeyboardInterrupt there is a traceback and a dead worker. A blocked signal stays
        # blocked across fork and exec, so the worker starts with SIGINT held back and decides itself.
        # Here it is only held for the start: a Ctrl-C meanwhile reaches this process's handler after.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        self.procs[i] = p

    def run(self, jobs: int, summary: Summary) -> Summary:
        for n, b in enumerate(self.items):
            self.todo.put((n, keys(b)))
        for _ in range(jobs):
            self.todo.put(None)
        left = set(range(len(self.items)))
        try:
            with interrupt.handler(self.log):
                for slot in range(jobs):
                    self.start_worker(slot)
                while left and self.procs:
                    if interrupt.requested() and not self.stop.is_set():
                        self.stop.set()  # no new bundles; workers stop after their current step
                        summary.interrupted = True
                    try:
                        event = self.events.get(timeout=POLL_S)
                    except queue.Empty:
                        self.reap(left, summary)
                        continue
                    if event[0] == "start":
                        self.running[event[1]] = event[2]
                    else:
                        _, i, n, out = event
                        self.running.pop(i, None)
                        left.discard(n)
                        merge(summary, out)
                self.join()
                if interrupt.requested():  # also when the workers left before the loop saw the flag
                    self.stop.set()
                    summary.interrupted = True
                if left and not self.stop.is_set():  # a worker killed before its report reached us
                    for n in sorted(left):
                        self.fail(n, "its worker died before reporting", summary)
        finally:
            self.todo.cancel_join_thread()  # bundles left after a stop must not keep this process waiting
            for p in self.procs.values():
                if p.is_alive():  # a second Ctrl-C, or an error here: leave no orphan behind
                    p.terminate()
        return summary

    def reap(self, left: set[int], summary: Summary) -> None:
        """Workers that died with a bundle in hand: its unfinished units fail; a new worker takes over."""
        for i, p in list(self.procs.items()):
            if p.is_alive():
                continue
            p.join()
            del self.procs[i]
            n = self.running.pop(i, None)
            if n is None:
                continue  # it took the stop marker and left
            left.discard(n)
            self.fail(n, f"worker w{i} died (exit code {p.exitcode}) while running this unit", summary)
            if not self.stop.is_set() and left:
                self.start_worker(self.slots[i])  # the dead worker's stop marker is still in the queue: counts stay right

    def fail(self, n: int, msg: str, summary: Summary) -> None:
        """Bundle ``n`` will not report: its units without a result failed (and say why)."""
        for pl in self.items[n]:
            if not (self.req.results / pl.unit.key()).is_file():
                summary.failed.append(pl.unit.key())
                note_failure(self.req.results, pl.unit, msg)
                self.log(f"FAIL  {pl.unit.key()}: {msg}")

    def join(self) -> None:
        for p in self.procs.values():
            p.join()
