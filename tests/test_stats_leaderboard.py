"""Leaderboard statistics on controlled records: CIs in cells, ties in bold, normalised score,
label-efficiency curves with AULC and a byte-identical PNG, `lvmbench compare` verdicts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from builders import cls_records, make_record, write_records

from lvmbench.compare import compare, format_report
from lvmbench.errors import UserError
from lvmbench.leaderboard import build, write
from lvmbench.stats import aulc

N = 150
GROUPS = [f"p{i // 3:03d}" for i in range(N)]  # 3 images per patient


def _probs(labels: np.ndarray, acc: float, difficulty: np.ndarray) -> np.ndarray:
    """Right on the cases easier than ``acc``: encoders share the case difficulties (as real
    encoders share hard cases), so close accuracies differ on few cases and pair as ties."""
    k = 4
    pred = np.where(difficulty < acc, labels, (labels + 1) % k)
    prob = np.full((len(labels), k), 0.1)
    prob[np.arange(len(labels)), pred] = 0.7
    return prob


def _records(acc_by_encoder: dict[tuple[str, str], float], *, seeds=(0, 1), fractions=(1.0,), tasks=("brain_tumor_linear", "fgadr_linear")):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, N)
    difficulty = {(t, s, f): rng.random(N) for t in tasks for s in seeds for f in fractions}
    out = []
    for (enc, sha), acc in acc_by_encoder.items():
        for task in tasks:
            for seed in seeds:
                for frac in fractions:
                    a = acc * (0.6 + 0.4 * frac ** 0.25)  # fewer labels, lower accuracy
                    probs = _probs(labels, a, difficulty[(task, seed, frac)])
                    out.append(make_record(cls_records(labels, probs, GROUPS), "accuracy", encoder=enc, sha=sha, task=task, seed=seed, fraction=frac))
    return out


def _rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows of ``text`` by their first cell (header and rule lines left out)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|--"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out.setdefault(cells[0] if "/" not in cells[0] else f"{cells[0]} | {cells[1]}", cells)
    return out


ENCODERS = {
    ("strong", "a" * 64): 0.90,
    ("twin", "b" * 64): 0.895,  # within noise of "strong": a tie
    ("weak", "c" * 64): 0.45,
    ("strong", "random-init"): 0.30,
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb") / "results"
    write_records(root, _records(ENCODERS, fractions=(0.01, 0.1, 1.0)))
    return root


def _row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {label}"))


def test_cells_have_cis_and_ties_are_bold(tree):
    text = build(tree, n_boot=400)
    main = text.split("### Classification", 1)[1].split("###", 1)[0]  # the family table
    strong, twin, weak = _row(main, "strong @aaaa"), _row(main, "twin @bbbb"), _row(main, "weak @cccc")
    cell = re.compile(r"(\*\*)?(\d+\.\d\d)(\*\*)? ± \d+\.\d\d \[(\d+\.\d\d), (\d+\.\d\d)\] \(n=2\)")
    for row in (strong, twin, weak):
        assert len(cell.findall(row)) == 2, row
    for bold, mean, _, lo, hi in cell.findall(strong) + cell.findall(weak):
        assert float(lo) <= float(hi)
    assert all(m[0] == "**" for m in cell.findall(strong) + cell.findall(twin)), "best and its statistical twin are bold"
    assert not any(m[0] for m in cell.findall(weak)), "a clearly worse encoder is not"
    assert "(reported)" not in text, "reported rows belong to the lvmmed suite only"


def test_leaderboard_and_figure_are_byte_identical(tree, tmp_path):
    out1, out2 = tmp_path / "a" / "lb.md", tmp_path / "b" / "lb.md"
    t1 = write(tree, out1, n_boot=300, reference="strong@aaaa")
    t2 = write(tree, out2, n_boot=300, reference="strong@aaaa")
    assert t1 == t2 == out1.read_text(encoding="utf-8")
    png1, png2 = out1.parent / "lb-smoke-label-efficiency.png", out2.parent / "lb-smoke-label-efficiency.png"
    assert png1.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png1.read_bytes() == png2.read_bytes()
    assert "](lb-smoke-label-efficiency.png)" in t1


def test_label_efficiency_table_uses_the_aulc_formula(tree):
    text = build(tree, n_boot=200)
    sec = text.split("### Label efficiency", 1)[1]
    rows = _rows(sec)
    aulcs = []
    for task in ("brain_tumor_linear", "fgadr_linear"):
        cells = rows[f"{task}/linear | weak @cccccccccccc"]
        assert cells[-1] == "0.01, 0.1, 1"
        means = [float(c.split(" ± ")[0]) / 100 for c in cells[2:5]]
        assert means[0] < means[2], "fewer labels, lower accuracy"
        assert float(cells[5]) == pytest.approx(100 * aulc([0.01, 0.1, 1.0], means), abs=0.011)
        aulcs.append(float(cells[5]))
    summary = rows["weak @cccccccccccc"]
    assert float(summary[1]) == pytest.approx(np.mean(aulcs), abs=0.011) and summary[2] == "2/2"


def test_normalised_score_between_anchors(tree):
    text = build(tree, n_boot=200, reference="strong@aaaa")
    sec = text.split("### Normalised score", 1)[1].split("###", 1)[0]
    score = {k: float(v[1]) for k, v in _rows(sec).items() if k != "encoder"}
    assert score["strong @aaaaaaaaaaaa"] == pytest.approx(1.0)
    assert score["strong (random-init)"] == pytest.approx(0.0)
    assert 0.0 < score["weak @cccccccccccc"] < 0.6 < score["twin @bbbbbbbbbbbb"]
    assert "Skipped" not in sec
    # without a random-init of the reference's architecture, the section says what is missing
    text = build(tree, n_boot=200, reference="twin")
    assert "no random-init anchor ('twin (random-init)')" in text


def test_compare_says_which_differences_are_real(tree):
    from lvmbench.compare import load_records

    records, bad = load_records(tree)
    assert bad == 0
    suite, ka, kb, rows = compare(records, "strong@aaaa", "weak", n_boot=500)
    assert suite == "smoke" and {r.verdict for r in rows} == {"A better"}
    assert all(r.p_holm >= r.paired.p for r in rows)
    _, _, _, rows = compare(records, "strong@aaaa", "twin", n_boot=500)
    assert {r.verdict for r in rows} == {"no significant difference"}
    report = format_report(suite, ka, kb, rows, 0.05, 1.0)
    assert "Holm over 2 task(s)" in report and "no significant difference on 2 task(s)" in report
    with pytest.raises(UserError, match="ambiguous"):
        compare(records, "strong", "weak")
    with pytest.raises(UserError, match="no results for encoder 'nope'"):
        compare(records, "nope", "weak")
