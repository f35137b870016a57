"""3D segmentation layouts: a NIfTI image volume paired with a NIfTI label volume.

One configurable reader, ``nifti_pairs``, and presets for BraTS-2018, MMWHS (CT and MR), the
multi-site prostate collection in MS-Net's layout and Medical-Decathlon-style ``images/`` +
``labels/`` folders. Volumes are read with nibabel in their stored orientation (the paper sliced the
stored array) and returned with the slicing axis first, ``(D, H, W)``; ``case.meta`` keeps the voxel
spacing (same axis order), the stored shape, the orientation codes and the affine's axis codes.

Options (templates: see ``seg_layout``): ``images``, ``pattern``, ``exclude``, ``id`` (default: the
image stem), ``group`` (default: the id; a template or any group source of ``groups``), ``split``; ``label``: template or list of alternatives;
``site``: template naming the acquisition site, ``sites``: the sites to keep (prostate: BMC);
``label_map``: ``{stored value: class}`` (MMWHS 205/420/... -> 1..7; unlisted non-zero values are
reported by ``check`` and read as background); ``binarize``: every non-zero label -> 1 (BraTS whole
tumour); ``slice_axis``: stored axis the 2D network slices along (MMWHS: 2); ``classes``.

Before a volume is decoded its header is checked against the file: an uncompressed file must hold
the bytes the header's shape and type imply, a gzip file cannot expand beyond deflate's 1032:1
(nor beyond the size its trailer records), and no volume may exceed ``LVMBENCH_MAX_VOLUME_VOXELS``
(default 2**31; 0 = no limit), so a damaged header is one case's error, not a MemoryError that
ends the run. ``check`` also compares the image's and the label's affines (same grid, within a
small fraction of a voxel).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
from pydantic import Field

from lvmbench.data.cases import READERS, Case, DatasetReader, Issue, checked_options, issue_from
from lvmbench.data.contained import InsidePathOrList
from lvmbench.data.reader_options import Bool, Int, ReaderOptions, Str
from lvmbench.data.readers.groups import GroupResolver, GroupSource
from lvmbench.data.readers.seg_layout import Layout, as_list, fill, require_cases, unpaired_issues
from lvmbench.errors import DataError, UserError

MAX_VOXELS_ENV = "LVMBENCH_MAX_VOLUME_VOXELS"
DEFAULT_MAX_VOXELS = 2**31  # 8 GiB as float32; the largest LVM-Med volumes (MMWHS CT) are ~0.2G voxels
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one compressed byte into more than ~1032 bytes

OPTIONS = {"images", "pattern", "exclude", "id", "group", "split", "label", "site", "sites", "label_map", "binarize", "slice_axis", "classes"}


class VolumeOptions(ReaderOptions):
    images: InsidePathOrList = Field(description="glob(s) of the image volumes, relative to the dataset folder")
    pattern: Str | None = Field(None, description="regex with named groups over each image's relative path")
    exclude: list[Str] = Field(default_factory=list, description="regexes of paths to leave out")
    id: Str | None = Field(None, description="template of the case id (default: the image stem)")
    group: GroupSource | None = Field(None, description="patient group: template or group source (default: the id)")
    split: Str | None = Field(None, description="template of the publisher split")
    label: InsidePathOrList = Field(description="template (or alternatives) of the label volume")
    site: Str | None = Field(None, description="template naming the acquisition site")
    sites: list[Str] = Field(default_factory=list, description="sites to keep (default: all)")
    label_map: dict[Int, Int] = Field(default_factory=dict, description="stored label value -> class index (unlisted values: background)")
    binarize: Bool = Field(False, description="every non-zero label -> 1")
    slice_axis: Int = Field(2, ge=0, le=2, description="stored axis the 2D network slices along")
    classes: list[Str] = Field(default_factory=list, description="the task's classes (filled in from the task)")


def _nib_error(path: Path, e: Exception) -> DataError:
    msg = str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__
    return DataError(f"unreadable NIfTI volume ({msg})", path=path, fix="re-download or re-export this file")


def load_nifti(path: Path):
    """nibabel image with its header read (data is decoded on demand), one clear error per bad file."""
    if not path.is_file():
        raise DataError("file not found", path=path, fix="restore the file or remove the case from the dataset")
    try:
        return nib.load(str(path))
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as e:
        raise _nib_error(path, e) from None


def max_volume_voxels() -> int | None:
    raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        n = int(float(raw))
    except ValueError:
        raise UserError(f"{MAX_VOXELS_ENV}={raw!r} is not a number", fix=f"set {MAX_VOXELS_ENV} to a voxel count (0 = no limit)") from None
    return None if n <= 0 else n


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _gzip_payload(path: Path) -> int:
    """Bytes a gzip file really decompresses to (all members), counted in bounded memory."""
    total = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            total += len(chunk)
    return total


def check_nifti_size(img, path: Path) -> None:
    """Refuse a header whose implied data the file cannot hold, or that exceeds the voxel limit,
    before anything is allocated."""
    shape = tuple(int(s) for s in img.shape)
    dtype = img.header.get_data_dtype()
    voxels = int(np.prod(shape, dtype=object)) if shape else 0
    need = int(getattr(img.dataobj, "offset", 352)) + voxels * dtype.itemsize
    dims = "x".join(str(s) for s in shape)
    what = f"NIfTI header claims a {dims} {dtype.name} volume ({_human(voxels * dtype.itemsize)})"
    damaged = "re-download or re-export the file (its header or data is damaged)"
    size = path.stat().st_size
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
        if gz and size >= 18:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
    if not gz:
        if size < need:
            raise DataError(f"{what} but the file has only {_human(size)}", path=path, fix=damaged)
    else:
        bound = size * DEFLATE_MAX_RATIO
        if need > bound:
            raise DataError(f"{what} but {_human(size)} of gzip data can hold at most {_human(bound)}", path=path, fix=damaged)
        # the trailer holds the (last member's) size mod 2**32; count the stream only when it disagrees
        if need < 2**32 and size >= 18 and isize < need:
            have = _gzip_payload(path)
            if have < need:
                raise DataError(f"{what} but the compressed stream holds only {_human(have)}", path=path, fix=damaged)
    limit = max_volume_voxels()
    if limit is not None and voxels > limit:
        raise DataError(f"{what}: {voxels} voxels, more than the limit of {limit}", path=path, fix=f"if the volume is genuine, raise the limit with {MAX_VOXELS_ENV} (0 = no limit)")


def affine_difference(a: np.ndarray, b: np.ndarray) -> str | None:
    """None when two affines describe the same grid (float round-off tolerated), else what differs.

    Direction/scale entries may differ by 1e-4 of a voxel (a 512-voxel axis then drifts by less
    than 0.05 voxel), the origin by 1e-2 of a voxel.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    voxel = float(np.linalg.norm(a[:3, :3], axis=0).min()) or 1.0
    lin = float(np.abs(a[:3, :3] - b[:3, :3]).max())
    shift = float(np.abs(a[:3, 3] - b[:3, 3]).max())
    if lin <= 1e-4 * voxel and shift <= 1e-2 * voxel:
        return None
    return f"direction/spacing differ by up to {lin:.3g}, origin by up to {shift:.3g} mm"


