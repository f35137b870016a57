"""Every metric a task lists in every view, published numbers in the suite they belong to and
beside results of their own metric and conventions, fair summaries, and a leaderboard that imports
no training code.

- ``--metric NAME`` (repeatable, or ``all``) adds each family's tables in that metric; an unknown name
  is one line with the nearest known one; the HTML page switches between the same views.
- A reported row may state several metrics (``metrics: {accuracy: ..., auc: ...}``); each number shows
  beside results of that metric, in the task's ``reported_suite`` only (declared once per task).
- A result sits in a reported row's column only when the conventions the row states agree with the
  result's ``extra.conventions``; otherwise it is set apart under "Not the paper's protocol".
- Family averages over tasks run at different input sizes are flagged (§).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from board_records import cls_cases, seg_cases
from builders import make_record, tiny_task_dir, write_records
from cli_helpers import cli, the_line

from lvmbench.errors import UserError
from lvmbench.leaderboard import build, write
from lvmbench.metrics.bootstrap import weighted_metric
from lvmbench.tasks import TASKS, parse_task_file

REPORTED = """\
reported_suite: {suite}
reported:
  - {{encoder: Paper A, protocol: knn, unit: fraction, metrics: {{accuracy: 0.815, auc: {{value: 0.9, std: 0.01}}}}, source: "a plugin paper, Table 1"}}
"""


def table(text: str, after: str) -> dict[str, list[str]]:
    """First markdown table after the line starting with ``after``: first cell -> cells."""
    lines = text.split(after, 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| "))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("| "):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plugin task ``derm_cls`` in suite derm-extra (its own settings) with a smoke profile."""

    def make(suite: str = "derm-extra", extra: str = "") -> None:
        folder = tiny_task_dir(tmp_path / "tasks", "derm_cls", "derm")
        yml = folder / "derm_cls" / "task.yaml"
        text = yml.read_text(encoding="utf-8").replace("suites: []", "suites: [derm-extra]\nprofiles: {smoke: {preprocess: {size: 8}}}")
        yml.write_text(text + REPORTED.format(suite=suite) + extra, encoding="utf-8")
        monkeypatch.setenv("LVMBENCH_TASK_PATH", str(folder))
        TASKS.reset()

    yield make
    TASKS.reset()


def _cls(acc: float, seed: int, suite: str, encoder: str = "zeta", task: str = "derm_cls", protocol: str = "knn"):
    rec = make_record(cls_cases(acc, np.random.default_rng(seed)), "accuracy", encoder=encoder, sha=encoder[0] * 64, task=task, protocol=protocol, suite=suite)
    cases = [c.model_dump() for c in rec.per_case]
    rec.metrics["auc"] = float(weighted_metric("auc", cases, np.ones((1, len(cases))))[0][0])
    return rec


def test_a_row_with_several_metrics_shows_each_beside_results_of_that_metric(plugin, tmp_path):
    plugin()
    write_records(tmp_path / "r", [_cls(0.8, 1, "derm-extra"), _cls(0.8, 2, "smoke")])
    text = build(tmp_path / "r", warn=lambda s: None, n_boot=200, metrics=["auc"])
    derm = text.split("## derm-extra", 1)[1]
    acc = table(derm, "### Classification")
    assert acc["Paper A (reported)"][2] == "81.50", "accuracy beside accuracy"
    auc = table(derm, "#### Classification — derm-extra, in auc")
    assert auc["Paper A (reported)"][2] == "90.00 ± 1.00", "the same row's AUC beside the results' AUC"
    zeta = next(r for r in auc.values() if r[0].startswith("zeta"))
    assert re.fullmatch(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] \(n=1\)", zeta[2]), "measured AUC, with its own CI"
    smoke = text.split("## Smoke", 1)[1]
    assert "(reported)" not in smoke, "the rows belong to the suite whose budget they were measured under"


