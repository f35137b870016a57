"""2D segmentation layouts: an image file paired with one or more mask files.

One configurable reader, ``paired_images``, and one preset per publisher layout (ISIC-2018 Task 1,
Kvasir-SEG, DRIVE, CHASE_DB1, BUSI, JSRT + SCR masks) whose defaults any ``data.options`` key in the
task overrides. Options (templates: see ``seg_layout``):

- ``images``: glob(s) of image files; ``pattern``: regex with named groups; ``exclude``: regexes of
  paths to leave out (images and masks; BUSI's ``normal`` folder for the paper's BUID task).
- ``id`` / ``split``: templates for the case id (default ``{name}``) and the publisher's split (DRIVE
  training/test); ``group``: the patient/video group (default: the id), a template or any group
  source of ``groups`` (a mapping file, a regex, numeric ranges of frame numbers).
- The folder names are free: ``images: images/*.png, masks: "labels/{stem}.png"`` or a publisher
  copy whose ``images/`` holds the masks (``images: masks/*.png, masks: "images/{name}"``); ``check``
  warns when the mask side looks like photographs or the image side looks binary.
- ``masks``: a template, or a list of ``{path, label, threshold, required}``: each mask file is
  read as stored (see ``mask_values``) and painted with ``label`` in list order (later masks win
  where they overlap; several files matching one template are united).
- ``threshold``: default threshold (Kvasir's JPEG masks: 128). A mask file whose largest value is
  above it is grey-level (0/255, JPEG noise near 0 and 255) and binarised with ``value >
  threshold``; a file whose values stay at or below it holds labels: 0/1 (painted with ``label``)
  or, for a single mask template, class indices 0..N-1 taken as they are. Anything else (0/7 in a
  2-class task) is refused rather than read as background.
- ``fov``: template of a field-of-view mask (DRIVE), kept in ``case.meta['fov']``.
- ``image_mode``: ``RGB`` or ``L``; ``match_size: mask`` resizes the image to its mask (SCR masks
  are 1024² for 2048² JSRT films); ``resize_masks: true`` resizes (nearest) masks whose size differs
  from their image's instead of refusing them (``check`` still reports each one); ``raw``: ``{shape, dtype, bits, invert}`` decodes headerless
  ``.IMG`` files (JSRT: 2048² 12-bit big-endian).
- ``classes``: the task's class names (label range check), filled in from the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from lvmbench.data.cases import READERS, Case, DatasetReader, Issue, checked_options, issue_from
from lvmbench.data.contained import InsidePath, InsidePathOrList
from lvmbench.data.content_hints import swapped_sides
from lvmbench.data.imageio import image_size, read_image, read_mask
from lvmbench.data.reader_options import Bool, Int, ReaderOptions, Str
from lvmbench.data.readers.groups import GroupResolver, GroupSource
from lvmbench.data.readers.seg_layout import Layout, fill, require_cases, unpaired_issues
from lvmbench.errors import DataError, UserError

OPTIONS = {"images", "pattern", "exclude", "id", "group", "split", "masks", "threshold", "fov", "image_mode", "match_size", "resize_masks", "raw", "classes"}


class MaskEntry(ReaderOptions):
    path: InsidePathOrList = Field(description="template (or alternatives) of the mask file(s)")
    label: Int = Field(1, ge=0, description="class painted where this mask is set")
    threshold: Int | None = Field(None, ge=0, description="grey-level threshold of this mask (default: data.options.threshold)")
    required: Bool = Field(True, description="an image without this mask is left out")


class RawSpec(ReaderOptions):
    shape: list[Int] = Field(min_length=2, max_length=2, description="rows, columns of the headerless image")
    dtype: Str = Field(">u2", description="numpy dtype of the stored pixels")
    bits: Int = Field(12, ge=1, le=32, description="bits used per pixel (scales to 0-255)")
    invert: Bool = Field(False, description="bright-is-low storage")


class PairedImagesOptions(ReaderOptions):
    images: InsidePathOrList = Field(description="glob(s) of the image files, relative to the dataset folder (any folder name)")
    pattern: Str | None = Field(None, description="regex with named groups over each image's relative path")
    exclude: list[Str] = Field(default_factory=list, description="regexes of paths to leave out")
    id: Str = Field("{name}", description="template of the case id")
    group: GroupSource | None = Field(None, description="patient/video group: template or group source (default: the id)")
    split: Str | None = Field(None, description="template of the publisher split (for split.source: publisher)")
    masks: InsidePathOrList | list[InsidePath | MaskEntry] = Field(description="template of the mask file (any folder name), or a list of {path, label, threshold, required}")
    threshold: Int | None = Field(None, ge=0, description="masks above it are grey-level and thresholded (default 127); at or below: labels")
    fov: InsidePath | None = Field(None, description="template of a field-of-view mask (DRIVE)")
    image_mode: Literal["RGB", "L"] = Field("RGB", description="decode images as RGB or greyscale")
    match_size: Literal["mask"] | None = Field(None, description="mask: resize the image to its mask")
    resize_masks: Bool = Field(False, description="resize masks of another size to the image (nearest) instead of refusing them")
    raw: RawSpec | None = Field(None, description="decode headerless .IMG files: {shape, dtype, bits, invert}")
    classes: list[Str] = Field(default_factory=list, description="the task's classes (filled in from the task)")


@dataclass(frozen=True)
class MaskSpec:
    path: str | tuple[str, ...]
    label: int = 1
    threshold: int = 127
    required: bool = True

    @classmethod
    def parse(cls, value: Any, threshold: int | None) -> "MaskSpec":
        thr = 127 if threshold is None else int(threshold)
        if isinstance(value, str):
            return cls(value, 1, thr)
        if isinstance(value, dict) and "path" in value:
            path = value["path"] if isinstance(value["path"], str) else tuple(value["path"])
            return cls(path, int(value.get("label", 1)), int(value.get("threshold", thr)), bool(value.get("required", True)))
        raise UserError(f"data option 'masks' entry {value!r} is neither a template nor a {{path, label}} mapping", fix="see lvmbench/data/readers/segmentation2d.py")


def read_raw(path: Path, shape: list[int], dtype: str = ">u2", bits: int = 12, invert: bool = False) -> np.ndarray:
    """A headerless raw image (JSRT ``.IMG``) -> HxW uint8, scaled by the bit depth (not min-max)."""
    dt = np.dtype(dtype)
    want = int(np.prod(shape)) * dt.itemsize
    have = path.stat().st_size if path.is_file() else -1
    if have < 0:
        raise DataError("file not found", path=path, fix="restore the file or remove the case from the dataset")
    if have != want:
        raise DataError(
            f"raw image has {have} bytes, expected {want} for {shape[0]}x{shape[1]} {dt.str}",
            path=path,
            fix="re-download the file, or set data.options.raw.shape/dtype to the file's format",
        )
    top = float(2**bits - 1)
    a = np.clip(np.fromfile(path, dtype=dt).reshape(shape).astype(np.float32), 0, top)
    if invert:
        a = top - a
    return np.round(a * (255.0 / top)).astype(np.uint8)


@READERS.register("paired_images")
class PairedImages(DatasetReader):
    """Images paired with mask files by templates (any folder names), with a group source."""

    kind = "segmentation"
    defaults: ClassVar[dict[str, Any]] = {}
    Options = PairedImagesOptions
    example = {
        "reader": "paired_images",
        "dir": "polyp_frames",
        "options": {"images": "frames/*.png", "masks": "labels/{stem}.png", "id": "{stem}", "group": {"input": "{stem}", "ranges": [{"from": 1, "to": 25, "group": "seq01"}, {"from": 26, "to": 50, "group": "seq02"}]}},
    }

    def __init__(self, root: str | Path, **options: Any):
        opts = checked_options(self.defaults, options, OPTIONS, "2D segmentation reader", "masks", "set data.options.masks in the task")
        super().__init__(root, **opts)
        self.layout = Layout(self.root, opts.get("images") or [], opts.get("pattern"), opts.get("exclude") or ())
        masks = opts["masks"] if isinstance(opts["masks"], list) else [opts["masks"]]
        self.masks = [MaskSpec.parse(m, opts.get("threshold")) for m in masks]
        self.classes = list(opts.get("classes") or [])
        self.image_mode = opts.get("image_mode", "RGB")
        self.match_size = opts.get("match_size")
        self.resize_masks = bool(opts.get("resize_masks", False))
        self.raw = dict(opts["raw"]) if opts.get("raw") else None
        self.group = GroupSource.model_validate(opts["group"]) if opts.get("group") is not None else None
        self._issues: list[Issue] | None = None

    # -- listing -------------------------------------------------------------------------------
    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder that holds the dataset (see `lvmbench tasks`)")
        o = self.options
        matched, unmatched = self.layout.scan()
        cases: list[Case] = []
        issues: list[Issue] = []
        referenced: set[str] = set()
        groups = GroupResolver(self.group, self.root)
        for rel, f in matched:
            found = [self.layout.resolve(m.path, f, "masks") for m in self.masks]
            missing = [m for m, hits in zip(self.masks, found) if m.required and not hits]
            if missing:
                want = fill(missing[0].path if isinstance(missing[0].path, str) else missing[0].path[0], f, "masks")
                issues.append(Issue(str(self.root / rel), f"image without its mask (expected {want}); left out", "restore the mask or remove the image", fatal=False))
                continue
            cid = fill(o.get("id", "{name}"), f, "id")
            meta: dict[str, Any] = {"mask_files": [list(h) for h in found]}
            if o.get("split"):
                meta["split"] = fill(o["split"], f, "split")
            if o.get("fov"):
                fov = self.layout.resolve(o["fov"], f, "fov")
                meta["fov"] = fov[0] if fov else None
                if not fov:
                    issues.append(Issue(str(self.root / rel), "no field-of-view mask", "restore the FOV mask (only needed for FOV-restricted scoring)", fatal=False))
            flat = [p for hits in found for p in hits]
            referenced.update(flat)
            group = groups({**f, "id": cid}, cid)
            cases.append(Case(id=cid, group=group, image=rel, target=flat[0] if flat else None, files=(rel, *flat), meta=meta))
        ids = [c.id for c in cases]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"two images give the same case id '{dup}'", path=self.root, fix="make data.options.id unique (e.g. include {parent})")
        # a file that is some image's mask is no stray (one folder per case: case01/case01.png and
        # case01/case01_mask.png both fit the images glob */*.png)
        strays = [u for u in unmatched if u not in referenced]
        issues = unpaired_issues(self.root, strays, "fits the images glob but not the layout pattern; ignored", "rename it or adjust data.options.pattern") + issues
        for m in self.masks:
            orphans = self.layout.candidates(m.path, near=referenced) - referenced
            issues += unpaired_issues(self.root, orphans, "mask without an image; ignored", "restore the image or remove the mask")
        self._issues = issues + groups.issues(self.root)
        require_cases(cases, self.root, "image/mask pairs")
        return cases

    def dataset_checks(self, cases: list[Case]) -> list[Issue]:
        if self._issues is None:
            self.cases()
        return list(self._issues or [])

    # -- decoding ------------------------------------------------------------------------------
    def load_image(self, case: Case) -> np.ndarray:
        path = self.root / case.image
        if self.raw and path.suffix.lower() == ".img":
            arr = read_raw(path, **self.raw)
        else:
            arr = read_image(path, self.image_mode)
        if self.match_size == "mask" and case.meta.get("mask_files") and case.meta["mask_files"][0]:
            h, w = image_size(self.root / case.meta["mask_files"][0][0])
            if arr.shape[:2] != (h, w):
                arr = np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
        return arr[..., None] if arr.ndim == 2 else arr

    def _image_hw(self, case: Case) -> tuple[int, int]:
        if self.raw and case.image.lower().endswith(".img"):
            return int(self.raw["shape"][0]), int(self.raw["shape"][1])
        return image_size(self.root / case.image)

    def mask_values(self, m: np.ndarray, spec: MaskSpec, path: Path) -> tuple[np.ndarray, np.ndarray | int] | None:
        """Where one mask file paints and with what: (where, label or per-pixel labels); None when
        it is empty. Grey-level files are thresholded, label-valued files read as labels."""
        top = int(m.max()) if m.size else 0
        if top <= 0:
            return None
        if top > spec.threshold:  # 0/255 (and JPEG noise near both ends)
            return m > spec.threshold, spec.label
        if top == 1:  # 0/1: the common re-export of a binary mask
            return m == 1, spec.label
        n = len(self.classes)
        if len(self.masks) == 1 and spec.label == 1 and (not n or top < n) and int(m.min()) >= 0:
            where = m > 0  # one file holding class indices
            return where, m[where].astype(np.int64)
        classes = f"the task's class indices 0..{n - 1}" if n else "class indices"
        raise DataError(
            f"mask values go up to {top}: neither binary (0/1, or grey above the threshold {spec.threshold}) nor {classes}",
            path=path,
            fix="re-export the mask as 0/255 or as class indices, or set data.options.threshold below its foreground value",
        )

    def load_target(self, case: Case) -> np.ndarray:
        out: np.ndarray | None = None
        first = None
        hw = self._image_hw(case) if self.resize_masks else None
        for spec, files in zip(self.masks, case.meta["mask_files"]):
            for f in files:
                m = read_mask(self.root / f)
                if hw is not None and m.shape != hw:
                    m = np.asarray(Image.fromarray(m.astype(np.int32)).resize((hw[1], hw[0]), Image.NEAREST))  # mode I: 16-bit labels survive
                if out is None:
                    out, first = np.zeros(m.shape, np.int64), f
                elif m.shape != out.shape:
                    raise DataError(f"mask is {m.shape[1]}x{m.shape[0]} but {first} is {out.shape[1]}x{out.shape[0]}", path=self.root / f, fix="re-export the masks at one size")
                paint = self.mask_values(m, spec, self.root / f)
                if paint is not None:
                    out[paint[0]] = paint[1]
        if out is None:  # only optional masks, none present: all background
            out = np.zeros(self._image_hw(case), np.int64)
        return out

    def check(self, case: Case) -> list[Issue]:
        """Decode image and mask once; report unreadable files, size mismatches, labels out of range."""
        try:
            img = self.load_image(case)
            tgt = self.load_target(case)
        except DataError as e:
            return [issue_from(e, case.image, "replace the file")]
        issues = []
        if self.resize_masks:
            hw = self._image_hw(case)
            for f in (p for files in case.meta["mask_files"] for p in files):
                mh, mw = image_size(self.root / f)
                if (mh, mw) != hw:
                    issues.append(Issue(str(self.root / f), f"mask is {mw}x{mh}, image {hw[1]}x{hw[0]}; resized (nearest) to the image", "re-export the mask at the image size", fatal=False))
        if tgt.shape != img.shape[:2]:
            issues.append(Issue(str(self.root / case.image), f"image {img.shape[:2]} and mask {tgt.shape} differ in size", "re-export the mask at the image size"))
        if self.classes and tgt.size and int(tgt.max()) >= len(self.classes):
            issues.append(Issue(str(self.root / case.image), f"mask label {int(tgt.max())} is outside the task's {len(self.classes)} classes", "fix data.options.masks labels or the task's classes"))
        first_mask = next((p for files in case.meta["mask_files"] for p in files), None)
        if first_mask is not None:
            issues += swapped_sides(self.root / case.image, img, self.root / first_mask, read_mask(self.root / first_mask))
        return issues


def preset(name: str, doc: str, **defaults: Any) -> type[PairedImages]:
    """Register a publisher layout: ``paired_images`` with these defaults."""
    cls = type(f"{name.title().replace('_', '')}Reader", (PairedImages,), {"defaults": defaults, "__doc__": doc, "__module__": __name__})
    globals()[cls.__name__] = cls  # importable by name, so readers pickle into spawned loader workers
    READERS.add(name, cls)
    return cls


preset(
    "isic2018",
    "ISIC-2018 Task 1: ``ISIC2018_Task1-2_Training_Input/ISIC_NNNNNNN.jpg`` + ``ISIC2018_Task1_Training_GroundTruth/ISIC_NNNNNNN_segmentation.png`` (0/255).",
    images="ISIC2018_Task1-2_Training_Input/ISIC_*.jpg",
    id="{stem}",
    masks="ISIC2018_Task1_Training_GroundTruth/{stem}_segmentation.png",
)
preset(
    "kvasir_seg",
    "Kvasir-SEG: ``images/<id>.jpg`` + ``masks/<id>.jpg`` (JPEG masks, threshold 128); ids are file names, as in LVM-Med's Kvasir.json.",
    images="images/*.jpg",
    masks="masks/{name}",
    threshold=128,
)
preset(
    "drive",
    "DRIVE: ``{training,test}/images/NN_{training,test}.tif``, ``1st_manual/NN_manual1.gif``, FOV ``mask/NN_*_mask.gif``.",
    images=["training/images/*.tif", "test/images/*.tif", "testing/images/*.tif"],
    pattern=r"(?P<folder>training|test|testing)/images/(?P<num>\d+)_(?P<kind>training|test)\.tif",
    id="{num}_{kind}",
    split="{folder}",
    masks="{folder}/1st_manual/{num}_manual1.gif",
    fov="{folder}/mask/{num}_{kind}_mask.gif",
)
preset(
    "chase_db1",
    "CHASE_DB1: ``Image_NN{L,R}.jpg`` + ``Image_NN{L,R}_1stHO.png``; both eyes of one child form one group.",
    images="Image_*.jpg",
    pattern=r"Image_(?P<child>\d+)(?P<eye>[LR])\.jpg",
    id="{stem}",
    group="child{child}",
    masks="Image_{child}{eye}_1stHO.png",
)
preset(
    "busi",
    "BUSI: ``<class>/<class> (<n>).png`` + one or more ``<class> (<n>)_mask*.png`` (united); LVM-Med's BUID drops ``normal``.",
    images="*/* (*).png",
    pattern=r"(?P<cls>benign|malignant|normal)/(?P=cls) \((?P<n>\d+)\)\.png",
    exclude=["^normal/"],
    masks="{cls}/{cls} ({n})_mask*.png",
)
preset(
    "jsrt_scr",
    "JSRT films ``All247images/JPCxNNNN.IMG`` (2048² 12-bit big-endian raw) + SCR masks "
    "``SCR/fold*/masks/<organ>/<id>.gif`` (1024²): lungs=1, heart=2, clavicles=3.",
    images="All247images/*.IMG",
    id="{stem}",
    image_mode="L",
    match_size="mask",
    raw={"shape": [2048, 2048], "dtype": ">u2", "bits": 12, "invert": True},
    masks=[
        {"path": "SCR/fold*/masks/left lung/{stem}.gif", "label": 1},
        {"path": "SCR/fold*/masks/right lung/{stem}.gif", "label": 1},
        {"path": "SCR/fold*/masks/heart/{stem}.gif", "label": 2},
        {"path": "SCR/fold*/masks/left clavicle/{stem}.gif", "label": 3},
        {"path": "SCR/fold*/masks/right clavicle/{stem}.gif", "label": 3},
    ],
)
