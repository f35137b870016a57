"""The runner, split by verb: **plan** which units a request names (``planner``), **triage** each
against what is on disk (``triager``: skip, stale, redo), **execute** the rest (``executor``: claim,
run, record atomically, baseline check). ``pools`` holds the encoder a run loads once (``data_pool``
each task's data), ``facts`` what planning needs of the encoder and its cache, ``quick`` the answer
to a request that is already done, ``record`` what a result records beside its metrics,
``request`` the request and summary types.

A unit is (suite, task, protocol, head, encoder weights, seed, label fraction). Units are
independent: ``--shard i/n`` takes every n-th unit of the sorted plan, so shards on several machines
fill one results tree without overlap.

The names below load with their module on first use: ``from lvmbench.runner import EvalRequest``
costs no torch, ``run`` does.
"""

from __future__ import annotations

from lvmbench.kit.lazy import lazy_attributes

_WHERE = {
    "BASELINE_MARGIN": "quick", "below_baseline": "quick", "all_done": "quick", "skipped_line": "quick",
    "run": "executor", "run_unit": "executor",
    "plan_units": "planner", "resolve_data_root": "planner", "select_tasks": "planner",
    "EncoderPool": "pools", "encoder_info": "pools", "plan": "pools",
    "TaskDataPool": "data_pool",
    "package_versions": "record", "runtime_info": "record",
    "EvalRequest": "request", "Planned": "request", "Summary": "request", "parse_shard": "request",
    "aside_name": "triager", "current_identity": "triager", "keep_aside": "triager", "triage": "triager",
    "user_message": "lvmbench.errors",
}


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
