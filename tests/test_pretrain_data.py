"""Pretraining input: folder scan (PNG/JPEG/TIFF/DICOM/NIfTI), WebDataset shards written by the
webdataset library itself, the sha256 manifest, the resumable sampler and the two-view maker."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lvmbench.errors import DataError
from lvmbench.pretrain.data import PretrainDataset, StepSampler, decode, scan
from lvmbench.pretrain.views import ViewConfig, make_view, sample_generator, to_chw_rgb


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def write_dicom(path, arr: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def folder(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "a" / "deep").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "one.png")
    Image.fromarray(rng.integers(0, 255, (25, 20, 3), dtype=np.uint8)).save(root / "a" / "two.jpg")
    Image.fromarray(rng.integers(0, 60000, (16, 18), dtype=np.uint16)).save(root / "a" / "deep" / "three.tif")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a" / "one_mask.png")
    (root / ".hidden.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("ignored", encoding="utf-8")
    write_dicom(root / "a" / "scan.dcm", rng.integers(0, 4000, (12, 14)))
    vol = rng.normal(size=(10, 12, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "vol.nii.gz"))
    return root, vol


def test_folder_scan_finds_every_format_and_hashes_every_file(folder):
    root, vol = folder
    items, manifest = scan([root], exclude=["*_mask*"])
    names = sorted({it.path.split("/")[-1] for it in items})
    assert names == sorted(["one.png", "two.jpg", "three.tif", "scan.dcm", "vol.nii.gz"])
    assert len(items) == 4 + vol.shape[2]  # one item per NIfTI slice
    assert {m["path"]: m["sha256"] for m in manifest} == {str(p): sha(p) for p in root.rglob("*") if p.name in names}
    assert {m["path"].split("/")[-1]: m["samples"] for m in manifest}["vol.nii.gz"] == 5
    ds = PretrainDataset(items, ViewConfig(size=16))
    for i, it in enumerate(items):
        img = ds.image(i)
        assert img.dtype == np.uint8 and img.ndim in (2, 3)
        if it.path.endswith(".tif"):  # 16-bit: windowed, not clipped to white by PIL's RGB conversion
            assert img.std() > 30 and (img < 250).mean() > 0.5
        if it.kind == "nifti":
            assert img.shape[:2] == vol.shape[:2]
            # One intensity window per volume: slice order of brightness is kept.
            assert np.corrcoef(img.ravel().astype(float), vol[:, :, it.frame].ravel())[0, 1] > 0.95
    v1, v2, b1, b2, idx = ds[(0, 3)]
    assert v1.shape == v2.shape == (3, 16, 16) and v1.dtype == torch.uint8 and idx == 3


def test_masks_are_only_skipped_when_excluded(folder):
    root, _ = folder
    assert len(scan([root])[0]) == len(scan([root], exclude=["*_mask*"])[0]) + 1


def test_webdataset_shards_written_by_webdataset(tmp_path):
    import webdataset as wds

    rng = np.random.default_rng(1)
    originals = {}
    for s in range(2):
        with wds.TarWriter(str(tmp_path / f"train-{s:03d}.tar")) as sink:
            for k in range(3):
                arr = rng.integers(0, 255, (10 + k, 12, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                mask = io.BytesIO()
                Image.fromarray(np.zeros((10 + k, 12), np.uint8)).save(mask, format="PNG")
                key = f"s{s}k{k}"
                sink.write({"__key__": key, "png": buf.getvalue(), "seg.png": mask.getvalue(), "cls": b"1"})
                originals[key] = (arr, hashlib.sha256(buf.getvalue()).hexdigest())
    for pattern in (str(tmp_path / "train-{000..001}.tar"), str(tmp_path / "train-*.tar"), str(tmp_path)):
        items, manifest = scan([pattern])
        assert len(items) == 6  # the seg.png masks and .cls labels are not images
        for it, m in zip(items, manifest):
            key = it.member.split(".")[0]
            assert np.array_equal(decode(it), originals[key][0])
            assert m["sha256"] == originals[key][1] and m["member"] == it.member


def test_bad_inputs_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        scan([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        scan([tmp_path / "empty"])
    gz = tmp_path / "x.tar.gz"
    with tarfile.open(gz, "w:gz"):
        pass
    with pytest.raises(DataError, match="compressed"):
        scan([str(gz)])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG garbage")
    items, _ = scan([bad])
    with pytest.raises(DataError, match="broken.png"):
        PretrainDataset(items, ViewConfig(size=16))[(0, 0)]
    with pytest.raises(DataError, match="fewer than one batch"):
        StepSampler(5, 8, 0, 1)


def test_sampler_splits_steps_over_ranks_and_resumes_exactly():
    n, gb, world = 50, 12, 3
    full = [list(StepSampler(n, gb, 0, 10, seed=4, rank=r, world=world)) for r in range(world)]
    for step in range(10):
        joined = [x for r in range(world) for x in full[r][step]]
        assert len(joined) == gb and len(set(joined)) == gb  # disjoint, complete global batch
        epoch = step // (n // gb)
        assert all(e == epoch for e, _ in joined)
    first_epoch = {i for r in range(world) for step in range(n // gb) for _, i in full[r][step]}
    assert len(first_epoch) == (n // gb) * gb  # no repeats within an epoch
    resumed = list(StepSampler(n, gb, 6, 10, seed=4, rank=1, world=world))
    assert resumed == full[1][6:]
    other_seed = list(StepSampler(n, gb, 0, 10, seed=5, rank=1, world=world))
    assert other_seed != full[1]


def test_views_are_deterministic_per_sample_and_boxes_locate_the_crop():
    h, w = 60, 90
    yy, xx = np.mgrid[0:h, 0:w]
    # Pixel values encode the source position: R = x, G = y (scaled to 0..255).
    src = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), np.zeros_like(xx)], axis=2).round().astype(np.uint8)
    img = to_chw_rgb(src)
    cfg = ViewConfig(size=24, jitter_p=0, gray_p=0, blur_p=(0, 0), solarize_p=(0, 0), flip_p=0.5)
    flipped = 0
    for index in range(30):
        a, box_a = make_view(img, cfg, sample_generator(0, 1, index), 0)
        b, box_b = make_view(img, cfg, sample_generator(0, 1, index), 0)
        assert torch.equal(a, b) and torch.equal(box_a, box_b)
        x1, y1, x2, y2 = box_a.tolist()
        flipped += x1 > x2
        cx = x1 + (np.arange(24) + 0.5) / 24 * (x2 - x1)  # column centres in source coordinates
        cy = y1 + (np.arange(24) + 0.5) / 24 * (y2 - y1)
        r = a[0].float().mean(dim=0).numpy()  # R along columns
        g = a[1].float().mean(dim=1).numpy()  # G along rows
        assert np.abs(r - (cx * w - 0.5) * 255 / (w - 1)).max() < 8
        assert np.abs(g - (cy * h - 0.5) * 255 / (h - 1)).max() < 8
    assert 5 < flipped < 25
    c, _ = make_view(img, cfg, sample_generator(0, 2, 0), 0)  # another epoch, other view
    assert not torch.equal(c, make_view(img, cfg, sample_generator(0, 1, 0), 0)[0])
