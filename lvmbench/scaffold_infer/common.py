"""Shared pieces of the inference: file-name words, extensions, the ``Inferred`` record."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
VOLUME_EXT = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "testing": "test"}
LABEL_NAMES = ("label", "labels", "class", "classes", "diagnosis", "dx", "target", "category", "grade", "finding", "y")
GROUP_NAMES = ("patient", "patient_id", "patientid", "subject", "subject_id", "lesion", "lesion_id", "group", "case", "case_id", "study", "video", "sequence", "seq")
MASK_SUFFIXES = ("", "_mask", "_masks", "_seg", "_segmentation", "_label", "_labels", "_gt", "-mask", "_Segmentation")


@dataclass
class Inferred:
    reader: str
    options: dict[str, Any]
    classes: list[str]
    dims: str = "2d"
    split: dict[str, Any] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)


def ext_of(name: str) -> str:
    low = name.lower()
    for e in VOLUME_EXT:
        if low.endswith(e):
            return name[-len(e):]
    return os.path.splitext(name)[1]


def stem_of(name: str) -> str:
    e = ext_of(name)
    return name[: -len(e)] if e else name


def natural(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))
