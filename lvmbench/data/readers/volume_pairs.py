"""3D segmentation from paired volumes in any format SimpleITK reads: NIfTI, NRRD (``.nrrd``,
``.nhdr``), MetaImage (``.mha``, ``.mhd``), multi-frame DICOM files and DICOM series (a folder of
``.dcm`` slices is one volume).

The layout, group, split, label and site options are those of ``nifti_pairs`` (``volumes``); the
``images`` glob may match folders (DICOM series) and so may the ``label`` template. Arrays come
back in the stored voxel order (i, j, k), as nibabel gives them, so ``slice_axis`` means the same
for every format; geometry is compared in RAS, as for NIfTI. A volume's size is checked against
``LVMBENCH_MAX_VOLUME_VOXELS`` from its header before anything is decoded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from pydantic import Field

from lvmbench.data.cases import READERS
from lvmbench.data.reader_options import Str
from lvmbench.data.readers.seg_layout import Layout
from lvmbench.data.readers.volumes import MAX_VOXELS_ENV, OPTIONS, NiftiPairs, VolumeOptions, max_volume_voxels
from lvmbench.errors import DataError


class VolumePairsOptions(VolumeOptions):
    series_id: Str | None = Field(None, description="DICOM folders holding several series: the SeriesInstanceUID to read (default: the folder's only series)")


def _sitk_message(e: Exception) -> str:
    text = str(e)
    m = re.search(r"ITK ERROR: [^:]*: ([^\n]+)", text)
    line = m.group(1) if m else next((ln.strip() for ln in text.splitlines() if ln.strip()), e.__class__.__name__)
    return line[:140]


class _Info:
    """Header facts of one volume: size (i, j, k), spacing, origin, direction (row-major 3x3)."""

    def __init__(self, size, spacing, origin, direction, components: int, files: list[str]):
        self.size = tuple(int(s) for s in size)
        self.spacing = tuple(float(s) for s in spacing)
        self.origin = tuple(float(o) for o in origin)
        d = np.asarray(direction if direction is not None else (), np.float64)
        self.direction = d.reshape(len(self.size), len(self.size)) if d.size == len(self.size) ** 2 else np.eye(len(self.size))
        self.components = components
        self.files = files

    def ras_affine(self) -> np.ndarray:
        """The voxel -> RAS affine (ITK's physical space is LPS)."""
        a = np.eye(4)
        a[:3, :3] = self.direction[:3, :3] * np.asarray(self.spacing[:3])[None, :]
        a[:3, 3] = self.origin[:3]
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a


@READERS.register("volume_pairs")
class VolumePairs(NiftiPairs):
    """Image volumes paired with label volumes in any SimpleITK format, DICOM series included."""

    Options = VolumePairsOptions
    option_names: ClassVar[set[str]] = OPTIONS | {"series_id"}
    example = {
        "reader": "volume_pairs",
        "dir": "kidney_ct",
        "options": {"images": "patients/*/ct", "pattern": "patients/(?P<pid>[^/]+)/ct", "id": "{pid}", "label": "patients/{pid}/seg.nrrd", "group": "{pid}"},
    }

    def __init__(self, root: str | Path, **options: Any):
        super().__init__(root, **options)
        o = self.options
        self.layout = Layout(self.root, o.get("images") or [], o.get("pattern"), o.get("exclude") or (), dirs=True)
        self.series_id = o.get("series_id")
        self._infos: dict[str, _Info] = {}

    # -- headers ---------------------------------------------------------------------------
    def _series_files(self, folder: Path) -> list[str]:
        ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        if not ids:
            raise DataError("folder holds no DICOM series", path=folder, fix="point the images glob / label template at the series folders (or at volume files)")
        if self.series_id is not None:
            if self.series_id not in ids:
                raise DataError(f"series {self.series_id} is not in this folder (it has {', '.join(ids[:3])})", path=folder, fix="correct data.options.series_id")
            sid = self.series_id
        elif len(ids) > 1:
            raise DataError(f"folder holds {len(ids)} DICOM series ({', '.join(ids[:3])})", path=folder, fix="keep one series per folder, or name it in data.options.series_id")
        else:
            sid = ids[0]
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid))

    def _header(self, path: str) -> Any:
        r = sitk.ImageFileReader()
        r.SetFileName(path)
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            raise DataError(f"unreadable volume ({_sitk_message(e)})", path=path, fix="re-download or re-export this file") from None
        return r

    def info(self, rel: str) -> _Info:
        if rel in self._infos:
            return self._infos[rel]
        path = self.root / rel
        if not path.exists():
            raise DataError("file not found", path=path, fix="restore the file or remove the case from the dataset")
        if path.is_dir():
            files = self._series_files(path)
            first, last = self._header(files[0]), self._header(files[-1])
            if first.GetDimension() >= 3 and first.GetSize()[2] > 1:
                raise DataError("a DICOM series of multi-frame files is not supported", path=path, fix="export one slice per file, or one multi-frame file per volume")
            sx, sy = first.GetSpacing()[:2]
            n = len(files)
            gap = np.linalg.norm(np.subtract(last.GetOrigin(), first.GetOrigin())) / (n - 1) if n > 1 else float(first.GetSpacing()[2] if first.GetDimension() > 2 else 1.0)
            d = np.asarray(first.GetDirection(), np.float64).reshape(first.GetDimension(), first.GetDimension())[:3, :3] if first.GetDimension() >= 3 else np.eye(3)
            if n > 1:  # the slice axis points from the first slice to the last, as ITK's series reader orders them
                step = np.subtract(last.GetOrigin(), first.GetOrigin())
                d[:, 2] = step / (np.linalg.norm(step) or 1.0)
            info = _Info((first.GetSize()[0], first.GetSize()[1], n), (sx, sy, gap or 1.0), first.GetOrigin(), d.ravel(), first.GetNumberOfComponents(), files)
        else:
            r = self._header(str(path))
            info = _Info(r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection(), r.GetNumberOfComponents(), [str(path)])
        if len(info.size) != 3:
            raise DataError(f"expected a 3D volume, got size {info.size}", path=path, fix="pass one 3D volume per file or series")
        if info.components != 1:
            raise DataError(f"expected one value per voxel, got {info.components} components", path=path, fix="export a scalar volume (one channel or one sequence per file)")
        limit = max_volume_voxels()
        voxels = int(np.prod(info.size, dtype=object))
        if limit is not None and voxels > limit:
            raise DataError(f"header claims a {'x'.join(map(str, info.size))} volume: {voxels} voxels, more than the limit of {limit}", path=path, fix=f"if the volume is genuine, raise the limit with {MAX_VOXELS_ENV} (0 = no limit)")
        self._infos[rel] = info
        return info

    def geometry(self, rel: str) -> dict[str, Any]:
        info = self.info(rel)
        order = [self.axis] + [a for a in range(3) if a != self.axis]
        return {
            "stored_shape": list(info.size),
            "shape": [info.size[a] for a in order],
            "spacing": [info.spacing[a] for a in order],
            "axcodes": "".join(nib.aff2axcodes(info.ras_affine())),
        }

    def affine(self, rel: str) -> np.ndarray:
        return self.info(rel).ras_affine()

    # -- decoding --------------------------------------------------------------------------
    def _array(self, rel: str) -> np.ndarray:
        info = self.info(rel)
        try:
            if len(info.files) > 1:
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(info.files)
                img = reader.Execute()
            else:
                img = sitk.ReadImage(info.files[0])
            arr = sitk.GetArrayFromImage(img)  # (k, j, i)
        except RuntimeError as e:
            raise DataError(f"unreadable volume ({_sitk_message(e)})", path=self.root / rel, fix="re-download or re-export this file") from None
        except MemoryError:
            raise DataError(f"not enough memory to decode this {'x'.join(map(str, info.size))} volume", path=self.root / rel, fix="free memory, or run this task on a machine with more") from None
        if arr.ndim != 3:
            raise DataError(f"expected a 3D volume, got shape {arr.shape}", path=self.root / rel, fix="pass one 3D volume per file or series")
        return np.moveaxis(arr.transpose(2, 1, 0), self.axis, 0)