@READERS.register("nifti_pairs")
class NiftiPairs(DatasetReader):
    """NIfTI image volumes paired with NIfTI label volumes by templates (read with nibabel)."""

    kind = "segmentation"
    case_unit = "volume"
    defaults: ClassVar[dict[str, Any]] = {}
    Options: ClassVar[type[ReaderOptions]] = VolumeOptions
    example = {"reader": "nifti_pairs", "dir": "liver_ct", "options": {"images": "scans/*.nii.gz", "label": "segs/{stem}.nii.gz", "group": {"regex": "^(?P<group>pat\\d+)_"}, "slice_axis": 2}}
    option_names: ClassVar[set[str]] = OPTIONS

    def __init__(self, root: str | Path, **options: Any):
        opts = checked_options(self.defaults, options, self.option_names, "volume reader", "label", "set data.options.label (template of the label file) in the task")
        super().__init__(root, **opts)
        self.layout = Layout(self.root, opts.get("images") or [], opts.get("pattern"), opts.get("exclude") or ())
        self.label_t = as_list(opts["label"])
        self.sites = [str(s) for s in opts.get("sites") or []]
        self.label_map = {int(k): int(v) for k, v in (opts.get("label_map") or {}).items()}
        self.binarize = bool(opts.get("binarize", False))
        self.axis = int(opts.get("slice_axis", 2))
        self.classes = list(opts.get("classes") or [])
        self.group = GroupSource.model_validate(opts["group"]) if opts.get("group") is not None else None
        self._issues: list[Issue] | None = None

    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder that holds the volumes (see `lvmbench tasks`)")
        o = self.options
        matched, unmatched = self.layout.scan()
        label_like = self.layout.candidates(self.label_t)
        # Label files often fit the images glob too (prostate: Case*.nii*); they are not strays.
        issues = unpaired_issues(self.root, [u for u in unmatched if u not in label_like], "fits the images glob but not the layout pattern; ignored", "rename it or adjust data.options.pattern")
        cases: list[Case] = []
        referenced: set[str] = set()
        groups = GroupResolver(self.group, self.root)
        for rel, f in matched:
            lab = self.layout.resolve(self.label_t, f, "label")
            referenced.update(lab[:1])
            site = fill(o["site"], f, "site") if o.get("site") else None
            if self.sites and site not in self.sites:
                continue
            if not lab:
                issues.append(Issue(str(self.root / rel), f"image volume without its label (expected {fill(self.label_t[0], f, 'label')}); left out", "restore the label or remove the image", fatal=False))
                continue
            cid = fill(o["id"], f, "id") if o.get("id") else f["stem"]
            meta: dict[str, Any] = {"slice_axis": self.axis}
            if o.get("split"):
                meta["split"] = fill(o["split"], f, "split")
            if site is not None:
                meta["site"] = site
            meta.update(self.geometry(rel))
            group = groups({**f, "id": cid}, cid)
            cases.append(Case(id=cid, group=group, image=rel, target=lab[0], files=(rel, lab[0]), meta=meta))
        ids = [c.id for c in cases]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"two volumes give the same case id '{dup}'", path=self.root, fix="make data.options.id unique")
        orphans = self.layout.candidates(self.label_t, near=referenced) - referenced - {rel for rel, _ in matched}
        issues += unpaired_issues(self.root, orphans, "label volume without an image; ignored", "restore the image or remove the label")
        self._issues = issues + groups.issues(self.root)
        require_cases(cases, self.root, "image/label volume pairs")
        return cases

    # -- format-specific pieces (``volume_pairs`` reads the same layouts through SimpleITK) -----
    def geometry(self, rel: str) -> dict[str, Any]:
        return self._geometry(load_nifti(self.root / rel))

    def affine(self, rel: str) -> np.ndarray:
        return load_nifti(self.root / rel).affine

    def _geometry(self, img) -> dict[str, Any]:
        shape = tuple(int(s) for s in img.shape[:3])
        if len(img.shape) != 3:
            raise DataError(f"expected a 3D volume, got shape {tuple(img.shape)}", path=img.get_filename(), fix="pass one 3D volume per file (choose the sequence in data.options)")
        zooms = [float(z) for z in img.header.get_zooms()[:3]]
        order = [self.axis] + [a for a in range(3) if a != self.axis]
        return {
            "stored_shape": list(shape),
            "shape": [shape[a] for a in order],
            "spacing": [zooms[a] for a in order],
            "axcodes": "".join(nib.aff2axcodes(img.affine)),
        }

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        if self._issues is None:
            self.cases()
        return list(self._issues or [])

    def _array(self, rel: str) -> np.ndarray:
        path = self.root / rel
        img = load_nifti(path)
        check_nifti_size(img, path)
        try:
            arr = np.asarray(img.dataobj)
        except (OSError, EOFError, ValueError, zlib.error) as e:
            raise _nib_error(path, e) from None
        except MemoryError:
            raise DataError(f"not enough memory to decode this {'x'.join(map(str, img.shape))} volume", path=path, fix="free memory, or run this task on a machine with more") from None
        if arr.ndim != 3:
            raise DataError(f"expected a 3D volume, got shape {arr.shape}", path=path, fix="pass one 3D volume per file")
        return np.moveaxis(arr, self.axis, 0)

    def load_image(self, case: Case) -> np.ndarray:
        return np.ascontiguousarray(self._array(case.image), dtype=np.float32)

    def raw_labels(self, case: Case) -> np.ndarray:
        return np.rint(self._array(case.target)).astype(np.int64)

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        if self.binarize:
            return (raw != 0).astype(np.int64)
        if self.label_map:
            lut_keys = np.array(sorted(self.label_map), dtype=np.int64)
            out = np.zeros(raw.shape, np.int64)
            pos = np.searchsorted(lut_keys, raw)
            pos = np.clip(pos, 0, len(lut_keys) - 1)
            hit = lut_keys[pos] == raw
            out[hit] = np.array([self.label_map[k] for k in lut_keys])[pos[hit]]
            return out
        return raw

    def load_target(self, case: Case) -> np.ndarray:
        return np.ascontiguousarray(self.map_labels(self.raw_labels(case)))

    def check(self, case: Case) -> list[Issue]:
        """Decode both volumes once; report unreadable files, shape mismatches, unknown labels."""
        try:
            img = self.load_image(case)
            raw = self.raw_labels(case)
        except DataError as e:
            return [issue_from(e, case.image, "replace the file")]
        issues = []
        where = str(self.root / case.target)
        if raw.shape != img.shape:
            issues.append(Issue(where, f"label volume {raw.shape} and image {img.shape} differ in shape", "re-export the label on the image grid"))
        else:
            ia, la = self.affine(case.image), self.affine(case.target)
            diff = affine_difference(ia, la)
            if diff is not None:
                orient = f"{''.join(nib.aff2axcodes(la))} vs the image's {''.join(nib.aff2axcodes(ia))}"
                issues.append(
                    Issue(
                        where,
                        f"label volume's affine differs from its image's ({self.root / case.image}): {diff}, orientation {orient}; the voxels would be paired off-grid",
                        "resample the label onto the image grid, or, if only the label's header is wrong, save it with the image's affine",
                    )
                )
        values = set(np.unique(raw).tolist())
        if self.label_map and not self.binarize:
            unknown = sorted(v for v in values - set(self.label_map) if v != 0)
            if unknown:
                issues.append(Issue(where, f"label values {unknown[:5]} are not in data.options.label_map; read as background", "fix the label volume or extend label_map", fatal=False))
        elif not self.binarize and self.classes:
            bad = sorted(v for v in values if v < 0 or v >= len(self.classes))
            if bad:
                issues.append(Issue(where, f"label values {bad[:5]} are outside the task's {len(self.classes)} classes", "fix the label volume or the task's classes"))
        if len(values) > 64 and img.size and len(np.unique(img[:: max(1, len(img) // 8)])) <= 8:
            issues.append(Issue(where, f"this label volume holds {len(values)} distinct values and its image ({case.image}) only a few: are images and labels swapped?", "if so, exchange data.options.images and data.options.label", fatal=False))
        return issues


def preset(name: str, doc: str, **defaults: Any) -> type[NiftiPairs]:
    cls = type(f"{name.title().replace('_', '')}Reader", (NiftiPairs,), {"defaults": defaults, "__doc__": doc, "__module__": __name__})
    globals()[cls.__name__] = cls  # importable by name, so readers pickle into spawned loader workers
    READERS.add(name, cls)
    return cls


preset(
    "brats2018",
    "BraTS-2018 training data: ``{HGG,LGG}/<subject>/<subject>_<seq>.nii.gz`` + ``<subject>_seg.nii.gz`` "
    "(labels 0/1/2/4); one sequence per case (pattern), whole tumour = seg > 0.",
    images="*/*/*_flair.nii.gz",
    pattern=r"(?P<grade>HGG|LGG)/(?P<subject>[^/]+)/(?P=subject)_flair\.nii\.gz",
    id="{subject}",
    label="{grade}/{subject}/{subject}_seg.nii.gz",
    binarize=True,
    slice_axis=2,
)
preset(
    "mmwhs",
    "MMWHS 2017 training volumes: ``<mod>_train/<mod>_train_NNNN_image.nii.gz`` + ``_label.nii.gz``; "
    "labels 205/420/500/550/600/820/850 -> 1..7 (420 = left atrium = class 2).",
    images="*_train/*_train_*_image.nii.gz",
    pattern=r"(?P<folder>(?:ct|mr)_train)/(?P<vol>(?:ct|mr)_train_\d+)_image\.nii\.gz",
    id="{vol}",
    label="{folder}/{vol}_label.nii.gz",
    label_map={205: 1, 420: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7},
    slice_axis=2,
)
preset(
    "prostate_msnet",
    "Multi-site prostate MRI (MS-Net/SAML layout): ``<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz`` "
    "(some sites spell it ``_Segmentation``); case id ``<SITE>/CaseNN``.",
    images="*/Case*.nii*",
    pattern=r"(?P<site>[A-Za-z0-9]+)/(?P<case>Case\d+)\.nii(?:\.gz)?",
    id="{site}/{case}",
    site="{site}",
    label=["{site}/{case}_segmentation.nii.gz", "{site}/{case}_Segmentation.nii.gz", "{site}/{case}_segmentation.nii", "{site}/{case}_Segmentation.nii"],
    binarize=True,
    slice_axis=2,
)
preset(
    "decathlon",
    "Medical Segmentation Decathlon style: ``imagesTr/<name>.nii.gz`` + ``labelsTr/<name>.nii.gz`` "
    "(folder names are options: the shared hippocampus copy uses images/ and labels/).",
    images="imagesTr/*.nii.gz",
    pattern=r"(?P<folder>[^/]+)/(?P<vol>[^/.][^/]*)\.nii\.gz",
    id="{vol}",
    label="labelsTr/{vol}.nii.gz",
    slice_axis=2,
)
