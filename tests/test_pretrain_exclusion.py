"""``--exclude-test-of``: test images leave the pretraining data (by name, content, array pixels), the
run records what it dropped, and the leakage audit then finds nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lvmbench.data.task_data import load_task_data
from lvmbench.pretrain.data import scan
from lvmbench.pretrain.exclusion import (
    default_suites,
    exclude_test_images,
    filter_manifest,
    pixel_hash,
)
from lvmbench.pretrain.trainer import train
from lvmbench.tasks import get_task
from pretrain_helpers import config

pytestmark = pytest.mark.usefixtures("one_thread")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def mixed(synth_root, tmp_path):
    """Brain-tumour folders (Training + Testing), the RetinaMNIST .npz (train/val/test rows), and a
    folder of renamed copies: one test image (content match) and one training image (kept)."""
    copies = tmp_path / "copies"
    copies.mkdir()
    tumour = load_task_data(get_task("brain_tumor_linear").for_suite("smoke"), synth_root, suite="smoke")
    shutil.copy(tumour.root / tumour.split.test[0].image, copies / "renamed_test.jpg")
    shutil.copy(tumour.root / tumour.split.train[0].image, copies / "renamed_train.jpg")
    return [str(synth_root / "BrainTumor"), str(synth_root / "medmnist"), str(copies)], tumour


def test_drops_test_files_by_name_and_content_and_npz_rows_by_pixels(mixed, synth_root):
    sources, tumour = mixed
    items, manifest = scan(sources)
    ex = exclude_test_images(items, ["smoke"], synth_root, log=lambda s: None)
    kept = {(it.path, it.member, it.frame) for it in ex.kept}
    test_files = {str(tumour.root / c.image) for c in tumour.split.test}
    train_files = {str(tumour.root / c.image) for c in tumour.split.train + tumour.split.val}
    assert not test_files & {p for p, _, _ in kept}
    assert train_files <= {p for p, _, _ in kept}
    by_path = {d["path"]: d for d in ex.dropped}
    assert by_path[sources[2] + "/renamed_test.jpg"]["match"] == "content"
    assert (sources[2] + "/renamed_train.jpg", None, 0) in kept
    assert all(by_path[p]["match"] == "name" for p in test_files)
    retina = load_task_data(get_task("retinamnist_linear").for_suite("smoke"), synth_root, suite="smoke")
    test_pixels = {pixel_hash(retina.reader.load_image(c)) for c in retina.split.test}
    rows = [it for it in items if it.kind == "npz"]
    arrays = dict(np.load(rows[0].path))
    kept_rows = [it for it in rows if (it.path, it.member, it.frame) in kept]
    assert {it.member for it in kept_rows} == {"train_images", "val_images"}  # the synthetic copy has no duplicates across splits
    assert len(rows) - len(kept_rows) == len(retina.split.test)
    assert not test_pixels & {pixel_hash(arrays[it.member][it.frame]) for it in kept_rows}
    assert ex.summary()["dropped_images"] == len(items) - len(ex.kept)
    # the manifest of what is kept: no test file, the npz test array gone, the others whole
    kept_manifest = filter_manifest(manifest, ex.kept)
    assert not test_files & {e["path"] for e in kept_manifest}
    assert {e["member"] for e in kept_manifest if e.get("member")} == {"train_images", "val_images"}


def test_pretrain_records_the_exclusion_and_the_audit_finds_no_leak(mixed, synth_root, tmp_path):
    from lvmbench.cli import app

    sources, _ = mixed
    runner = CliRunner()
    leaks = {}
    for name, suites in (("clean", ["smoke"]), ("dirty", [])):
        cfg = config(sources[0], tmp_path / name, steps=1, batch_size=16, exclude_test_of=suites, exclude_data_root=str(synth_root))
        cfg.data = sources
        train(cfg)
        meta = json.loads((tmp_path / name / "pretrain.json").read_text(encoding="utf-8"))
        res = runner.invoke(app, ["audit", "--pretrain-manifest", str(tmp_path / name / "pretrain.json"), "--suite", "smoke",
                                  "--data-root", str(synth_root), "--results", str(tmp_path / f"r-{name}"), "--tasks", "brain_tumor_linear,retinamnist_linear"])
        assert res.exit_code == 0, res.output
        report = json.loads(next((tmp_path / f"r-{name}" / "_audit" / "smoke").glob("*.json")).read_text(encoding="utf-8"))
        leaks[name] = {t["task"]: t["affected_cases"] for t in report["tasks"]}
        if name == "clean":
            rec = meta["data"]["exclude_test_of"]
            assert rec["suites"] == ["smoke"] and rec["rule"] == "--exclude-test-of"
            assert rec["dropped_images"] == sum(d["frames"] for d in rec["dropped"]) > 0
            assert set(rec["by_match"]) == {"name", "content", "pixels"}
            assert meta["data"]["num_images"] == sum(e["samples"] for e in meta["data"]["manifest"])
    assert leaks["clean"] == {"brain_tumor_linear": 0, "retinamnist_linear": 0}
    assert leaks["dirty"]["brain_tumor_linear"] > 0  # the audit does see test images when they are kept


def test_default_rule_follows_the_suites_data_roots(tmp_path, monkeypatch):
    root = tmp_path / "lvmmed-data"
    (root / "ISIC2018").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("LVMBENCH_DATA", str(root))
    assert "lvmmed" in default_suites([str(root / "ISIC2018")])
    assert "lvmmed" in default_suites([str(tmp_path)])  # a folder holding the data root
    assert default_suites([str(tmp_path / "elsewhere")]) == []
    monkeypatch.delenv("LVMBENCH_DATA")
    if (SHARED_DATA / "drive").is_dir():
        assert default_suites([str(SHARED_DATA / "drive")]) == ["shared-data"]


def test_unknown_suite_is_one_line(tmp_path):
    from lvmbench.errors import UserError

    images = tmp_path / "im"
    from pretrain_helpers import write_images

    write_images(images, 16)
    with pytest.raises(UserError, match="no suite 'shared-dta'; did you mean 'shared-data'"):
        train(config(images, tmp_path / "o", steps=1, exclude_test_of=["shared-dta"]))
