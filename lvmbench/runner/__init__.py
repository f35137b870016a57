"""The runner, split by verb: **plan** which units a request names (``planner``), **triage** each
against what is on disk (``triager``: skip, stale, redo), **execute** the rest (``executor``: claim,
run, record atomically, baseline check). ``pools`` holds what a run loads once, ``record`` what a
result records beside its metrics, ``request`` the request and summary types.

A unit is (suite, task, protocol, head, encoder weights, seed, label fraction). Units are
independent: ``--shard i/n`` takes every n-th unit of the sorted plan, so shards on several machines
fill one results tree without overlap.
"""

from lvmbench.errors import user_message
from lvmbench.runner.executor import BASELINE_MARGIN, below_baseline, run, run_unit
from lvmbench.runner.planner import plan, resolve_data_root, select_tasks
from lvmbench.runner.pools import EncoderPool, TaskDataPool, encoder_info
from lvmbench.runner.record import package_versions
from lvmbench.runner.request import EvalRequest, Planned, Summary, parse_shard
from lvmbench.runner.triager import aside_name, current_identity, keep_aside, triage

__all__ = [
    "BASELINE_MARGIN", "EncoderPool", "EvalRequest", "Planned", "Summary", "TaskDataPool", "aside_name", "below_baseline",
    "current_identity", "encoder_info", "keep_aside", "package_versions", "parse_shard", "plan", "resolve_data_root",
    "run", "run_unit", "select_tasks", "triage", "user_message",
]
