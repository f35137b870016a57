"""What ``lvmbench task new`` can tell from a dataset folder: reader, data options, classes, split.

Everything here is a guess the user reviews (the scaffold prints what is left to check); it reads
file names, table headers and a few pixels, never the whole dataset:

- classification: a table (CSV/TSV/XLSX) whose column names image files -> ``manifest`` (label,
  group and split columns picked by name and value counts; one-hot label columns recognised; legend
  and footer rows, whose label cell is empty or unlike the other rows' and which name no image,
  left out through ``skip_labels``);
  else one folder per class (optionally under split folders) -> ``class_folders``;
- segmentation: the two folders sharing the most file stems (a ``_mask``-style suffix allowed) ->
  ``paired_images`` (2D) or ``nifti_pairs``/``volume_pairs`` (3D); which side holds the masks is
  decided by the pixels, not the folder names; classes from the masks' values; or one folder per
  case (``case01/image.png + case01/mask.png`` and its variants, ``per_case``);
- detection: a COCO JSON -> ``coco``; ``*.xml`` VOC annotations -> ``voc``; a table with four
  coordinate columns -> ``csv_boxes``.
"""

from __future__ import annotations

from pathlib import Path

from lvmbench.errors import UserError
from lvmbench.scaffold_infer.classification import classification
from lvmbench.scaffold_infer.common import IMAGE_EXT, VOLUME_EXT, Inferred, ext_of, stem_of  # noqa: F401 (the package's API)
from lvmbench.scaffold_infer.detection import detection
from lvmbench.scaffold_infer.segmentation import segmentation


def infer(family: str, root: Path) -> Inferred:
    if family == "classification":
        return classification(root)
    if family == "segmentation":
        return segmentation(root)
    if family == "detection":
        return detection(root)
    raise UserError(f"family '{family}' is not one of classification, segmentation, detection", fix="pass --family classification|segmentation|detection")
