"""Bad inputs that used to give a wrong number with exit 0, at the cache keys and split lists: a file
changed in place under a restored mtime, a case listed twice, a training split that differs under BN
adaptation. Each is seen (a new key, a fresh decode) or refused with one line naming the file.

Every input is generated here; nothing reads ../shared/data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from reader_inputs import SEG_TASK, seg_folder, task

from lvmbench.data.cache import ArrayCache, file_stamp
from lvmbench.data.cases import Case, make_reader
from lvmbench.data.datasets import ImageDataset
from lvmbench.data.splits import Split, make_split, read_split_file, write_split_file
from lvmbench.data.task_data import load_task_data
from lvmbench.data.verify import preflight
from lvmbench.errors import DataError
from lvmbench.spec import RunOptions, SplitSpec, TaskSpec

# ---------------------------------------------------------------- content stamps


def _rewrite_same_size_same_mtime(path: Path, blob: bytes) -> None:
    st = path.stat()
    assert len(blob) == st.st_size
    path.write_bytes(blob)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what cp -p / rsync -t / tar do


def _same_size_other_image(path: Path, seed: int) -> bytes:
    """A different image whose encoding has exactly the size of ``path`` (uncompressed BMP)."""
    arr = np.asarray(Image.open(path))
    other = np.random.default_rng(seed).integers(0, 255, arr.shape).astype(np.uint8)
    tmp = path.with_suffix(".tmp.bmp")
    Image.fromarray(other).save(tmp)
    blob = tmp.read_bytes()
    tmp.unlink()
    return blob


def test_in_place_change_with_restored_mtime_invalidates_stamps_and_decoded_cache(tmp_path):
    root = tmp_path / "d" / "Training" / "a"
    root.mkdir(parents=True)
    f = root / "x.bmp"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f)
    (tmp_path / "d" / "Training" / "b").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "d" / "Training" / "b" / "y.bmp")
    reader = make_reader("class_folders", tmp_path / "d", {"splits": ["Training"], "classes": ["a", "b"]})
    cases = reader.cases()
    ds = ImageDataset(reader, cases, 8, 3, "nearest", ArrayCache(tmp_path / "cache"))
    before_stamp = file_stamp(f)
    assert ds.array(0).max() == 0
    _rewrite_same_size_same_mtime(f, _same_size_other_image(f, 1))
    assert file_stamp(f) != before_stamp
    fresh = ImageDataset(reader, cases, 8, 3, "nearest", ArrayCache(tmp_path / "cache"))
    assert fresh.array(0).max() > 0, "a stale decoded array was served"


def test_fingerprint_and_verified_store_see_in_place_changes(tmp_path):
    from lvmbench.data.fingerprint import data_fingerprint

    root = seg_folder(tmp_path / "data" / "seg")
    spec = task(tmp_path / "tasks", SEG_TASK, id="inplace", classes="[bg, fg]", dir="seg", group_by="case")
    data = load_task_data(spec, tmp_path / "data")
    fp = data_fingerprint(data)
    preflight(data, tmp_path / "cache", log=lambda s: None)
    mask = root / "masks" / "c03.png"
    blob = mask.read_bytes()
    _rewrite_same_size_same_mtime(mask, b"\0" * len(blob))  # damaged in place, same size and mtime
    data = load_task_data(spec, tmp_path / "data")
    assert data_fingerprint(data) != fp
    with pytest.raises(DataError, match="c03.png: unreadable"):
        preflight(data, tmp_path / "cache", log=lambda s: None)


def test_feature_key_sees_in_place_changes(tmp_path):
    ctx, cases = _feature_ctx(tmp_path)
    from lvmbench.protocols.features import feature_key

    key = feature_key(ctx, ctx.data.split.test, "eval")
    f = ctx.data.root / ctx.data.split.test[0].image
    _rewrite_same_size_same_mtime(f, _same_size_other_image(f, 2))
    assert feature_key(ctx, ctx.data.split.test, "eval") != key


# ---------------------------------------------------------------- duplicate ids in split lists


def _cases(n: int = 6) -> list[Case]:
    return [Case(id=f"c{i}", group=f"c{i}", image=f"images/c{i}.png", files=(f"images/c{i}.png",)) for i in range(n)]


def test_duplicate_id_in_a_split_file_is_refused(tmp_path):
    p = tmp_path / "split.json"
    p.write_text(json.dumps({"train": ["c0", "c1", "c0"], "val": ["c2"], "test": ["c3", "c4"]}), encoding="utf-8")
    with pytest.raises(DataError) as ei:
        read_split_file(p, _cases())
    assert str(ei.value).startswith(f"{p}:") and "'c0'" in str(ei.value) and "twice" in str(ei.value) and "fix:" in str(ei.value)
    with pytest.raises(DataError, match="'c0'.*twice"):  # the same file as a task's `source: file`
        make_split(_cases(), SplitSpec(source="file", file=str(p)))


def test_duplicate_in_written_and_imported_lists_is_refused(tmp_path):
    from lvmbench.data.split_import import import_lists, load_paper_lists

    cases = _cases()
    with pytest.raises(DataError, match="'c1'.*twice"):
        write_split_file(tmp_path / "s.json", Split([cases[0], cases[1], cases[1]], [], [cases[2]]), task="t", suite="s", origin="x", cases=cases)
    assert not (tmp_path / "s.json").exists()
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps({"train": ["c0.png", "c1.png", "c0.png"], "valid": ["c2.png"], "test": ["c3.png"]}), encoding="utf-8")
    with pytest.raises(DataError) as ei:
        import_lists(load_paper_lists(lists), cases)
    assert str(ei.value).startswith(f"{lists}:") and "c0.png" in str(ei.value) and "twice" in str(ei.value)


# ---------------------------------------------------------------- feature keys under BN adaptation


def _feature_ctx(tmp_path: Path, train_ids: tuple[int, ...] = (0, 1, 2, 3)):
    d = tmp_path / "fd"
    d.mkdir(exist_ok=True)
    for i in range(8):
        if not (d / f"c{i}.bmp").exists():
            Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(d / f"c{i}.bmp")
    cases = [Case(id=f"c{i}", group=f"c{i}", image=f"c{i}.bmp", label=i % 2, files=(f"c{i}.bmp",)) for i in range(8)]
    split = Split([cases[i] for i in train_ids], [cases[5]], [cases[6], cases[7]])
    spec = TaskSpec.model_validate({"id": "t", "title": "t", "family": "classification", "modality": "x", "classes": ["a", "b"], "data": {"reader": "class_folders", "dir": "d"}, "protocols": {"linear": {}}, "primary_metric": "accuracy"})
    ctx = SimpleNamespace(
        encoder_identity=SimpleNamespace(name="resnet18", weights_sha256="ab" * 32),
        task=spec,
        data=SimpleNamespace(root=d, split=split, reader=SimpleNamespace(options={})),
        run=RunOptions(),
        seed=0,
        settings=SimpleNamespace(model_dump=lambda **kw: {}),  # the protocol's resolved settings
    )
    return ctx, cases


def test_feature_key_includes_the_training_split_under_bn_adapt(tmp_path):
    from lvmbench.protocols import features

    a, _ = _feature_ctx(tmp_path, (0, 1, 2, 3))
    b, _ = _feature_ctx(tmp_path, (0, 1, 2, 4))  # one training case differs; val/test identical
    for part in ("val", "test"):
        assert features.feature_key(a, a.data.split[part], "adapt") != features.feature_key(b, b.data.split[part], "adapt")
        assert features.feature_key(a, a.data.split[part], "eval") == features.feature_key(b, b.data.split[part], "eval")
    key = features.feature_key(a, a.data.split.val, "eval")
    old = features.EMBED_VERSION
    try:
        features.EMBED_VERSION = old + 1
        assert features.feature_key(a, a.data.split.val, "eval") != key
    finally:
        features.EMBED_VERSION = old
