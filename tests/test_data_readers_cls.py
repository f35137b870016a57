"""Classification readers (MedMNIST .npz, class folders, FGADR) on synthetic data and real samples."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import shared
from PIL import Image

from lvmbench.data.cases import make_reader
from lvmbench.errors import DataError

BRAIN = ["glioma", "meningioma", "no_tumor", "pituitary"]
ALIASES = {"glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "notumor": "no_tumor", "pituitary_tumor": "pituitary"}


def _npz(path: Path, labels_2d: bool = True, rgb: bool = True, n=(6, 2, 3), **extra) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        shape = (k, 28, 28, 3) if rgb else (k, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        lab = (np.arange(k) % 3).astype(np.uint8)
        arrays[f"{split}_labels"] = lab[:, None] if labels_2d else lab
    arrays.update(extra)
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize("labels_2d, rgb", [(True, True), (False, False)])
def test_medmnist_reads_both_label_shapes(tmp_path, labels_2d, rgb):
    _npz(tmp_path / "x.npz", labels_2d, rgb)
    r = make_reader("medmnist", tmp_path, {"file": "x.npz"})
    cases = r.cases()
    assert [c.meta["split"] for c in cases] == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    assert [c.label for c in cases[:6]] == [0, 1, 2, 0, 1, 2]
    img = r.load_image(cases[7])
    with np.load(tmp_path / "x.npz") as z:
        want = z["val_images"][1]
    assert img.shape == ((28, 28, 3) if rgb else (28, 28, 1)) and img.dtype == np.uint8
    assert np.array_equal(img.reshape(want.shape), want)
    assert r.check(cases[0]) == []


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"train_labels": np.zeros((6, 14), np.uint8)}, "multi-label"),
        ({"train_images": np.zeros((6, 28, 28, 28), np.uint8)}, "3D MedMNIST"),
        ({"train_labels": np.zeros(5, np.uint8)}, "6 images but 'train_labels' has 5"),
    ],
)
def test_medmnist_refuses_what_it_cannot_read(tmp_path, extra, needle):
    _npz(tmp_path / "x.npz", **extra)
    with pytest.raises(DataError, match=needle):
        make_reader("medmnist", tmp_path, {"file": "x.npz"}).cases()


def test_medmnist_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="bad.npz.*not a readable .npz"):
        make_reader("medmnist", tmp_path, {"file": "bad.npz"}).cases()
    with pytest.raises(DataError, match="MedMNIST file not found"):
        make_reader("medmnist", tmp_path, {"file": "missing.npz"}).cases()


def test_medmnist_checksum_mismatch_is_a_warning(tmp_path):
    _npz(tmp_path / "x.npz")
    r = make_reader("medmnist", tmp_path, {"file": "x.npz", "md5": "0" * 32})
    (issue,) = r.dataset_checks(r.cases())
    assert not issue.fatal and "differs from the official" in issue.problem


def test_medmnist_synthetic_is_learnable_layout(synth_root):
    r = make_reader("medmnist", synth_root / "medmnist", {"file": "retinamnist.npz"})
    cases = r.cases()
    by_split = Counter(c.meta["split"] for c in cases)
    assert by_split == {"train": 60, "val": 20, "test": 30}
    assert set(Counter(c.label for c in cases)) == {0, 1, 2, 3, 4}
    # grades differ visibly: mean brightness of the fundus falls as lesions grow
    means = [np.mean([r.load_image(c).mean() for c in cases if c.label == g]) for g in (0, 4)]
    assert means[0] > means[1] + 2


def test_medmnist_real_files():
    root = shared("medmnist")
    retina = make_reader("medmnist", root, {"file": "retinamnist.npz", "md5": "bd4c0672f1bba3e3a89f0e4e876791e4"})
    cases = retina.cases()
    assert Counter(c.meta["split"] for c in cases) == {"train": 1080, "val": 120, "test": 400}
    # class counts of the test split as listed in SOURCE.txt
    assert [Counter(c.label for c in cases if c.meta["split"] == "test")[g] for g in range(5)] == [174, 46, 92, 68, 20]
    assert retina.dataset_checks(cases) == []  # the official file
    assert retina.load_image(cases[0]).shape == (28, 28, 3)
    breast = make_reader("medmnist", root, {"file": "BreastMNIST.npz", "md5": "750601b1f35ba3300ea97c75c52ff8f6"})
    bcases = breast.cases()  # labels stored (N,) in this re-saved copy
    assert Counter((c.meta["split"], c.label) for c in bcases) == {("train", 0): 147, ("train", 1): 399, ("val", 0): 21, ("val", 1): 57, ("test", 0): 42, ("test", 1): 114}
    assert breast.load_image(bcases[0]).shape == (28, 28, 1)
    assert breast.dataset_checks(bcases)[0].fatal is False  # re-saved: checksum differs, reported


def test_class_folders_synthetic_and_real(synth_root):
    syn = make_reader("class_folders", synth_root / "BrainTumor", {"classes": BRAIN, "aliases": ALIASES})
    cases = syn.cases()
    assert Counter(c.meta["split"] for c in cases) == {"Training": 96, "Testing": 32}
    assert syn.load_image(cases[0]).shape[2] == 3

    real = make_reader("class_folders", shared("brain_tumor_mri_cls"), {"classes": BRAIN, "aliases": ALIASES, "splits": ["Testing"]})
    rc = real.cases()
    assert [Counter(c.label for c in rc)[i] for i in range(4)] == [300, 306, 405, 300]  # SOURCE.txt
    # greyscale (mode L) and RGB JPEGs both come out HxWx3
    shapes = {real.load_image(c).shape[2] for c in rc[::100]}
    assert shapes == {3}


def test_class_folders_unknown_folder_names_the_fix(tmp_path, synth_root):
    shutil.copytree(synth_root / "BrainTumor", tmp_path / "bt")
    (tmp_path / "bt" / "Testing" / "astrocytoma").mkdir()
    with pytest.raises(DataError, match="astrocytoma.*aliases"):
        make_reader("class_folders", tmp_path / "bt", {"classes": BRAIN, "aliases": ALIASES}).cases()


def test_group_identical_keeps_copies_together(tmp_path):
    d = tmp_path / "ds" / "a"
    d.mkdir(parents=True)
    (tmp_path / "ds" / "b").mkdir()
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(d / "x.png")
    shutil.copy(d / "x.png", tmp_path / "ds" / "b" / "x_copy.png")  # byte copy
    Image.fromarray(arr).save(d / "x_reencoded.png", compress_level=0)  # same pixels, other bytes
    Image.fromarray(255 - arr).save(d / "y.png")
    opts = {"splits": [], "classes": ["a", "b"]}
    plain = make_reader("class_folders", tmp_path / "ds", opts).cases()
    assert len({c.group for c in plain}) == 4
    by_bytes = {c.id: c.group for c in make_reader("class_folders", tmp_path / "ds", {**opts, "group_identical": True}).cases()}
    assert by_bytes["b/x_copy.png"] == by_bytes["a/x.png"] != by_bytes["a/x_reencoded.png"]
    by_pixels = {c.id: c.group for c in make_reader("class_folders", tmp_path / "ds", {**opts, "group_identical": "pixels"}).cases()}
    assert by_pixels["a/x_reencoded.png"] == by_pixels["a/x.png"] == by_pixels["b/x_copy.png"] != by_pixels["a/y.png"]


def test_fgadr_synthetic(synth_root):
    r = make_reader("fgadr", synth_root / "FGADR")
    cases = r.cases()
    assert len(cases) == 120 and Counter(c.label for c in cases) == {g: 24 for g in range(5)}
    assert r.dataset_checks(cases) == []
