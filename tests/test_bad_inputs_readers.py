"""Bad inputs that used to give a wrong number with exit 0 (or exhaust the machine), at the readers:
each is read correctly or refused with one line naming the file and the fix.

Every input is generated here (tiny images and volumes); nothing reads ../shared/data.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reader_inputs import SEG_TASK, VOL_TASK, disc, seg_folder, task

from lvmbench.data.cases import make_reader
from lvmbench.data.imageio import read_image
from lvmbench.data.task_data import load_task_data
from lvmbench.data.verify import preflight, verify_task
from lvmbench.errors import DataError

# ---------------------------------------------------------------- 1. masks stored as labels


def test_masks_stored_as_0_1_are_read_as_foreground(tmp_path):
    root = seg_folder(tmp_path / "d", mask_values=1)
    reader = make_reader("kvasir_seg", root, {"images": "images/*.png", "masks": "masks/{name}", "threshold": 128, "classes": ["bg", "fg"]})
    for c in reader.cases():
        want = np.asarray(Image.open(root / c.target)).astype(np.int64)
        np.testing.assert_array_equal(reader.load_target(c), want)
        assert reader.load_target(c).sum() > 0


def test_label_valued_masks_palette_and_16_bit(tmp_path):
    """Class-index masks (one file, values 0..2), a palette PNG with coloured entries (VOC style:
    the indices are the labels) and a 16-bit 0/1 PNG are all read as labels; a grey 0/255 JPEG
    with compression noise is still thresholded."""
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lab = np.zeros((20, 24), np.uint8)
    lab[2:8, 2:10] = 1
    lab[10:18, 12:22] = 2
    for name in ("idx", "pal", "u16", "jpg"):
        Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(lab).save(root / "masks" / "idx.png")
    pal = Image.frombytes("P", (lab.shape[1], lab.shape[0]), lab.tobytes())
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    pal.save(root / "masks" / "pal.png")
    Image.fromarray((lab > 0).astype(np.uint16)).save(root / "masks" / "u16.png")
    Image.fromarray((lab > 0).astype(np.uint8) * 255).save(root / "masks" / "jpg.jpg", quality=75)
    opts = {"images": "images/*.png", "masks": [{"path": ["masks/{stem}.png", "masks/{stem}.jpg"]}], "classes": ["bg", "a", "b"]}
    reader = make_reader("paired_images", root, opts)
    got = {c.id: reader.load_target(c) for c in reader.cases()}
    np.testing.assert_array_equal(got["idx.png"], lab)
    np.testing.assert_array_equal(got["pal.png"], lab)
    np.testing.assert_array_equal(got["u16.png"], (lab > 0).astype(np.int64))
    assert (got["jpg.png"] == (lab > 0)).mean() > 0.98
    assert all(reader.check(c) == [] for c in reader.cases())


def test_rgba_mask_with_an_opaque_alpha_is_not_all_foreground(tmp_path):
    """BUSI ships such a file (benign (4)_mask_1.png): the brightest channel was the alpha, 255."""
    root = seg_folder(tmp_path / "d", n=1)
    m = np.asarray(Image.open(root / "masks" / "c00.png"))
    rgba = np.stack([m, m, m, np.full_like(m, 255)], axis=2)
    Image.fromarray(rgba).save(root / "masks" / "c00.png")
    reader = make_reader("kvasir_seg", root, {"images": "images/*.png", "masks": "masks/{name}", "threshold": 128, "classes": ["bg", "fg"]})
    (c,) = reader.cases()
    np.testing.assert_array_equal(reader.load_target(c), (m > 128).astype(np.int64))


def test_mask_values_that_are_neither_0_255_nor_class_indices_are_refused(tmp_path):
    root = seg_folder(tmp_path / "d", n=2, mask_values=7)  # 0/7: a 2-class task has indices 0, 1
    reader = make_reader("kvasir_seg", root, {"images": "images/*.png", "masks": "masks/{name}", "threshold": 128, "classes": ["bg", "fg"]})
    c = reader.cases()[0]
    with pytest.raises(DataError) as ei:
        reader.load_target(c)
    line = str(ei.value)
    assert line.startswith(str(root / c.target)) and "threshold" in line and "fix:" in line


def test_a_task_whose_every_mask_is_empty_is_an_error(tmp_path):
    seg_folder(tmp_path / "data" / "empty", mask_values=0)
    spec = task(tmp_path / "tasks", SEG_TASK, id="all_empty", classes="[bg, fg]", dir="empty", group_by="case")
    report = verify_task(spec, tmp_path / "data", progress=False)
    assert not report.runnable
    (issue,) = [i for i in report.fatal]
    assert "all_empty" in issue.line() and str(tmp_path / "data" / "empty") in issue.line() and "every mask" in issue.problem
    with pytest.raises(DataError, match="every mask"):
        preflight(load_task_data(spec, tmp_path / "data"), tmp_path / "cache", log=lambda s: None)
    # the cases are remembered as checked (and empty); that does not hide the error on the next run
    stored = [k for f in (tmp_path / "cache" / "verified").glob("*.json") for k in json.loads(f.read_text(encoding="utf-8"))]
    assert len(stored) == 8 and all(k.endswith(":empty") for k in stored)
    with pytest.raises(DataError, match="every mask"):
        preflight(load_task_data(spec, tmp_path / "data"), tmp_path / "cache", log=lambda s: None)


# ---------------------------------------------------------------- 2. NIfTI pairs on different grids


def _volumes(root: Path, n: int = 4, label_affine=None, bad: int = 1) -> None:
    import nibabel as nib

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    for i in range(n):
        lab = np.zeros((8, 8, 4), np.uint8)
        lab[2:5, 2:6, 1:3] = 1
        img = (rng.random(lab.shape) * 50 + lab * 100).astype(np.float32)
        nib.save(nib.Nifti1Image(img, aff), str(root / "images" / f"v{i}.nii.gz"))
        la = label_affine if (label_affine is not None and i == bad) else aff
        nib.save(nib.Nifti1Image(lab, la), str(root / "labels" / f"v{i}.nii.gz"))


def test_nifti_label_on_another_grid_is_refused(tmp_path):
    shifted = np.diag([1.5, 1.5, 3.0, 1.0])
    shifted[:3, 3] = [0.0, 12.0, 0.0]  # same shape, shifted 12 mm
    _volumes(tmp_path / "data" / "vol", label_affine=shifted)
    spec = task(tmp_path / "tasks", VOL_TASK, id="affine", dir="vol", group_by="volume")
    report = verify_task(spec, tmp_path / "data", progress=False)
    (issue,) = report.fatal
    line = issue.line()
    assert "labels/v1.nii.gz" in line and "images/v1.nii.gz" in line and "affine" in line and "fix:" in line
    flipped = np.diag([-1.5, 1.5, 3.0, 1.0])  # an orientation flip, same shape
    _volumes(tmp_path / "data" / "vol2", label_affine=flipped)
    spec = task(tmp_path / "tasks", VOL_TASK, id="affine2", dir="vol2", group_by="volume")
    assert [i.path for i in verify_task(spec, tmp_path / "data", progress=False).fatal] == [str(tmp_path / "data" / "vol2" / "labels" / "v1.nii.gz")]
    tiny = np.diag([1.5, 1.5, 3.0, 1.0]) + 1e-6  # float32 round-off in a re-saved header: fine
    _volumes(tmp_path / "data" / "vol3", label_affine=tiny)
    spec = task(tmp_path / "tasks", VOL_TASK, id="affine3", dir="vol3", group_by="volume")
    assert verify_task(spec, tmp_path / "data", progress=False).runnable


# ---------------------------------------------------------------- 3. glob characters in file names


def test_file_names_with_glob_characters_pair_with_their_own_mask(tmp_path):
    root = tmp_path / "isic[v2]"  # the dataset folder too
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    for stem, val in (("ISIC_0000001", 1), ("ISIC_000000[1]", 2), ("ISIC_000000?", 3)):
        Image.fromarray(np.full((6, 6, 3), 40 * val, np.uint8)).save(root / "img" / f"{stem}.jpg")
        m = np.zeros((6, 6), np.uint8)
        m[:val, :] = 255
        Image.fromarray(m).save(root / "gt" / f"{stem}_segmentation.png")
    reader = make_reader("isic2018", root, {"images": "img/*.jpg", "masks": "gt/{stem}_segmentation.png"})
    cases = {c.id: c for c in reader.cases()}
    assert sorted(cases) == ["ISIC_0000001", "ISIC_000000?", "ISIC_000000[1]"]
    for stem, val in (("ISIC_0000001", 1), ("ISIC_000000[1]", 2), ("ISIC_000000?", 3)):
        assert cases[stem].meta["mask_files"] == [[f"gt/{stem}_segmentation.png"]]
        assert int(reader.load_target(cases[stem]).sum()) == 6 * val
    assert reader.dataset_checks(list(cases.values())) == []


# ---------------------------------------------------------------- 4. EXIF orientation


def test_jpeg_with_exif_orientation_is_aligned_with_its_mask(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    m = disc(20, 32, cy=6, cx=22, r=4)
    shown = np.repeat((20 + m * 200).astype(np.uint8)[..., None], 3, axis=2)  # what a viewer shows
    stored = np.ascontiguousarray(np.rot90(shown, 1))  # the camera's sensor order: 32x20
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(root / "images" / "r.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(m * 255).save(root / "masks" / "r.jpg")
    reader = make_reader("kvasir_seg", root, {"classes": ["bg", "fg"]})
    (c,) = reader.cases()
    assert reader.check(c) == []
    img, tgt = reader.load_image(c), reader.load_target(c)
    assert img.shape[:2] == tgt.shape == (20, 32)
    assert img[..., 0][tgt == 1].mean() > 150 and img[..., 0][tgt == 0].mean() < 60


# ---------------------------------------------------------------- 5. NaN pixels in float images


def test_nan_pixels_in_a_float_tiff_are_refused(tmp_path):
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    a[2, 3] = np.nan
    p = tmp_path / "x.tif"
    Image.fromarray(a, mode="F").save(p)
    for mode in ("RGB", "L", None):
        with pytest.raises(DataError) as ei:
            read_image(p, mode)
        assert str(ei.value).startswith(f"{p}:") and "NaN" in str(ei.value) and "fix:" in str(ei.value)


# ---------------------------------------------------------------- 6. decompression bombs


def _png_claiming(path: Path, w: int, h: int) -> None:
    """A few hundred bytes of PNG whose header claims ``w`` x ``h`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # lvmbench silences it; pytest resets filters
def test_pixel_limit_refuses_bombs_and_can_be_raised(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    _png_claiming(bomb, 200_000, 200_000)  # 40 gigapixels in a few hundred bytes
    with pytest.raises(DataError) as ei:
        read_image(bomb, "RGB")
    line = str(ei.value)
    assert line.startswith(f"{bomb}:") and "pixels" in line and "LVMBENCH_MAX_IMAGE_PIXELS" in line
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(small)
    monkeypatch.setenv("LVMBENCH_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match=r"2000 pixels.*LVMBENCH_MAX_IMAGE_PIXELS"):
        read_image(small, "L")
    monkeypatch.setenv("LVMBENCH_MAX_IMAGE_PIXELS", "2000")
    assert read_image(small, "L").shape == (40, 50)


# ---------------------------------------------------------------- 7. NIfTI headers claiming huge volumes


def _nifti_claiming(path: Path, shape: tuple[int, ...], compressed: bool) -> None:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape(shape)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    blob = hdr.binaryblock + b"\0" * 4 + np.zeros(64, np.int16).tobytes()
    path.write_bytes(gzip.compress(blob) if compressed else blob)


@pytest.mark.parametrize("compressed", [True, False], ids=["nii.gz", "nii"])
def test_nifti_header_claiming_a_huge_volume_is_one_case_failure(tmp_path, compressed):
    _volumes(tmp_path / "data" / "vol")
    bad = tmp_path / "data" / "vol" / "images" / "v2.nii.gz"
    if not compressed:
        bad.unlink()
        bad = bad.with_name("v2.nii")
    _nifti_claiming(bad, (8192, 8192, 8192), compressed)  # 1 TiB of int16
    spec = task(tmp_path / "tasks", VOL_TASK, id="huge", dir="vol", group_by="volume")
    data = load_task_data(spec, tmp_path / "data")
    (case,) = [c for c in data.cases if c.id == "v2"]
    with pytest.raises(DataError) as ei:
        data.reader.load_image(case)
    assert str(ei.value).startswith(f"{bad}:") and "8192x8192x8192" in str(ei.value) and "fix:" in str(ei.value)
    report = verify_task(spec, tmp_path / "data", progress=False)
    assert [i.path for i in report.fatal] == [str(bad)]  # the other volumes were still checked


def test_truncated_gzip_volume_and_the_voxel_limit(tmp_path, monkeypatch):
    """A gzip volume within deflate's bound whose stream is shorter than its header says, and a
    genuine volume above LVMBENCH_MAX_VOLUME_VOXELS (refused, then accepted with the limit raised)."""
    import nibabel as nib

    _volumes(tmp_path / "data" / "vol")
    bad = tmp_path / "data" / "vol" / "images" / "v0.nii.gz"
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((64, 64, 64))
    hdr["vox_offset"] = 352
    noise = np.random.default_rng(0).integers(0, 2**15, 64 * 64 * 32, dtype=np.int16)  # half the volume, incompressible
    bad.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + noise.tobytes()))
    spec = task(tmp_path / "tasks", VOL_TASK, id="trunc", dir="vol", group_by="volume")
    data = load_task_data(spec, tmp_path / "data")
    cases = {c.id: c for c in data.cases}
    with pytest.raises(DataError, match=r"v0.nii.gz: NIfTI header claims a 64x64x64 int16 volume .* the compressed stream holds only"):
        data.reader.load_image(cases["v0"])
    monkeypatch.setenv("LVMBENCH_MAX_VOLUME_VOXELS", "100")
    with pytest.raises(DataError, match=r"v1.nii.gz: .*256 voxels, more than the limit of 100; fix: .*LVMBENCH_MAX_VOLUME_VOXELS"):
        data.reader.load_image(cases["v1"])
    monkeypatch.setenv("LVMBENCH_MAX_VOLUME_VOXELS", "0")
    assert data.reader.load_image(cases["v1"]).shape == (4, 8, 8)


# ---------------------------------------------------------------- 8. group_by against the reader's groups


def test_group_by_patient_without_patient_information_is_an_error(tmp_path):
    seg_folder(tmp_path / "data" / "seg")
    spec = task(tmp_path / "tasks", SEG_TASK, id="nopatients", classes="[bg, fg]", dir="seg", group_by="patient")
    report = verify_task(spec, tmp_path / "data", progress=False)
    (issue,) = report.fatal
    assert "nopatients" in issue.line() and "group_by" in issue.line() and "data.options.group" in issue.fix
    with pytest.raises(DataError, match="group_by"):
        preflight(load_task_data(spec, tmp_path / "data"), tmp_path / "cache", log=lambda s: None)
    spec = task(tmp_path / "tasks", SEG_TASK, id="bycase", classes="[bg, fg]", dir="seg", group_by="case")
    assert verify_task(spec, tmp_path / "data", progress=False).runnable
    # a volume reader's cases are volumes: group_by volume holds without a group template
    _volumes(tmp_path / "data" / "vol")
    spec = task(tmp_path / "tasks", VOL_TASK, id="byvol", dir="vol", group_by="volume")
    assert verify_task(spec, tmp_path / "data", progress=False).runnable
    spec = task(tmp_path / "tasks", VOL_TASK, id="bysite", dir="vol", group_by="site")
    assert not verify_task(spec, tmp_path / "data", progress=False).runnable


# ---------------------------------------------------------------- through the CLI: one line each, exit 1


def test_data_verify_prints_one_line_per_fault(tmp_path, monkeypatch, capsys):
    import sys

    from lvmbench import cli as cli_mod
    from lvmbench.tasks import TASKS

    data = tmp_path / "data"
    seg_folder(data / "empty", mask_values=0)
    seg_folder(data / "bomb")
    _png_claiming(data / "bomb" / "images" / "c02.png", 100_000, 100_000)
    seg_folder(data / "patients")
    specs = [
        task(tmp_path / "tasks", SEG_TASK, id="v_empty", classes="[bg, fg]", dir="empty", group_by="case"),
        task(tmp_path / "tasks", SEG_TASK, id="v_bomb", classes="[bg, fg]", dir="bomb", group_by="case"),
        task(tmp_path / "tasks", SEG_TASK, id="v_patients", classes="[bg, fg]", dir="patients", group_by="patient"),
    ]
    TASKS.names()
    for s in specs:
        TASKS.add(s.id, s)
    monkeypatch.setattr(sys, "argv", ["lvmbench", "data", "verify", *(s.id for s in specs), "--data-root", str(data), "--no-progress"])
    try:
        with pytest.raises(SystemExit) as ei:
            cli_mod.main()
    finally:
        for s in specs:
            TASKS._items.pop(s.id, None)
    out = capsys.readouterr()
    text = out.out + out.err
    assert ei.value.code == 1 and "Traceback" not in text
    errors = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("ERROR")]
    assert len(errors) == 3, text
    assert any(str(data / "empty") in e and "every mask of task 'v_empty' is empty" in e and "fix:" in e for e in errors)
    assert any(str(data / "bomb" / "images" / "c02.png") in e and "LVMBENCH_MAX_IMAGE_PIXELS" in e for e in errors)
    assert any("task 'v_patients': split.group_by is 'patient'" in e and "fix:" in e for e in errors)