def test_the_reported_suite_is_declared_once_per_task(plugin, tmp_path):
    plugin(suite="smoke")
    write_records(tmp_path / "r", [_cls(0.8, 1, "derm-extra"), _cls(0.8, 2, "smoke")])
    text = build(tmp_path / "r", warn=lambda s: None, n_boot=200)
    assert "(reported)" in text.split("## Smoke", 1)[1] and "(reported)" not in text.split("## derm-extra", 1)[1].split("## Smoke")[0]
    yml = tmp_path / "tasks" / "derm_cls" / "task.yaml"
    yml.write_text(yml.read_text(encoding="utf-8").replace("reported_suite: smoke", "reported_suite: lvmmed"), encoding="utf-8")
    with pytest.raises(UserError, match="reported_suite 'lvmmed' is not one of the task's suites or profiles"):
        parse_task_file(yml)
    yml.write_text(yml.read_text(encoding="utf-8").replace("reported_suite: lvmmed", "reported_suite: derm-extra").replace("{smoke: {preprocess: {size: 8}}}", "{smoke: {reported_suite: smoke}}"), encoding="utf-8")
    with pytest.raises(UserError, match="declared once per task"):
        parse_task_file(yml)


def test_an_unknown_metric_is_one_line_with_the_nearest(plugin, tmp_path, monkeypatch, capsys):
    plugin()
    write_records(tmp_path / "r", [_cls(0.8, 1, "derm-extra")])
    code, _, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb.md"), "--metric", "acc", "--n-boot", "200")
    line = the_line(err, "--metric 'acc'")
    assert code == 2 and "did you mean 'accuracy'?" in line and "--metric all" in line
    assert not (tmp_path / "lb.md").exists()
    code, _, _ = cli(monkeypatch, capsys, "leaderboard", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb.md"), "--metric", "all", "--n-boot", "200")
    text = (tmp_path / "lb.md").read_text(encoding="utf-8")
    assert code == 0 and "in accuracy" in text and "in auc" in text


def _prompt(encoder: str, conventions: dict | None, level: float, protocol: str = "seg2d-prompt"):
    rec = make_record(seg_cases(level, np.random.default_rng(len(encoder))), "dice", encoder=encoder, sha=encoder[0] * 64, task="kvasir_seg",
                      protocol=protocol, suite="lvmmed", family="segmentation")
    if conventions is not None:
        rec.extra["conventions"] = conventions
    return rec


def test_results_pair_with_reported_rows_only_when_the_conventions_agree(tmp_path):
    recs = [
        _prompt("paperlike", {"prompt_preset": "lvmmed", "empty_policy": "random-box,empty=1"}, 0.8),
        _prompt("tightbox", {"prompt_preset": "tight", "empty_policy": "skip"}, 0.85),
        _prompt("silent", None, 0.7),
        _prompt("tightbox", {"prompt_preset": "tight"}, 0.75, protocol="seg2d"),  # no convention stated by seg2d's rows
    ]
    write_records(tmp_path / "r", recs)
    site = tmp_path / "site"
    text = write(tmp_path / "r", tmp_path / "lb.md", warn=lambda s: None, n_boot=200, html=site)
    seg = text.split("### 2D segmentation", 1)[1].split("\n### ", 1)[0]
    head = next(ln for ln in seg.splitlines() if ln.startswith("| encoder"))
    k = [c.strip() for c in head.strip().strip("|").split("|")].index("kvasir_seg")
    rows = {(r[0], r[1]): r[k] for r in _all_rows(seg.split("Not the paper's protocol")[0])}
    assert re.match(r"\d+\.\d\d \[", rows[("paperlike @pppppppppppp", "seg2d-prompt")]), "agrees: in the column of the paper's prompt rows"
    assert rows[("LVM-Med ViT-B (SAM's ViT, prompt) (reported)", "seg2d-prompt")] == "90.09 ± 0.14"
    assert rows[("tightbox @tttttttttttt", "seg2d-prompt")] == "↓" and rows[("silent @ssssssssssss", "seg2d-prompt")] == "↓"
    assert re.match(r"\d+\.\d\d \[", rows[("tightbox @tttttttttttt", "seg2d")]), "seg2d's rows state no convention"
    apart = seg.split("Not the paper's protocol", 1)[1]
    assert "- tightbox @tttttttttttt on kvasir_seg / seg2d-prompt: empty_policy skip (reported: random-box,empty=1); prompt_preset tight (reported: lvmmed)." in apart
    assert "- silent @ssssssssssss on kvasir_seg / seg2d-prompt: empty_policy not stated (reported: random-box,empty=1); prompt_preset not stated (reported: lvmmed)." in apart
    assert "paperlike" not in apart
    assert "**" not in seg, "results under different conventions are never compared (bold): each stands alone here"
    data = json.loads(re.search(r'<script id="lb-data" type="application/json">(.*?)</script>', (site / "index.html").read_text(encoding="utf-8"), re.S).group(1))
    fam = next(f for f in data["suites"][0]["views"][0]["families"] if f["key"] == "2D seg")
    assert any(t.get("apart") for t in fam["tables"]), "the page sets them apart too"
    cells = [c for t in fam["tables"] if not t.get("apart") for r in t["rows"] for c in r["cells"] if c and c.get("moved")]
    assert len(cells) == 2 and "prompt_preset" in cells[0]["moved"]


def _all_rows(section: str) -> list[list[str]]:
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| encoder")]


def test_a_family_average_over_tasks_run_at_different_sizes_is_flagged(tmp_path):
    def seg(task: str, size: int, enc: str):
        rec = make_record(seg_cases(0.7, np.random.default_rng(3)), "dice", encoder=enc, sha=enc[0] * 64, task=task, protocol="seg2d", family="segmentation")
        rec.hyperparameters["encoder_input_size"] = [[size, size]]
        return rec

    from board_records import SEG2D

    write_records(tmp_path / "mixed", [seg(t, 64 if i == 0 else 32, "zeta") for i, t in enumerate(SEG2D)])
    text = build(tmp_path / "mixed", warn=lambda s: None, n_boot=200)
    summary = table(text, "## Smoke")
    assert summary["zeta @zzzzzzzzzzzz"][3].endswith("§1")
    assert f"§1 The 2D seg average mixes input sizes 32 px ({', '.join(SEG2D[1:])}); 64 px ({SEG2D[0]})" in text
    write_records(tmp_path / "alike", [seg(t, 32, "zeta") for t in SEG2D])
    assert "§1" not in build(tmp_path / "alike", warn=lambda s: None, n_boot=200)


def test_the_leaderboard_imports_no_training_code(tmp_path):
    """Reading results needs neither torch nor the protocols (they made `leaderboard` take 11 s of
    CPU); the paper's rows (lvmmed) and every metric view included."""
    recs = [_prompt("paperlike", {"prompt_preset": "lvmmed"}, 0.8), _cls(0.8, 1, "lvmmed", task="brain_tumor_linear", protocol="linear")]
    write_records(tmp_path / "r", recs)
    code = (
        "import sys; from pathlib import Path; from lvmbench.leaderboard import write; "
        f"write(Path({str(tmp_path / 'r')!r}), Path({str(tmp_path / 'lb.md')!r}), warn=lambda s: None, n_boot=200, metrics=['all']); "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('lvmbench.protocols', 'lvmbench.runner', 'lvmbench.encoders'))); "
        "print(bad); assert not bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(reported)" in (tmp_path / "lb.md").read_text(encoding="utf-8")


def test_a_reported_row_states_one_value_or_a_metrics_mapping():
    from pydantic import ValidationError

    from lvmbench.spec import ReportedRow

    row = ReportedRow(encoder="x", protocol="knn", unit="fraction", metrics={"auc": 0.901, "accuracy": {"value": 0.863, "std": 0.01}}, source="s")
    assert row.values("accuracy") == [("auc", pytest.approx(90.1), None), ("accuracy", pytest.approx(86.3), pytest.approx(1.0))]
    assert ReportedRow(encoder="x", protocol="knn", value=76.8, source="s").values("accuracy") == [("accuracy", 76.8, None)]
    for bad in ({"value": 0.5, "metrics": {"auc": 0.5}}, {}, {"metrics": {"auc": 0.5}, "metric": "auc"}, {"metrics": {"auc": 90.1}, "unit": "fraction"}):
        with pytest.raises(ValidationError):
            ReportedRow(encoder="x", protocol="knn", source="s", **{"unit": "fraction", **bad})
