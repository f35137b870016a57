"""The leaderboard's views on controlled records: the summary (mean rank, k/K, family averages over
complete families only), per-family tables with the paper's reported rows beside measured ones,
per-family plots linked from the markdown, the HTML page's data and links, and the CSV/Parquet
export (one row per unit, identity, metrics, CIs), all byte-identical for the same inputs."""

from __future__ import annotations

import html
import json
import re
import sys

import numpy as np
import pytest
from board_records import LEVELS, SEG2D, N, cls_cases, records, seg_cases  # noqa: F401
from builders import cls_records, make_record, write_records  # noqa: F401
from scipy.stats import rankdata

from lvmbench.leaderboard import build, write
from lvmbench.leaderboard.export import write_exports
from lvmbench.tasks import tasks_in_suite


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("views") / "results"
    write_records(root, records())
    return root


def table(text: str, after: str) -> dict[str, list[list[str]]]:
    """Rows (cells) of the first markdown table after the line starting with ``after``, by first cell."""
    lines = text.split(after, 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| "))
    rows: dict[str, list[list[str]]] = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("| "):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        rows.setdefault(cells[0], []).append(cells)
    return rows


def test_summary_mean_rank_completeness_and_family_averages(tree):
    text = build(tree, warn=lambda s: None, n_boot=200)
    recs = records()
    summary = {k: v[0] for k, v in table(text, "## Smoke").items()}
    assert list(summary) == ["zeta @cccccccccccc", "mid @bbbbbbbbbbbb", "alpha @aaaaaaaaaaaa"], "most tasks first, then best mean rank"
    # mean rank by brute force over the tasks every encoder ran (main protocol), ties averaged:
    # alpha ran 2 tasks, so all three are ranked on those 2 only, never alpha on its 2 and zeta on 6
    means = {}
    for r in recs:
        if r.unit.protocol in ("seg2d", "linear"):
            means.setdefault(r.unit.task_id, {}).setdefault(r.unit.encoder, []).append(r.primary)
    common = sorted(t for t in means if len(means[t]) == 3)
    assert common == sorted([SEG2D[0], "brain_tumor_linear"])
    ranks: dict[str, list[float]] = {}
    for t in common:
        encs = sorted(means[t])
        for e, rk in zip(encs, rankdata([-np.mean(means[t][e]) for e in encs])):
            ranks.setdefault(e, []).append(rk)
    for label, cells in summary.items():
        enc = label.split()[0]
        assert float(cells[1]) == pytest.approx(np.mean(ranks[enc]), abs=0.006)
        ran = sum(1 for t in means if enc in means[t])
        assert cells[2] == f"{ran}/{len(tasks_in_suite('smoke'))}"
    caption = next(ln for ln in text.split("## Smoke", 1)[1].splitlines() if ln.startswith("Mean rank"))
    assert "over the 2 task(s) every encoder here ran" in caption and "brain_tumor_linear" in caption
    head = next(ln for ln in text.split("## Smoke", 1)[1].splitlines() if ln.startswith("| encoder"))
    i2d = [c.strip() for c in head.strip().strip("|").split("|")].index("2D seg")
    want = 100 * np.mean([np.mean(means[t]["zeta"]) for t in SEG2D])
    assert float(summary["zeta @cccccccccccc"][i2d]) == pytest.approx(want, abs=0.006), "complete family: its average"
    assert summary["alpha @aaaaaaaaaaaa"][i2d] == f"1/{len(SEG2D)}", "partial family: k/K, no average"


def test_family_tables_have_tasks_as_columns_and_protocols_as_rows(tree):
    text = build(tree, warn=lambda s: None, n_boot=200)
    cls = table(text, "### Classification")
    assert [c[1] for c in cls["zeta @cccccccccccc"]] == ["linear", "knn"], "main protocol first, then its variants"
    assert all(re.fullmatch(r"(\*\*)?\d+\.\d\d(\*\*)? ± \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] \(n=2\)", c[2]) for c in cls["zeta @cccccccccccc"])
    seg = table(text, "### 2D segmentation")
    assert len(seg["zeta @cccccccccccc"][0]) == 2 + len(SEG2D) and seg["alpha @aaaaaaaaaaaa"][0][3] == "–"
    assert seg["zeta @cccccccccccc"][0][2].startswith("**"), "the clear best is bold"
    assert "(reported)" not in text, "the paper's rows belong to the lvmmed suite"
    assert "](leaderboard-smoke-2d-seg.png)" in text and "](leaderboard-smoke-cls.png)" in text


def test_reported_rows_stand_beside_measured_ones(tmp_path):
    write_records(tmp_path / "r", [r for r in records("lvmmed") if r.unit.task_id == "brain_tumor_linear"])
    text = build(tmp_path / "r", warn=lambda s: None, n_boot=200)
    cls = table(text, "### Classification")
    assert "zeta @cccccccccccc" in cls and "LVM-Med R50 (reported)" in cls, "one table holds both"
    lvm = {c[1]: c for c in cls["LVM-Med R50 (reported)"]}
    col = next(ln for ln in text.split("### Classification", 1)[1].splitlines() if ln.startswith("| encoder")).split("|")
    j = [c.strip() for c in col].index("brain_tumor_linear") - 1
    assert lvm["linear"][j] == "66.33 ± 0.31" and lvm["linear-mlp"][j] == "74.70 ± 0.84"  # tasks/brain_tumor_linear/task.yaml
    assert "paper Table 5" in text


def test_write_makes_linked_plots_html_and_exports_byte_identical(tree, tmp_path):
    outs = []
    for name in ("a", "b"):
        d = tmp_path / name
        md = write(tree, d / "lb.md", warn=lambda s: None, n_boot=200, html=d / "site", csv=d / "units.csv", parquet=d / "units.parquet", exporter=write_exports)
        outs.append((d, md))
    (da, ta), (db, tb) = outs
    assert ta == tb
    for png in re.findall(r"\]\((lb-[^)]+\.png)\)", ta):
        assert (da / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (da / png).read_bytes() == (db / png).read_bytes()
    assert (da / "units.csv").read_bytes() == (db / "units.csv").read_bytes()
    assert (da / "site" / "index.html").read_bytes() == (db / "site" / "index.html").read_bytes(), "same depth: same relative links"


def test_html_page_embeds_the_data_and_relative_links(tree, tmp_path):
    out = tmp_path / "pages" / "lb"
    write(tree, tmp_path / "lb.md", warn=lambda s: None, n_boot=200, html=out)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<script src" not in page and "<link" not in page and "http" not in page.split("<script id=")[0], "self-contained"
    blob = re.search(r'<script id="lb-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    data = json.loads(blob)
    assert data["results_as_given"] == tree.as_posix()
    (suite,) = data["suites"]
    assert suite["views"][0]["metric"] == "" and {v["metric"] for v in suite["views"][1:]} >= {"accuracy", "dice"}, "the metric switch"
    cls = next(f for f in suite["views"][0]["families"] if f["key"] == "Cls")
    row = next(r for r in cls["tables"][0]["rows"] if r["row"].startswith("zeta") and r["protocol"] == "linear")
    cell = row["cells"][0]
    assert cell["n"] == 2 and cell["lo"] <= cell["v"] <= cell["hi"] and [s["seed"] for s in cell["seeds"]] == [0, 1]
    for s in cell["seeds"]:
        target = (out / s["href"]).resolve()
        assert target.is_file() and json.loads(target.read_text(encoding="utf-8"))["unit"]["seed"] == s["seed"]


def test_html_escapes_names_that_could_close_the_script(tmp_path):
    rng = np.random.default_rng(1)
    bad = make_record(cls_cases(0.8, rng), "accuracy", encoder="x</script><img src=y onerror=alert(1)>", sha="d" * 64)
    write_records(tmp_path / "r", [bad])
    write(tmp_path / "r", tmp_path / "lb.md", warn=lambda s: None, n_boot=200, html=tmp_path / "site")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and "<img" not in page
    blob = re.search(r'<script id="lb-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert "x</script><img" in html.unescape(json.dumps(json.loads(blob), ensure_ascii=False))


def test_export_has_one_row_per_unit_with_identity_metrics_and_cis(tree, tmp_path):
    import pandas as pd

    md = write(tree, tmp_path / "lb.md", warn=lambda s: None, n_boot=200, csv=tmp_path / "u.csv", parquet=tmp_path / "u.parquet", exporter=write_exports)
    df = pd.read_csv(tmp_path / "u.csv")
    assert len(df) == len(records()) == len(list(tree.rglob("*.json")))
    for col in ("suite", "task", "family", "protocol", "encoder", "weights_sha256", "seed", "label_fraction", "current", "pool_key", "identity.split",
                "primary_metric", "primary", "ci_low", "ci_high", "cell_mean", "cell_ci_low", "cell_ci_high", "file", "metric.accuracy", "metric.dice"):  # fmt: skip
        assert col in df.columns, col
    assert (tree / df.loc[0, "file"]).is_file()
    one = df[(df.encoder == "zeta") & (df.task == "brain_tumor_linear") & (df.protocol_tag == "linear")]
    assert list(one.seed) == [0, 1] and one.cell_n.tolist() == [2, 2]
    cell = next(ln for ln in md.split("### Classification", 1)[1].splitlines() if ln.startswith("| zeta") and "| linear " in ln)
    lo, hi = map(float, re.search(r"\[(\d+\.\d\d), (\d+\.\d\d)\]", cell).groups())
    assert 100 * one.cell_ci_low.iloc[0] == pytest.approx(lo, abs=0.006) and 100 * one.cell_ci_high.iloc[0] == pytest.approx(hi, abs=0.006), "the leaderboard's CI"
    assert (one.ci_low <= one.primary).all() and (one.primary <= one.ci_high).all()
    pq = pd.read_parquet(tmp_path / "u.parquet")
    assert pq.shape == df.shape and list(pq.columns) == list(df.columns)


def test_parquet_without_pyarrow_is_one_line(tree, tmp_path, monkeypatch, capsys):
    from cli_helpers import cli, the_line

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    code, _, err = cli(monkeypatch, capsys, "leaderboard", "--results", str(tree), "--out", str(tmp_path / "lb.md"), "--parquet", str(tmp_path / "u.parquet"), "--n-boot", "200")
    assert code == 2 and 'pip install "lvmbench[parquet]"' in the_line(err, "--parquet needs pyarrow")
    assert not (tmp_path / "lb.md").exists(), "checked before any work"


REPORTED_TASK = """\
reported:
  - {encoder: Paper A, protocol: knn, value: 0.815, std: 0.021, unit: fraction, source: "a plugin paper, Table 1"}
  - {encoder: Paper B, protocol: knn, value: 77.5, source: "a plugin paper, Table 2"}
  - {encoder: Paper C, protocol: knn, value: 0.9, unit: fraction, metric: auc, source: "other metric: not in accuracy cells"}
"""


def test_reported_rows_in_every_suite_of_their_task_as_percent(tmp_path, monkeypatch):
    """A plugin task's published numbers stand in its own suite, x100 whether written as fractions
    or percents; the LVM-Med paper's rows stay out of the smoke and shared-data suites."""
    from builders import tiny_task_dir

    from lvmbench.tasks import TASKS

    folder = tiny_task_dir(tmp_path / "tasks", "derm_cls", "derm")
    yaml = folder / "derm_cls" / "task.yaml"
    yaml.write_text(yaml.read_text(encoding="utf-8").replace("suites: []", "suites: [derm-extra]") + REPORTED_TASK, encoding="utf-8")
    monkeypatch.setenv("LVMBENCH_TASK_PATH", str(folder))
    TASKS.reset()
    try:
        rng = np.random.default_rng(3)
        recs = [make_record(cls_cases(0.8, rng), "accuracy", task="derm_cls", protocol="knn", suite="derm-extra")]
        recs += [make_record(cls_cases(0.8, rng), "accuracy", task="brain_tumor_linear", protocol="linear", suite=s) for s in ("smoke", "shared-data")]
        write_records(tmp_path / "r", recs)
        text = build(tmp_path / "r", warn=lambda s: None, n_boot=200)
    finally:
        TASKS.reset()
    derm = text.split("## derm-extra", 1)[1]
    cls = table(derm, "### Classification")
    assert cls["Paper A (reported)"][0][2] == "81.50 ± 2.10", "unit: fraction shown x100"
    assert cls["Paper B (reported)"][0][2] == "77.50", "unit: percent as written"
    assert "Paper C" not in text, "a row in another metric is not put in the primary metric's cells"
    summary = table(text, "## derm-extra")
    assert summary["Paper A (reported)"][0][3] == "81.50", "and in the summary's family average"
    for suite in ("## Smoke", "## Shared-data"):
        section = text.split(suite, 1)[1].split("\n## ", 1)[0]
        assert "resnet18 (random-init)" in section and "(reported)" not in section, "the LVM-Med paper's rows: lvmmed suite only"


def test_links_and_file_column_follow_nested_results_trees(tmp_path):
    """Several results trees under one folder (results/smoke/..., results/shared/shared-data/...):
    each cell links to the file it was read from, and the export's ``file`` column names it."""
    import pandas as pd

    rng = np.random.default_rng(2)
    write_records(tmp_path / "results" / "shared", [make_record(cls_cases(0.8, rng), "accuracy", suite="shared-data")])
    write_records(tmp_path / "results", [make_record(cls_cases(0.7, rng), "accuracy", suite="smoke")])
    audit = {"kind": "leakage-audit", "encoder": None, "manifest": {"name": "m.txt", "entries": 9},
             "tasks": [{"task": "brain_tumor_linear", "affected_cases": 3, "test_cases": 40, "counts": {"name": 3}}]}
    (tmp_path / "results" / "shared" / "_audit" / "shared-data").mkdir(parents=True)
    (tmp_path / "results" / "shared" / "_audit" / "shared-data" / "a.json").write_text(json.dumps(audit), encoding="utf-8")
    site, warnings = tmp_path / "site", []
    md = write(tmp_path / "results", tmp_path / "lb.md", warn=warnings.append, n_boot=200, html=site, csv=tmp_path / "u.csv", exporter=write_exports)
    assert warnings == [], "a nested tree's audit report is not a result"
    shared = md.split("## Shared-data", 1)[1].split("\n## ", 1)[0]
    assert "| brain_tumor_linear†1" in shared and "3/40 test cases of brain_tumor_linear" in shared, "and its footnote is shown"
    blob = re.search(r'<script id="lb-data" type="application/json">(.*?)</script>', (site / "index.html").read_text(encoding="utf-8"), re.S).group(1)
    hrefs = [s["href"] for suite in json.loads(blob)["suites"] for f in suite["views"][0]["families"] for t in f["tables"] for r in t["rows"] for c in r["cells"] if c for s in c["seeds"]]
    assert len(hrefs) == 2 and any("/shared/shared-data/" in h for h in hrefs)
    assert all((site / h).resolve().is_file() for h in hrefs)
    df = pd.read_csv(tmp_path / "u.csv")
    assert sorted(df.file) == ["shared/shared-data/resnet18/random-init/brain_tumor_linear/linear-s0.json", "smoke/resnet18/random-init/brain_tumor_linear/linear-s0.json"]


def test_prompt_rows_stand_in_prompt_columns_under_the_prompt_metric(tmp_path):
    """3D prompt protocols rank by iou3d_prompt / dice_prompt_avg, not Table 3's iou3d or dice_avg:
    the paper's prompt rows show under that name, prostate_ood's per-site rows never show."""
    rng = np.random.default_rng(0)
    recs = [
        make_record(seg_cases(0.6, rng), "iou3d", encoder="zeta", sha="c" * 64, task="brats2018", protocol="seg3d", suite="lvmmed", family="segmentation"),
        make_record(seg_cases(0.6, rng), "dice_avg", encoder="zeta", sha="c" * 64, task="prostate_ood", protocol="seg3d", suite="lvmmed", family="segmentation"),
    ]
    write_records(tmp_path / "r", recs)
    text = build(tmp_path / "r", warn=lambda s: None, n_boot=200)
    assert "seg3d-prompt, seg3d-prompt-zeroshot: iou3d_prompt" in text and "seg3d-prompt, seg3d-prompt-zeroshot: dice_prompt_avg" in text
    assert not re.search(r"seg3d-prompt(, seg3d-prompt-zeroshot)?: (iou3d|dice_avg)[.;]", text)
    assert "not comparable with the volumetric `iou3d`/`dice`" in text
    rows = {r[1]: r for r in table(text, "### 3D segmentation")["LVM-Med ViT-B (SAM's ViT, prompt) (reported)"]}
    assert "85.76 ± 0.07" in rows["seg3d-prompt"], "brats2018's Table 11 prompt row"
    ood = {r[1]: r for r in table(text, "### Out-of-distribution")["LVM-Med ViT-B (SAM's ViT, prompt) (reported)"]}
    assert "92.73" in ood["seg3d-prompt"] and not any("95.75" in c for r in ood.values() for c in r), "the BMC-only row is not the average"
