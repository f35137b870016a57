"""VinDr-CXR: ``train/<image_id>.dicom`` (PhysioNet / Kaggle competition) or the Kaggle 512-px PNG
export (``train/<image_id>.png``, awsaf49/vinbigdata-512-image-dataset) + ``train.csv``.

The CSV has one row per (image, radiologist, finding): ``image_id, class_name, class_id, rad_id,
x_min, y_min, x_max, y_max`` and, in the PNG export, the original ``width, height`` the boxes refer
to. As LVM-Med's ``object_detection/convert_to_coco.py`` did:

- "No finding" rows (class 14) are dropped, and with them every image that has no other row
  (``keep_negatives: true`` keeps those images as box-free cases instead);
- the radiologists' boxes of one image are fused per class with Weighted Box Fusion
  (``ensemble_boxes.weighted_boxes_fusion``, ``iou_thr`` 0.2, ``skip_box_thr`` 1e-4, all scores 1, so a
  fused box is the mean of its cluster); ``fusion: none`` keeps every radiologist's box;
- ``csv_order_split: [0.7, 0.1, 0.2]`` reproduces its split: unique images in order of first
  appearance, cut 70/10/20 into ``train``/``valid``/``test`` (``meta['split']``; LVM-Med computed a
  shuffled index and never used it, so the cut follows the CSV order).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ensemble_boxes import weighted_boxes_fusion
from pydantic import Field

from lvmbench.data.cases import READERS, Box, Case, Issue
from lvmbench.data.contained import InsidePath
from lvmbench.data.imageio import read_image
from lvmbench.data.reader_options import Bool, Float, Str
from lvmbench.data.readers.detection import DICOM_SUFFIXES, IMAGE_SUFFIXES, BoxOptions, BoxReader, _norm, _scale, image_size, read_dicom
from lvmbench.errors import DataError

REQUIRED = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")


@READERS.register("vindr_cxr")
class VinDrCXR(BoxReader):
    """Options: ``images`` (folder), ``csv`` (file), ``fusion`` (wbf | none), ``wbf_iou`` (0.2),
    ``wbf_skip`` (1e-4), ``keep_negatives`` (false), ``no_finding`` (class name of the negative
    rows), ``csv_order_split`` (fractions for train/valid/test, or null)."""

    class Options(BoxOptions):
        images: InsidePath = Field("train", description="image folder (DICOM or PNG)")
        csv: InsidePath = Field("train.csv", description="annotation CSV")
        fusion: Literal["wbf", "none"] = Field("wbf", description="fuse the radiologists' boxes per class (weighted box fusion) or keep every box")
        wbf_iou: Float = Field(0.2, gt=0, le=1, description="fusion IoU threshold")
        wbf_skip: Float = Field(1e-4, ge=0, le=1, description="fusion score threshold")
        keep_negatives: Bool = Field(False, description="keep images with only 'No finding' rows as box-free cases")
        no_finding: Str = Field("No finding", description="class name of the negative rows")
        csv_order_split: list[Float] | None = Field(None, min_length=3, max_length=3, description="train/valid/test fractions cut in CSV order (LVM-Med), or null")

    example = {"reader": "vindr_cxr", "dir": "vinbigdata", "options": {"images": "train", "csv": "train.csv", "csv_order_split": [0.7, 0.1, 0.2]}}

    def __init__(self, root, images="train", csv="train.csv", fusion="wbf", wbf_iou=0.2, wbf_skip=1e-4, keep_negatives=False, no_finding="No finding", csv_order_split=None, **options):
        super().__init__(root, **options)
        if fusion not in ("wbf", "none"):
            raise DataError(f"fusion '{fusion}' is not one of wbf, none", path=root, fix="set data.options.fusion to wbf or none")
        self.images = images
        self.csv = csv
        self.fusion = fusion
        self.wbf_iou = float(wbf_iou)
        self.wbf_skip = float(wbf_skip)
        self.keep_negatives = bool(keep_negatives)
        self.no_finding = _norm(no_finding)
        self.csv_order_split = list(csv_order_split) if csv_order_split else None

    def _rows(self) -> tuple[list[dict[str, str]], Path]:
        path = self.root / self.csv
        if not path.is_file():
            raise DataError("annotation CSV not found", path=path, fix="place VinDr-CXR's train.csv in the dataset folder")
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(f"CSV lacks column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames or [])})", path=path, fix="use VinDr-CXR's train.csv (image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max)")
                return list(reader), path
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"not a readable CSV ({e})", path=path, fix="re-download train.csv") from None

    def cases(self) -> list[Case]:
        self.require_root("point --data-root at the folder holding VinDr-CXR (train/ and train.csv)")
        self._dropped = []
        rows, path = self._rows()
        img_dir = self.root / self.images
        if not img_dir.is_dir():
            raise DataError("image folder not found", path=img_dir, fix="check data.options.images in the task")
        files = {f.stem: f for f in img_dir.iterdir() if f.suffix.lower() in DICOM_SUFFIXES + IMAGE_SUFFIXES}
        order: dict[str, None] = {}  # insertion-ordered set: first appearance in the CSV
        boxes: dict[str, list[tuple]] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for i, r in enumerate(rows, start=2):
            iid = (r.get("image_id") or "").strip()
            if not iid:
                raise DataError(f"line {i}: empty image_id", path=path, fix="correct the CSV")
            negative = _norm(r.get("class_name") or "") == self.no_finding
            if iid not in boxes:
                boxes[iid] = []
            if negative and not self.keep_negatives:
                continue
            order.setdefault(iid)
            if r.get("width") and r.get("height"):
                sizes[iid] = (int(float(r["height"])), int(float(r["width"])))
            if negative:
                continue
            label = self.label_of(r["class_name"], f"{path} line {i}")
            try:
                x1, y1, x2, y2 = (float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
            except ValueError:
                raise DataError(f"line {i}: non-numeric box for '{r['class_name']}'", path=path, fix="correct the CSV row") from None
            box = self.make_box(x1, y1, x2, y2, label, f"{path} line {i}")
            if box is not None:
                boxes[iid].append((box.x1, box.y1, box.x2, box.y2, box.label, (r.get("rad_id") or "").strip()))
        # Images whose rows were all "No finding" leave an empty list and are not in ``order``.
        out: list[Case] = []
        missing = 0
        for iid in order:
            f = files.get(iid)
            if f is None:
                missing += 1
                if missing <= 20:
                    self._dropped.append(Issue(str(img_dir / f"{iid}.dicom"), "listed in the CSV but no image file; case skipped", "restore the image", fatal=False))
                continue
            rel = f.relative_to(self.root).as_posix()
            # ``box_frame``: the (h, w) the CSV boxes refer to (the PNG export's originals); rescaling to
            # the decoded image is expected there, so it is not reported as a size mismatch.
            meta: dict[str, Any] = {"box_frame": sizes.get(iid), "readers": len({b[5] for b in boxes[iid]})}
            out.append(Case(id=iid, group=iid, image=rel, target=tuple(boxes[iid]), files=(rel, self.csv), meta=meta))
        if missing > 20:
            self._dropped.append(Issue(str(img_dir), f"{missing} images listed in the CSV are missing in all", "check --data-root", fatal=False))
        if not out:
            raise DataError("no image of the CSV was found", path=img_dir, fix="check data.options.images and that files are named <image_id>.dicom/.png")
        if self.csv_order_split:
            out = self._paper_split(out)
        return out

    def _paper_split(self, cases: list[Case]) -> list[Case]:
        fr = self.csv_order_split or []
        if len(fr) != 3 or abs(sum(fr) - 1) > 1e-6:
            raise DataError(f"csv_order_split {fr} must be three fractions summing to 1", path=self.root / self.csv, fix="e.g. [0.7, 0.1, 0.2]")
        n = len(cases)
        a, b = int(fr[0] * n), int((fr[0] + fr[1]) * n)
        names = ["train"] * a + ["valid"] * (b - a) + ["test"] * (n - b)
        return [Case(c.id, c.group, c.image, c.target, c.label, c.files, {**c.meta, "split": s}) for c, s in zip(cases, names)]

    def load_image(self, case: Case) -> np.ndarray:
        path = self.root / case.image
        if path.suffix.lower() in DICOM_SUFFIXES:
            return read_dicom(path)[..., None]
        return read_image(path, "L")[..., None]

    def load_target(self, case: Case) -> list[Box]:
        path = self.root / case.image
        decoded = image_size(path)
        frame = tuple(case.meta["box_frame"]) if case.meta.get("box_frame") else decoded
        rows = list(case.target or ())
        if not rows:
            return []
        if self.fusion == "none":
            boxes = [Box(*r[:5]) for r in rows]
        else:
            boxes = self.fuse(rows, frame)
        return _scale(boxes, frame, decoded)

    def fuse(self, rows: list[tuple], frame: tuple[int, int]) -> list[Box]:
        """Weighted Box Fusion of all radiologists' boxes, class by class, in normalised coordinates."""
        h, w = frame
        arr = np.array([r[:4] for r in rows], np.float64) / np.array([w, h, w, h], np.float64)
        arr = np.clip(arr, 0.0, 1.0)
        labels = [int(r[4]) for r in rows]
        fused, _, flabels = weighted_boxes_fusion([arr.tolist()], [[1.0] * len(rows)], [labels], iou_thr=self.wbf_iou, skip_box_thr=self.wbf_skip)
        out = []
        for b, lab in zip(fused, flabels):
            x1, y1, x2, y2 = float(b[0]) * w, float(b[1]) * h, float(b[2]) * w, float(b[3]) * h
            if x2 > x1 and y2 > y1:  # clipping can flatten a box lying outside the image
                out.append(Box(x1, y1, x2, y2, int(lab)))
        return out
