"""Read a DICOM image series (CT, MR, ...) sorted along the slice normal, never by InstanceNumber or file name."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import GeometryError, InvalidInputFileError, MissingTagError, WrongModalityError
from .geometry import VolumeGeometry, affine_from_dicom

# Objects that sit in image folders but are not slices of the image series.
NON_IMAGE_MODALITIES = {"RTDOSE", "RTSTRUCT", "RTPLAN", "RTRECORD", "SEG", "SR", "KO", "PR", "REG"}
POSITION_TOLERANCE_MM = 1e-2


def list_dicom_files(source: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files of a folder (recursively) or an explicit list; hidden files are skipped."""
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_file():
            return [source]
        if not source.is_dir():
            raise InvalidInputFileError("no such file or folder", source)
        return sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [Path(p) for p in source]


def read_header(path: str | Path) -> Dataset:
    """Read a DICOM header (no pixel data); a clear error for anything that is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidInputFileError(f"not a readable DICOM file ({exc})", path) from exc


def require(ds: Dataset, keyword: str, path: str | Path | None = None):
    """Return a required attribute or raise a MissingTagError naming the file and tag."""
    value = ds.get(keyword)
    if value is None or value == "":
        raise MissingTagError("required attribute is missing or empty", path or ds.filename, keyword)
    return value


@dataclass
class ImageSeries:
    """One image series, slices sorted along the slice normal."""

    paths: list[Path]
    datasets: list[Dataset] = field(repr=False)  # headers, in slice order
    geometry: VolumeGeometry
    warnings: list[str] = field(default_factory=list)

    @property
    def series_instance_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str | None:
        value = self.datasets[0].get("FrameOfReferenceUID")
        return str(value) if value else None

    @property
    def modality(self) -> str:
        return str(self.datasets[0].get("Modality", ""))

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets]

    def pixel_array(self, dtype=np.float32) -> np.ndarray:
        """Stored values with RescaleSlope/Intercept applied (HU for CT), indexed [slice, row, column]."""
        volume = np.empty(self.geometry.shape, dtype=dtype)
        for k, path in enumerate(self.paths):
            try:
                ds = pydicom.dcmread(path)
                pixels = ds.pixel_array
            except Exception as exc:  # pixel decoding errors come in many types
                raise InvalidInputFileError(f"cannot decode pixel data ({exc})", path) from exc
            if pixels.shape != self.geometry.shape[1:]:
                raise GeometryError(f"slice is {pixels.shape}, series is {self.geometry.shape[1:]}", path)
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            volume[k] = pixels.astype(np.float64) * slope + intercept
        return volume


REFERENCE_UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def first_missing_reference_uid(series: ImageSeries) -> tuple[Path, str] | None:
    """(file, keyword) of the first UID a SEG/RTSTRUCT needs to reference this series but that is empty.

    Over-zealous anonymisation blanks these; such a series can be displayed but not referenced.
    """
    for ds, path in zip(series.datasets, series.paths):
        for keyword in REFERENCE_UID_KEYWORDS:
            if not str(ds.get(keyword, "") or "").strip():
                return path, keyword
    return None


def sort_along_normal(datasets: Sequence[Dataset], paths: Sequence[Path]) -> tuple[list[Dataset], list[Path], np.ndarray]:
    """Sort slices by their position along the slice normal; returns the sorted positions along it too."""
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    distances = np.array([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))) for ds in datasets])
    order = np.argsort(distances, kind="stable")
    return [datasets[i] for i in order], [paths[i] for i in order], distances[order]


def geometry_from_slices(datasets: Sequence[Dataset], paths: Sequence[Path]) -> tuple[VolumeGeometry, list[str]]:
    """Geometry of sorted single-frame slices, with warnings for gaps, non-uniform spacing and gantry tilt."""
    warnings: list[str] = []
    first = datasets[0]
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        for ds, path in zip(datasets, paths):
            require(ds, keyword, path)
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    for ds, path in zip(datasets[1:], paths[1:]):
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), orientation, atol=1e-4):
            raise GeometryError("ImageOrientationPatient differs from the first slice", path, "ImageOrientationPatient")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise GeometryError("Rows/Columns differ from the first slice", path)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for ds in datasets])
    if len(datasets) > 1:
        steps = np.diff(positions, axis=0)
        lengths = np.linalg.norm(steps, axis=1)
        if np.any(lengths < POSITION_TOLERANCE_MM):
            duplicate = paths[int(np.argmin(lengths)) + 1]
            raise GeometryError("two slices share one ImagePositionPatient (duplicate or multi-phase series)", duplicate)
        step = positions[-1] - positions[0]
        step = step / (len(datasets) - 1)
        if not np.allclose(lengths, lengths.mean(), atol=max(POSITION_TOLERANCE_MM, 1e-3 * lengths.mean())):
            warnings.append(
                f"non-uniform slice spacing ({lengths.min():.3f} to {lengths.max():.3f} mm); the mean "
                f"{lengths.mean():.3f} mm is used and slices may be misplaced by up to "
                f"{np.max(np.abs(np.cumsum(lengths) - lengths.mean() * np.arange(1, len(lengths) + 1))):.3f} mm"
            )
            if lengths.max() > 1.5 * np.median(lengths):
                warnings.append(f"gap in the series: largest slice step {lengths.max():.3f} mm, median {np.median(lengths):.3f} mm")
        normal = np.cross(orientation[:3], orientation[3:])
        cosine = abs(float(np.dot(step / np.linalg.norm(step), normal)))
        if cosine < 1 - 1e-4:
            angle = float(np.degrees(np.arccos(min(1.0, cosine))))
            warnings.append(f"gantry tilt / sheared slices: slice stack is {angle:.2f} degrees off the slice normal")
    else:
        thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
        step = np.cross(orientation[:3], orientation[3:]) * thickness
    affine = affine_from_dicom(positions[0], orientation, first.PixelSpacing, step)
    return VolumeGeometry((len(datasets), int(first.Rows), int(first.Columns)), affine), warnings


def read_image_series(source: str | Path | Iterable[str | Path], series_instance_uid: str | None = None) -> ImageSeries:
    """Read the headers of an image series from a folder or a list of files.

    Non-image objects (RTDOSE, RTSTRUCT, SEG, ...) and non-DICOM files in the folder are ignored. When the folder
    holds several series, the one named by ``series_instance_uid`` or else the largest is used, with a warning.
    """
    files = list_dicom_files(source)
    by_series: dict[str, list[tuple[Dataset, Path]]] = defaultdict(list)
    skipped = 0
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError):
            if len(files) == 1:
                raise InvalidInputFileError("not a readable DICOM file", path) from None
            skipped += 1
            continue
        if str(ds.get("Modality", "")) in NON_IMAGE_MODALITIES or "ImagePositionPatient" not in ds:
            continue
        by_series[str(ds.get("SeriesInstanceUID", ""))].append((ds, path))
    if not by_series:
        raise WrongModalityError("no DICOM image slices (CT, MR, ...) with ImagePositionPatient found", source if isinstance(source, (str, Path)) else None)
    warnings: list[str] = []
    if series_instance_uid is not None:
        if series_instance_uid not in by_series:
            raise InvalidInputFileError(f"series {series_instance_uid} not found", source if isinstance(source, (str, Path)) else None)
        chosen = series_instance_uid
    else:
        chosen = max(by_series, key=lambda uid: len(by_series[uid]))
        if len(by_series) > 1:
            warnings.append(f"{len(by_series)} image series found; using {chosen} ({len(by_series[chosen])} slices)")
    if skipped:
        warnings.append(f"{skipped} non-DICOM file(s) ignored")
    members = by_series[chosen]
    datasets = [m[0] for m in members]
    paths = [m[1] for m in members]
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
        for ds, path in members:
            require(ds, keyword, path)
    datasets, paths, _ = sort_along_normal(datasets, paths)
    geometry, geometry_warnings = geometry_from_slices(datasets, paths)
    return ImageSeries(paths=list(paths), datasets=list(datasets), geometry=geometry, warnings=warnings + geometry_warnings)
