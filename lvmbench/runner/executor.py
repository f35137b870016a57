"""Execute: claim each unit, run its protocol, write its record atomically, check the baseline.

Units are independent: a failing unit prints one line (and leaves a ``.failed`` record) and the
others go on; Ctrl-C stops between two training steps and the finished units stay saved.
"""

from __future__ import annotations

import copy
import datetime as dt
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lvmbench import interrupt
from lvmbench.data.fingerprint import data_fingerprint
from lvmbench.data.task_data import TaskData
from lvmbench.data.verify import preflight
from lvmbench.encoders.channels import check_channels
from lvmbench.encoders.sizes import size_record, track_input_sizes
from lvmbench.errors import UserError, user_message
from lvmbench.failures import clear_failure, note_failure
from lvmbench.paths import usable_cache_dir
from lvmbench.protocols.base import PROTOCOLS, RunContext, pick_device
from lvmbench.results import Claim, result_path, write_result
from lvmbench.runner.data_pool import TaskDataPool
from lvmbench.runner.planner import plan_units
from lvmbench.runner.pools import EncoderPool, encoder_info
from lvmbench.runner.quick import BASELINE_MARGIN, below_baseline, skipped_line  # noqa: F401 (the runner's API)
from lvmbench.runner.record import (
    build_record,
    new_run,
    runtime_info,
    set_deterministic,
)
from lvmbench.runner.request import EvalRequest, Planned, Summary
from lvmbench.runner.triager import (
    current_identity,
    finished_meanwhile,
    keep_aside,
    triage,
)
from lvmbench.spec import ResultRecord, RunUnit
from lvmbench.suites import get_suite


def run(req: EvalRequest, log: Callable[[str], None] | None = None) -> Summary:
    new_run()
    log = log or (lambda s: tqdm.write(s, file=sys.stderr))
    summary = Summary()
    encoders = EncoderPool(req.encoder, req.weights, req.cache_dir)
    planned, summary.unavailable = plan_units(req, encoders)
    for line in summary.unavailable:
        log(f"skip  {line}")
    pool = TaskDataPool(req)
    todo = triage(req, planned, pool, encoders, summary, log)
    if summary.skipped:
        log(skipped_line(summary))
    if not todo:
        return summary
    if req.weights is not None:
        encoders.get(todo[0].unit.seed)  # a bad checkpoint fails here, once, before any unit
    device = pick_device(req.run.device)
    cache_dir = usable_cache_dir(req.cache_dir)
    set_deterministic(req.run.deterministic)
    if req.run.threads is not None:
        torch.set_num_threads(req.run.threads)
    synthetic = get_suite(req.suite).synthetic
    checked: set[str] = set()
    with interrupt.handler(log):
        for p in tqdm(todo, desc="units", disable=not req.run.progress, file=sys.stderr):
            if interrupt.requested():
                summary.interrupted = True
                break
            data = pool.get(p.task)
            if isinstance(data, TaskData) and p.task.id not in checked:
                try:
                    preflight(data, cache_dir, log, progress=req.run.progress)  # the checks of `lvmbench data verify`
                    checked.add(p.task.id)
                except UserError as e:
                    pool.data[p.task.id] = data = e
            if isinstance(data, UserError):
                fail(req, summary, p.unit, str(data), log)
                continue
            if not run_claimed(req, p, data, pool, encoders, device, cache_dir, synthetic, summary, log):
                break
    if synthetic and not summary.interrupted:
        finished = set(summary.done) | set(summary.skipped)
        summary.below_baseline = below_baseline(req.results, [p.unit for p in planned if p.unit.key() in finished])
    return summary


def run_claimed(req: EvalRequest, p: Planned, data: TaskData, pool: TaskDataPool, encoders: EncoderPool, device: torch.device,
                cache_dir: Path, synthetic: bool, summary: Summary, log: Callable[[str], None]) -> bool:
    """Claim, run and record one unit; False when the run was interrupted."""
    key = p.unit.key()
    path = result_path(req.results, p.unit)
    claim = Claim(path)
    if not claim.acquire():
        summary.busy.append(key)
        log(f"busy  {key}: another lvmbench process is running this unit")
        return True
    try:
        fingerprint = pool.fingerprints[p.task.id]
        if finished_meanwhile(req, p, data, fingerprint, encoders):
            summary.skipped.append(key)
            return True
        runtime = runtime_info(device, req.run, p.task, data, fingerprint, synthetic, p.unit)
        record = run_unit(p, data, req, device, cache_dir, pool.root(), runtime, encoders, fingerprint)
        kept = keep_aside(path, req.overwrite)
        write_result(req.results, record)
        clear_failure(path)
        summary.done.append(key)
        aside = f"; the old file is kept as {kept.name}" if kept is not None else ""
        log(f"done  {key}  {record.primary_metric}={record.primary:.4f}  ({record.timings['wall_s']:.1f}s){aside}")
    except interrupt.Interrupted:
        summary.interrupted = True
        log(f"stop  {key}: interrupted; nothing written for this unit")
        return False
    except UserError as e:
        fail(req, summary, p.unit, user_message(e), log)
    except Exception as e:  # a bug, not bad input: keep the traceback, go on with other units
        summary.failed.append(key)
        log(f"ERROR {key}: {e.__class__.__name__}: {e}\n{traceback.format_exc()}")
        note_failure(req.results, p.unit, f"{e.__class__.__name__}: {e}")
    finally:
        claim.release()
    return True


def fail(req: EvalRequest, summary: Summary, unit: RunUnit, message: str, log: Callable[[str], None]) -> None:
    summary.failed.append(unit.key())
    log(f"FAIL  {unit.key()}: {message}")
    note_failure(req.results, unit, message)


def run_unit(
    p: Planned,
    data: TaskData,
    req: EvalRequest,
    device: torch.device,
    cache_dir: Path,
    data_root: Path | None,
    runtime: dict | None = None,
    encoders: EncoderPool | None = None,
    fingerprint: str | None = None,
) -> ResultRecord:
    unit, task = p.unit, p.task
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    # Loaded once per run and seed (validates the checkpoint before any work); protocols get copies.
    encoders = encoders or EncoderPool(req.encoder, req.weights, req.cache_dir)
    encoder, ident = encoders.get(unit.seed, task.preprocess.channels)
    check_channels(encoder, unit.encoder, task)  # one line, not a torch shape error mid-run
    info = encoder_info(encoder)
    encoders.remember_info(unit.seed, task.preprocess.channels, info)  # the next command that only checks finds it cached
    identity = current_identity(p, data, fingerprint or data_fingerprint(data), info, req.run)
    sizes: set[tuple[int, int]] = set()  # the image sizes the encoder ran at (hparams.encoder_input_size)
    ctx = RunContext(
        unit=unit,
        task=task,
        data=data,
        encoder_identity=ident,
        make_encoder=lambda: track_input_sizes(copy.deepcopy(encoder), sizes),
        settings=p.settings,
        device=device,
        cache_dir=cache_dir,
        run=req.run,
        result_identity=identity,
    )
    out = PROTOCOLS.get(unit.protocol)().run(ctx)
    if not sizes:  # every embedding came from the feature cache, which is keyed by the task's size
        sizes.add((task.preprocess.size, task.preprocess.size))
    out.hparams.setdefault("encoder_input_size", size_record(sizes))
    return build_record(p, data, out, ident, identity, started, device, time.perf_counter() - t0, data_root, runtime)
