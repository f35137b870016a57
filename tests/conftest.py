"""Shared fixtures: a session-wide synthetic data root and an isolated cache per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Every registered synthetic dataset, written once per test session."""
    from lvmbench.data.synth import write_all

    root = tmp_path_factory.mktemp("synth")
    write_all(root)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: they run fastest on one, and far faster
    when other jobs share the cores (spinning OpenMP threads of an oversubscribed machine).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _own_splits_folder(tmp_path, monkeypatch):
    """Each test its own splits folder: runs write prompt files there (beside the split files), and
    a test must neither read nor leave anything in the user's. A test may point it elsewhere."""
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("LVMBENCH_CACHE", str(d))
    return d


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny class-folder task ``rt`` (``cli_helpers.rt_task``); ``cli_helpers.eval_rt`` runs it.
    Test files with a ``tiny`` of their own use theirs."""
    from cli_helpers import rt_task

    with rt_task(monkeypatch, tmp_path):
        yield tmp_path


def shared(name: str) -> Path:
    """A folder of ../shared/data, or skip the test when this checkout has none."""
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"real sample {p} not present")
    return p
