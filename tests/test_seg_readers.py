"""Segmentation readers on the synthetic raw layouts, on the real samples in ../shared/data, and on
broken inputs (unpaired files, truncated files, size mismatches, labels out of range)."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from conftest import shared
from PIL import Image
from scipy import ndimage

from lvmbench.data.cases import make_reader
from lvmbench.data.synth.volumes import save_nifti
from lvmbench.data.task_data import load_task_data
from lvmbench.errors import DataError
from lvmbench.tasks import get_task

SEG_TASKS = ["isic2018", "jsrt", "kvasir_seg", "drive", "buid", "drive_chase_ood", "brats2018", "mmwhs_ct", "mmwhs_mri", "prostate_ood"]


@pytest.mark.parametrize("task_id", SEG_TASKS)
def test_reader_on_synthetic_layout(task_id, synth_root):
    spec = get_task(task_id).for_suite("smoke")
    data = load_task_data(spec, synth_root)
    assert len(data.cases) == spec.data.expected["cases"]
    assert data.reader.dataset_checks(data.cases) == []
    for case in data.cases[:2]:
        assert data.reader.check(case) == []
        img, tgt = data.reader.load_image(case), data.reader.load_target(case)
        assert tgt.dtype == np.int64 and tgt.shape == img.shape[: tgt.ndim]
        assert 0 <= tgt.min() and tgt.max() < spec.num_classes
        assert tgt.max() > 0 or spec.dims == "3d-slicewise"
    if spec.dims == "3d-slicewise":
        meta = data.cases[0].meta
        assert len(meta["spacing"]) == 3 and meta["shape"] == list(img.shape) and meta["axcodes"]


def test_ood_readers_on_synthetic_layout(synth_root):
    """prostate_ood's other sites and drive_chase_ood's CHASE_DB1 are readable test sets."""
    prostate = make_reader("prostate_msnet", synth_root / "Prostate", {"sites": ["HK"]})
    cases = prostate.cases()
    assert {c.meta["site"] for c in cases} == {"HK"} and len(cases) == 4  # HK spells it _Segmentation
    chase = make_reader("chase_db1", synth_root / "CHASE_DB1")
    cases = chase.cases()
    assert len(cases) == 28 and len({c.group for c in cases}) == 14  # both eyes of a child share a group


def test_synthetic_prostate_gland_is_visible_in_every_site(synth_root):
    """Each synthetic site shifts the appearance, but the gland stands out of the tissue around it by at
    least 2 noise sigma (BIDMC once drew it 9 units darker than the pelvis under sigma 20: invisible)."""
    reader = make_reader("prostate_msnet", synth_root / "Prostate", {"sites": ["BMC", "RUNMC", "BIDMC", "HK"]})
    contrast: dict[str, list[float]] = {}
    for case in reader.cases():
        img, gland = reader.load_image(case).astype(np.float64), reader.load_target(case) > 0
        ring = ndimage.binary_dilation(gland, iterations=3) & ~gland
        contrast.setdefault(case.meta["site"], []).append((img[gland].mean() - img[ring].mean()) / img[ring].std())
    assert set(contrast) == {"BMC", "RUNMC", "BIDMC", "HK"}
    assert min(min(v) for v in contrast.values()) > 2.0, contrast
    assert min(contrast, key=lambda s: np.mean(contrast[s])) == "BIDMC"  # still the hardest site


def test_busi_unites_several_masks_and_drops_normal(synth_root):
    reader = make_reader("busi", synth_root / "Dataset_BUSI_with_GT")
    cases = reader.cases()
    assert not any(c.id.startswith("normal") for c in cases)
    multi = [c for c in cases if len(c.meta["mask_files"][0]) > 1]
    assert multi
    c = multi[0]
    union = np.zeros_like(reader.load_target(c))
    for f in c.meta["mask_files"][0]:
        union |= np.asarray(Image.open(reader.root / f).convert("L")) > 127
    np.testing.assert_array_equal(reader.load_target(c), union.astype(np.int64))


def test_jsrt_raw_films_and_half_size_scr_masks(synth_root):
    spec = get_task("jsrt").for_suite("smoke")
    data = load_task_data(spec, synth_root)
    case = data.cases[0]
    img = data.reader.load_image(case)
    assert img.shape == (64, 64, 1)  # 128² film resized onto its 64² SCR masks
    assert set(np.unique(data.reader.load_target(case))) == {0, 1, 2, 3}


def test_unpaired_files_are_reported_not_fatal(synth_root, tmp_path):
    root = tmp_path / "kv"
    shutil.copytree(synth_root / "Kvasir-SEG", root)
    first = sorted((root / "images").iterdir())[0]
    (root / "masks" / first.name).rename(root / "masks" / "orphan.jpg")
    reader = make_reader("kvasir_seg", root)
    cases = reader.cases()
    assert first.name not in {c.id for c in cases} and len(cases) == 47
    lines = [i.line() for i in reader.dataset_checks(cases)]
    assert any(first.name in line and "without its mask" in line for line in lines)
    assert any("orphan.jpg" in line and "mask without an image" in line for line in lines)


def test_truncated_mask_gives_one_line_error(synth_root, tmp_path):
    root = tmp_path / "kv"
    shutil.copytree(synth_root / "Kvasir-SEG", root)
    reader = make_reader("kvasir_seg", root)
    case = reader.cases()[0]
    mask = root / case.meta["mask_files"][0][0]
    mask.write_bytes(mask.read_bytes()[:60])
    with pytest.raises(DataError) as err:
        reader.load_target(case)
    msg = str(err.value)
    assert "\n" not in msg and str(mask) in msg and "fix:" in msg
    assert [i.path for i in reader.check(case)] == [str(mask)]


def test_size_mismatch_and_out_of_range_labels_are_checked(synth_root, tmp_path):
    root = tmp_path / "kv"
    shutil.copytree(synth_root / "Kvasir-SEG", root)
    reader = make_reader("kvasir_seg", root, {"classes": ["background", "polyp"]})
    case = reader.cases()[0]
    mask = root / case.meta["mask_files"][0][0]
    Image.open(mask).resize((20, 30)).save(mask)
    assert "differ in size" in reader.check(case)[0].problem
    bad = make_reader("kvasir_seg", root, {"classes": ["background", "polyp"], "masks": [{"path": "masks/{name}", "label": 2}]})
    assert any("outside the task's 2 classes" in i.problem for i in bad.check(bad.cases()[1]))


def test_wrong_size_raw_film_is_a_clear_error(synth_root, tmp_path):
    root = tmp_path / "jsrt"
    shutil.copytree(synth_root / "JSRT", root)
    reader = make_reader("jsrt_scr", root)  # preset expects 2048² films; the synthetic ones are 128²
    with pytest.raises(DataError, match="expected 8388608 for 2048x2048"):
        reader.load_image(reader.cases()[0])


def test_volume_label_map_unknown_values_and_corrupt_file(synth_root, tmp_path):
    root = tmp_path / "mmwhs"
    shutil.copytree(synth_root / "MMWHS", root)
    reader = make_reader("mmwhs", root, {"images": "ct_train/*_image.nii.gz"})
    case = reader.cases()[0]
    lab = reader.raw_labels(case).astype(np.int16)
    lab[0, 0, :3] = 421  # a stray value, as one MMWHS volume has
    save_nifti(np.moveaxis(lab, 0, 2), root / case.target, (0.8, 0.8, 1.6))
    issues = reader.check(case)
    assert len(issues) == 1 and "[421]" in issues[0].problem and not issues[0].fatal
    assert (reader.load_target(case)[0, 0, :3] == 0).all()
    (root / case.image).write_bytes(gzip.compress(b"not a nifti file"))
    with pytest.raises(DataError) as err:
        reader.cases()
    assert "\n" not in str(err.value) and case.image in str(err.value)


def test_volume_slicing_axis_and_spacing(tmp_path):
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    save_nifti(vol, tmp_path / "images" / "v1.nii.gz", (1.0, 2.0, 3.0))
    save_nifti((vol > 60).astype(np.uint8), tmp_path / "labels" / "v1.nii.gz", (1.0, 2.0, 3.0))
    for axis in (0, 1, 2):
        reader = make_reader("decathlon", tmp_path, {"images": "images/*.nii.gz", "label": "labels/{vol}.nii.gz", "slice_axis": axis})
        case = reader.cases()[0]
        img = reader.load_image(case)
        np.testing.assert_array_equal(img, np.moveaxis(vol, axis, 0))
        assert case.meta["spacing"][0] == [1.0, 2.0, 3.0][axis] and case.meta["shape"] == list(img.shape)


# -- real samples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id,folder,n", [("kvasir_seg", "kvasir_seg", 1000), ("drive", "drive", 40), ("buid", "busi_subset", 99)])
def test_reader_on_real_sample(task_id, folder, n):
    root = shared(folder).parent
    spec = get_task(task_id).for_suite("shared-data")
    data = load_task_data(spec, root)
    assert len(data.cases) == n
    assert data.reader.dataset_checks(data.cases) == []
    for case in data.cases[:2]:
        assert data.reader.check(case) == []
        assert data.reader.load_target(case).max() == 1
    if task_id == "drive":
        assert data.split.counts()["test"] == 20 and all(c.meta["fov"] for c in data.cases)


def test_chase_db1_real_sample():
    reader = make_reader("chase_db1", shared("chase_db1"))
    cases = reader.cases()
    assert len(cases) == 28 and reader.dataset_checks(cases) == []  # _2ndHO files are not masks of this layout
    assert reader.check(cases[0]) == []


def test_hippocampus_real_volumes_report_unpaired_files():
    reader = make_reader(
        "decathlon", shared("hippocampus_3d"), {"images": "images/*.nii.gz", "label": "labels/{vol}.nii.gz", "classes": ["background", "anterior", "posterior"]}
    )
    cases = reader.cases()
    assert len(cases) == 260
    lines = [i.line() for i in reader.dataset_checks(cases)]
    assert len(lines) == 3
    assert any("hippocampus_118" in line and "without its label" in line for line in lines)
    assert sum("label volume without an image" in line for line in lines) == 2
    assert reader.check(cases[0]) == []
    assert set(np.unique(reader.load_target(cases[0]))) <= {0, 1, 2}


def test_busi_subset_resized_second_mask_is_a_warning():
    """busi_subset's 'benign (4)' image was resized to 416² but its _mask_1 was not (SOURCE.txt)."""
    spec = get_task("buid").for_suite("shared-data")
    data = load_task_data(spec, shared("busi_subset").parent)
    case = next(c for c in data.cases if c.id == "benign (4).png")
    issues = data.reader.check(case)
    assert len(issues) == 1 and not issues[0].fatal and "555x465" in issues[0].problem
    assert data.reader.load_target(case).shape == (416, 416)


@pytest.mark.parametrize("name", ["paired_images", "isic2018", "kvasir_seg", "drive", "chase_db1", "busi", "jsrt_scr", "nifti_pairs", "brats2018", "mmwhs", "prostate_msnet", "decathlon"])
def test_readers_pickle_for_spawned_workers(name, tmp_path):
    import pickle

    opts = {"masks": "m/{name}", "images": "i/*"} if name == "paired_images" else {"label": "l/{stem}", "images": "i/*"} if name == "nifti_pairs" else {}
    reader = make_reader(name, tmp_path, opts)
    again = pickle.loads(pickle.dumps(reader))
    assert type(again) is type(reader) and again.options == reader.options
