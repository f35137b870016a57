"""Label efficiency end to end: `eval --label-fraction` trains on nested, grouped, stratified subsets
fixed by seed (recorded in each result), and `leaderboard` draws the curves (a deterministic PNG next
to the markdown) with an AULC per encoder."""

from __future__ import annotations

import hashlib
import sys

import pytest
from builders import tiny_task_dir, write_class_folders  # noqa: F401

from lvmbench.results import iter_results
from lvmbench.spec import RunOptions

pytestmark = pytest.mark.usefixtures("one_thread")

FRACTIONS = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def run_fractions(tmp_path_factory):
    from lvmbench.runner import EvalRequest, run
    from lvmbench.tasks import TASKS, load_task_file

    base = tmp_path_factory.mktemp("label_eff")
    tiny_task_dir(base / "tasks", "w8frac", "w8frac")
    write_class_folders(base / "data" / "w8frac", n_train=16)
    spec = load_task_file(base / "tasks" / "w8frac" / "task.yaml")
    TASKS.names()
    TASKS.add(spec.id, spec)
    req = EvalRequest(
        encoder="resnet18", suite="lvmmed", tasks=["w8frac"], protocols=["knn"], seeds=[0, 1], fractions=list(FRACTIONS),
        data_root=base / "data", results=base / "results", cache_dir=base / "cache", run=RunOptions(progress=False, workers=0))  # fmt: skip
    try:
        s = run(req, log=lambda s: None)
        assert len(s.done) == 6 and s.ok
        from lvmbench.data.task_data import load_task_data

        data = load_task_data(spec, base / "data")
        yield base, data
    finally:
        TASKS._items.pop(spec.id, None)


def test_each_fraction_trains_on_its_nested_subset(run_fractions):
    from lvmbench.data.splits import label_subset

    base, data = run_fractions
    recs = {(r.unit.seed, r.unit.label_fraction): r for _, r in iter_results(base / "results")}
    assert len(recs) == 6
    for seed in (0, 1):
        subsets = {f: label_subset(data.split.train, f, seed) for f in FRACTIONS}
        ids = {f: {c.id for c in s} for f, s in subsets.items()}
        assert ids[0.25] < ids[0.5] < ids[1.0], "nested"
        assert {c.label for c in subsets[0.25]} == {0, 1}, "every class present"
        for f in FRACTIONS:
            r = recs[(seed, f)]
            assert r.counts["train"] == len(subsets[f])
            assert r.counts["test"] == len(data.split.test), "the test split never shrinks"
            want = hashlib.sha256("\n".join(sorted(ids[f])).encode()).hexdigest()[:16]
            assert r.runtime["train_subset_sha256"] == want, "the result names the subset it trained on"
    assert recs[(0, 0.25)].runtime["train_subset_sha256"] != recs[(1, 0.25)].runtime["train_subset_sha256"], "seeds draw different subsets"


def test_leaderboard_draws_curves_and_aulc(run_fractions, tmp_path, monkeypatch, capsys):
    from lvmbench import cli

    base, _ = run_fractions
    outs = []
    for name in ("one", "two"):
        out = tmp_path / name / "leaderboard.md"
        monkeypatch.setattr(sys, "argv", ["lvmbench", "leaderboard", "--results", str(base / "results"), "--out", str(out), "--n-boot", "200"])
        try:
            cli.main()
        except SystemExit as e:
            assert not e.code
        outs.append(out)
    capsys.readouterr()
    text = outs[0].read_text(encoding="utf-8")
    assert text == outs[1].read_text(encoding="utf-8")
    png = [p.read_bytes() for p in (o.parent / "leaderboard-lvmmed-label-efficiency.png" for o in outs)]
    assert png[0].startswith(b"\x89PNG") and png[0] == png[1], "the figure is byte-identical too"
    sec = text.split("### Label efficiency", 1)[1]
    row = next(line for line in sec.splitlines() if line.startswith("| w8frac/knn"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "resnet18 (random-init)" and all(" ± " in c for c in cells[2:5]), "two seeds per point"
    assert cells[-1] == "0.25, 0.5, 1" and 0 < float(cells[5]) <= 100
    main = text.split("### Label efficiency", 1)[0]
    row = next(line for line in main.splitlines() if line.startswith("| resnet18") and "| knn " in line)
    assert "(n=2)" in row and "| w8frac" in main, "the family table shows the full-label results only"
