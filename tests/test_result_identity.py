"""A result belongs to what produced it: split, spec (resolved settings), code version and data.

A rerun keeps a finished unit only while its identity holds; a stale one is named, kept aside and
recomputed (or kept with ``keep_stale``); the leaderboard never pools two identities in one cell,
and family averages exist only over complete families.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builders import cls_records, make_record, tiny_task_dir, write_class_folders, write_records

from lvmbench.identity import differences, pool_key, split_current
from lvmbench.leaderboard import build
from lvmbench.results import iter_results, read_result
from lvmbench.runner import EvalRequest, run
from lvmbench.spec import RunOptions
from lvmbench.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tmp_path, monkeypatch, cache_dir):
    """A tiny classification task on its own data root, its own splits folder, fresh registry."""
    tasks = tiny_task_dir(tmp_path / "tasks", "idt", "idt_data")
    root = tmp_path / "data"
    write_class_folders(root / "idt_data")
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(tasks))
    monkeypatch.setenv("LVMBENCH_SPLITS", str(tmp_path / "splits"))
    TASKS.reset()
    yield tmp_path, root, tasks / "idt" / "task.yaml"
    TASKS.reset()


def _run(tmp_path, root, **kw):
    lines: list[str] = []
    req = EvalRequest(
        encoder="resnet18", suite="lvmmed", tasks=["idt"], protocols=["knn"], data_root=root,
        results=tmp_path / "results", run=RunOptions(progress=False, workers=0), **kw,
    )
    summary = run(req, log=lines.append)
    return summary, lines, req


def _reload_tasks():
    TASKS.reset()


def test_a_split_change_makes_the_result_stale_and_it_is_recomputed(tiny):
    tmp_path, root, _ = tiny
    s1, _, req = _run(tmp_path, root)
    assert len(s1.done) == 1
    (path, rec1), = list(iter_results(req.results))
    assert set(rec1.identity) >= {"split", "spec", "eval", "data", "train_subset"}

    s2, lines, _ = _run(tmp_path, root)  # nothing changed: skipped
    assert s2.skipped and not s2.done and not s2.stale

    # freezing the same lists is not a change
    from lvmbench.data.data_commands import freeze_split
    from lvmbench.tasks import get_task

    frozen, _ = freeze_split(get_task("idt"), "lvmmed", root)
    s3, _, _ = _run(tmp_path, root)
    assert s3.skipped and not s3.stale

    # another split: one training case moves to validation
    doc = json.loads(frozen.read_text(encoding="utf-8"))
    doc["val"].append(doc["train"].pop())
    frozen.write_text(json.dumps(doc), encoding="utf-8")
    s4, lines, _ = _run(tmp_path, root)
    assert s4.stale == [rec1.unit.key()] and len(s4.done) == 1
    stale_line = next(line for line in lines if line.startswith("stale"))
    assert "split" in stale_line and "recomputed" in stale_line and "\n" not in stale_line
    rec2 = read_result(path)
    assert rec2.identity["split"] != rec1.identity["split"] and rec2.split_hash != rec1.split_hash
    # the old result is kept aside, not overwritten, and is not read as a result
    aside = path.with_name(path.name + ".replaced")
    assert read_result(aside).identity == rec1.identity
    assert [p for p, _ in iter_results(req.results)] == [path]


def test_a_spec_edit_is_stale_a_cosmetic_edit_is_not_and_keep_stale_keeps(tiny):
    tmp_path, root, task_yaml = tiny
    _run(tmp_path, root)
    text = task_yaml.read_text(encoding="utf-8")

    task_yaml.write_text(text.replace("title: tiny", "title: renamed tiny"), encoding="utf-8")
    _reload_tasks()
    s, _, _ = _run(tmp_path, root)
    assert s.skipped and not s.stale, "a title is not part of the identity"

    task_yaml.write_text(text.replace("knn: {ks: [3]}", "knn: {ks: [5]}"), encoding="utf-8")
    _reload_tasks()
    s, lines, req = _run(tmp_path, root, keep_stale=True)
    assert s.stale and not s.done
    assert any(line.startswith("stale") and "spec" in line and "kept" in line for line in lines)
    s, lines, _ = _run(tmp_path, root)
    assert s.stale and len(s.done) == 1
    (_, rec), = list(iter_results(req.results))
    assert rec.hyperparameters["ks"] == [5] and rec.hyperparameters["temperature"] == 0.07  # resolved, defaults included


def test_new_evaluation_code_makes_results_stale(tiny, monkeypatch):
    tmp_path, root, _ = tiny
    _run(tmp_path, root)
    from lvmbench.protocols.base import PROTOCOLS
    from lvmbench.protocols.declared import DECLARED

    monkeypatch.setattr(DECLARED.get("knn"), "version", 99)  # the declaration: the implementation inherits it
    assert PROTOCOLS.get("knn").version == 99
    s, lines, _ = _run(tmp_path, root)
    assert s.stale and any("eval" in line for line in lines if line.startswith("stale"))


def test_changed_data_with_the_same_ids_makes_results_stale(tiny):
    tmp_path, root, _ = tiny
    _run(tmp_path, root)
    from PIL import Image

    img = next((root / "idt_data" / "Testing" / "a").glob("*.png"))
    Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(img)  # a re-exported image: other bytes
    s, lines, _ = _run(tmp_path, root)
    assert s.stale and any("data" in line for line in lines if line.startswith("stale"))


def test_a_result_without_identity_is_stale(tiny):
    tmp_path, root, _ = tiny
    _, _, req = _run(tmp_path, root)
    (path, _), = list(iter_results(req.results))
    doc = json.loads(path.read_text(encoding="utf-8"))
    del doc["identity"]
    path.write_text(json.dumps(doc), encoding="utf-8")
    s, lines, _ = _run(tmp_path, root)
    assert s.stale and any("older lvmbench" in line for line in lines)


def test_a_hand_added_key_is_kept_and_the_file_is_not_rewritten(tiny):
    tmp_path, root, _ = tiny
    _, _, req = _run(tmp_path, root)
    (path, _), = list(iter_results(req.results))
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["my_note"] = "checked by hand"
    path.write_text(json.dumps(doc), encoding="utf-8")
    before = path.read_bytes()
    s, _, _ = _run(tmp_path, root)
    assert s.skipped and not s.done and path.read_bytes() == before
    assert read_result(path).model_extra == {"my_note": "checked by hand"}


# -- pooling and completeness on the leaderboard ---------------------------------------------------


def _recs(seed: int, split: str, finished: str, acc_shift: float = 0.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 40)
    prob = rng.random((40, 4))
    prob[np.arange(40), labels] += 0.5 + acc_shift
    r = make_record(cls_records(labels, prob, [f"p{i}" for i in range(40)]), "accuracy", seed=seed)
    r.identity = {"split": split, "spec": "s", "eval": "2.1", "data": "d", "train_subset": f"t{seed}"}
    r.finished_at = finished
    return r


def test_split_current_never_pools_two_identities():
    old = [_recs(0, "A", "2026-01-01T00:00:00+00:00"), _recs(1, "A", "2026-01-01T00:00:01+00:00")]
    new = [_recs(2, "B", "2026-02-01T00:00:00+00:00")]
    current, superseded = split_current(old + new)
    assert [r.unit.seed for r in current] == [2] and [[r.unit.seed for r in g] for g in superseded] == [[0, 1]]
    assert pool_key(old[0].identity) == pool_key(old[1].identity) != pool_key(new[0].identity)
    assert differences(old[0].identity, new[0].identity) == ["split"]


def test_leaderboard_shows_two_splits_as_two_rows_with_a_footnote(tmp_path):
    old = [_recs(0, "A", "2026-01-01T00:00:00+00:00"), _recs(1, "A", "2026-01-01T00:00:01+00:00")]
    new = [_recs(2, "B", "2026-02-01T00:00:00+00:00", acc_shift=2.0)]
    write_records(tmp_path / "r", old + new)
    text = build(tmp_path / "r", warn=lambda s: None, n_boot=200)
    table = text.split("### Classification", 1)[1]  # the family table (the summary lists current rows only)
    rows = [line for line in table.splitlines() if line.startswith("| resnet18")]
    assert len(rows) == 2, text
    current = next(r for r in rows if "‹" not in r)
    assert "(n=1)" in current and "(n=2)" in next(r for r in rows if "‹" in r)
    assert "split" in text.split("older result(s) of resnet18")[1].splitlines()[0]


def test_family_averages_only_over_complete_families(tmp_path):
    write_records(tmp_path / "r", [_recs(0, "A", "2026-01-01T00:00:00+00:00")])
    text = build(tmp_path / "r", warn=lambda s: None, n_boot=200)
    from lvmbench.tasks import tasks_in_suite

    k = sum(1 for t in tasks_in_suite("smoke") if t.family == "classification")
    row = next(line for line in text.splitlines() if line.startswith("| resnet18"))
    assert f"1/{k}" in row, row  # one classification task of k: no average
    assert "k/K" in text


def test_readme_and_legend_describe_the_dagger_as_the_code_sets_it():
    """‡ is set when the metric cannot be recomputed exactly from the per-case records
    (stats.cell_ci's '(approx.)'), not for every per-case-mean metric."""
    from lvmbench.leaderboard import LEGEND

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for text in (LEGEND, readme):
        assert "cannot be recomputed exactly" in text
    assert "other metrics bootstrap the mean per-case score (`‡`)" not in readme
