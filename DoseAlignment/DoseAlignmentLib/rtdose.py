"""Read RTDOSE with its full geometry, and sum several of them safely.

The dose grid is kept as DICOM describes it: an in-plane grid (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing as row then column spacing) and a list of frame offsets along the slice normal that may be non-uniform
or descending. It is never squeezed into a uniform grid behind the user's back (the 10 mm error SimpleITK/GDCM make).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from DicomFidelityCommonLib.dicom.series import read_header, require
from DicomFidelityCommonLib.errors import (
    FrameOfReferenceMismatchError,
    GeometryError,
    InvalidInputFileError,
    MissingTagError,
    UnitsMismatchError,
    WrongModalityError,
)
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from DicomFidelityCommonLib.memory import require_memory, voxel_bytes

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
UNIFORM_TOLERANCE_MM = 1e-3
UNCOMPRESSED_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


class DoseUnits(str, Enum):
    GY = "GY"
    RELATIVE = "RELATIVE"


class DoseType(str, Enum):
    PHYSICAL = "PHYSICAL"
    EFFECTIVE = "EFFECTIVE"
    ERROR = "ERROR"


class OffsetKind(str, Enum):
    """How GridFrameOffsetVector was written (DICOM PS3.3 C.8.8.3.2)."""

    RELATIVE = "relative"  # first value 0, offsets along the normal from ImagePositionPatient
    ABSOLUTE = "absolute"  # values are patient z coordinates (only legal for axial grids)
    SINGLE_FRAME = "single-frame"


@dataclass
class DoseGrid:
    """An RTDOSE in memory: dose values (already scaled) on the grid the file describes."""

    dose: np.ndarray = field(repr=False)  # [frame, row, column], float64, in ``units``
    image_position: np.ndarray  # LPS mm of the first transmitted pixel of frame 0
    image_orientation: np.ndarray  # 6 direction cosines (row direction, column direction)
    pixel_spacing: tuple[float, float]  # DICOM order: (row spacing, column spacing)
    frame_offsets: np.ndarray  # mm along the normal from image_position, one per frame, in file order
    units: DoseUnits = DoseUnits.GY
    dose_type: str = "PHYSICAL"
    summation_type: str = ""
    frame_of_reference_uid: str | None = None
    offset_kind: OffsetKind = OffsetKind.RELATIVE
    path: str | None = None
    dataset: Dataset | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.dose.shape)

    @property
    def normal(self) -> np.ndarray:
        o = np.asarray(self.image_orientation, dtype=float)
        return np.cross(o[:3], o[3:])

    def in_plane_affine(self) -> np.ndarray:
        """affine_lps of frame 0 with a unit step along the normal as the third column."""
        return affine_from_dicom(self.image_position, self.image_orientation, self.pixel_spacing, 1.0)

    @property
    def frame_steps(self) -> np.ndarray:
        return np.diff(np.asarray(self.frame_offsets, dtype=float))

    def is_uniform(self, tolerance_mm: float = UNIFORM_TOLERANCE_MM) -> bool:
        steps = self.frame_steps
        return steps.size == 0 or bool(np.all(np.abs(steps - steps[0]) <= tolerance_mm)
                                       and abs(steps[0]) > tolerance_mm)

    def geometry(self) -> VolumeGeometry:
        """The grid as one regular VolumeGeometry; only exact when the frame offsets are uniform."""
        if not self.is_uniform():
            raise GeometryError(
                f"frame offsets are non-uniform (steps {self.frame_steps.min():.3f} to "
                f"{self.frame_steps.max():.3f} mm): "
                "not one regular grid", self.path, "GridFrameOffsetVector")
        steps = self.frame_steps
        step = float(steps.mean()) if steps.size else float(self._single_frame_thickness())
        origin = np.asarray(self.image_position, float) + self.normal * float(self.frame_offsets[0])
        affine = affine_from_dicom(origin, self.image_orientation, self.pixel_spacing, self.normal * step)
        return VolumeGeometry(self.shape, affine)

    def _single_frame_thickness(self) -> float:
        ds = self.dataset
        value = (ds.get("SliceThickness") if ds is not None else None) or min(self.pixel_spacing)
        return float(value)

    def frame_thicknesses(self) -> np.ndarray:
        """Extent of each frame along the normal (half way to its neighbours), for integrals on non-uniform grids."""
        offsets = np.asarray(self.frame_offsets, dtype=float)
        if offsets.size == 1:
            return np.array([self._single_frame_thickness()])
        order = np.argsort(offsets)
        s = offsets[order]
        edges = np.concatenate([[s[0] - (s[1] - s[0]) / 2], (s[1:] + s[:-1]) / 2, [s[-1] + (s[-1] - s[-2]) / 2]])
        thickness = np.empty_like(offsets)
        thickness[order] = np.diff(edges)
        return thickness

    def voxel_volumes_ml(self) -> np.ndarray:
        """Per-frame voxel volume in millilitres."""
        return self.frame_thicknesses() * self.pixel_spacing[0] * self.pixel_spacing[1] / 1000.0

    def voxel_centers_lps(self) -> np.ndarray:
        """LPS position of every voxel centre, shape (frames, rows, columns, 3)."""
        o = np.asarray(self.image_orientation, dtype=float)
        dy, dx = self.pixel_spacing
        frames, rows, cols = self.shape
        i = np.arange(cols)[None, None, :, None] * dx * o[:3]
        j = np.arange(rows)[None, :, None, None] * dy * o[3:]
        k = np.asarray(self.frame_offsets, float)[:, None, None, None] * self.normal
        return np.asarray(self.image_position, float) + i + j + k

    def summary(self) -> dict:
        return {
            "path": self.path,
            "shape": list(self.shape),
            "units": self.units.value,
            "dose_type": self.dose_type,
            "summation_type": self.summation_type,
            "max_dose": float(self.dose.max()) if self.dose.size else 0.0,
            "pixel_spacing_row_col": [float(v) for v in self.pixel_spacing],
            "frame_offsets_uniform": self.is_uniform(),
            "offset_kind": self.offset_kind.value,
            "frame_of_reference_uid": self.frame_of_reference_uid,
        }


def _check_orientation(orientation: np.ndarray, path) -> None:
    row, col = orientation[:3], orientation[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3
            and abs(np.dot(row, col)) < 1e-3):
        raise GeometryError(f"ImageOrientationPatient {orientation.tolist()} is not two orthonormal vectors", path,
                            "ImageOrientationPatient")


def _relative_offsets(ds: Dataset, path, frames: int, position: np.ndarray,
                      normal: np.ndarray) -> tuple[np.ndarray, OffsetKind, list[str]]:
    """GridFrameOffsetVector as offsets along the normal from ImagePositionPatient."""
    if frames == 1 and not ds.get("GridFrameOffsetVector"):
        return np.zeros(1), OffsetKind.SINGLE_FRAME, []
    raw = require(ds, "GridFrameOffsetVector", path)
    offsets = np.atleast_1d(np.asarray(raw, dtype=float))
    if offsets.size != frames:
        raise GeometryError(f"GridFrameOffsetVector has {offsets.size} values for {frames} frames", path,
                            "GridFrameOffsetVector")
    if abs(offsets[0]) < 1e-6:
        kind, warnings = OffsetKind.RELATIVE, []
    else:
        # Absolute offsets are patient z coordinates; the standard allows them only when the normal is +-z.
        if abs(abs(normal[2]) - 1) > 1e-4:
            raise GeometryError(
                f"first GridFrameOffsetVector value is {offsets[0]:g} (absolute z coordinates), which is only defined "
                "for axial dose grids, but ImageOrientationPatient is not axial", path, "GridFrameOffsetVector")
        if abs(offsets[0] - position[2]) > 1e-2:
            raise GeometryError(
                f"GridFrameOffsetVector starts at {offsets[0]:g}: neither 0 (relative) nor the ImagePositionPatient z "
                f"{position[2]:g} (absolute)", path, "GridFrameOffsetVector")
        offsets = (offsets - position[2]) * np.sign(normal[2])
        kind, warnings = OffsetKind.ABSOLUTE, ["GridFrameOffsetVector holds absolute z coordinates; "
                                               "converted to offsets along the normal"]
    steps = np.diff(offsets)
    if steps.size:
        if np.any(np.abs(steps) < 1e-3):
            raise GeometryError("two frames share one position", path, "GridFrameOffsetVector")
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise GeometryError("frame offsets are not monotonic", path, "GridFrameOffsetVector")
        if np.any(np.abs(steps - steps[0]) > UNIFORM_TOLERANCE_MM):
            warnings.append(f"non-uniform frame spacing ({np.abs(steps).min():.3f} to {np.abs(steps).max():.3f} mm); "
                            "each frame is kept at its exact position")
        if steps[0] < 0:
            warnings.append("frame offsets descend (frames run against the slice normal)")
    return offsets, kind, warnings


def read_rtdose(path: str | Path) -> DoseGrid:
    """Read one RTDOSE file; every problem is an error naming the file and the attribute."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputFileError("no such file", path)
    header = read_header(path)
    modality = str(header.get("Modality", ""))
    sop_class = str(header.get("SOPClassUID", ""))
    if modality != "RTDOSE" and sop_class != RT_DOSE_STORAGE:
        raise WrongModalityError(f"not an RTDOSE (Modality {modality or 'missing'})", path, "Modality")
    for keyword in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "DoseGridScaling", "DoseUnits", "BitsAllocated"):
        require(header, keyword, path)
    try:
        units = DoseUnits(str(header.DoseUnits).upper())
    except ValueError:
        raise InvalidInputFileError(f"unsupported DoseUnits {header.DoseUnits!r} (expected GY or RELATIVE)", path,
                                    "DoseUnits") from None
    orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
    if orientation.shape != (6,):
        raise GeometryError("ImageOrientationPatient must have 6 values", path, "ImageOrientationPatient")
    _check_orientation(orientation, path)
    position = np.asarray(header.ImagePositionPatient, dtype=float)
    if position.shape != (3,) or not np.all(np.isfinite(position)):
        raise GeometryError(f"ImagePositionPatient {list(header.ImagePositionPatient)} is not 3 finite numbers", path,
                            "ImagePositionPatient")
    spacing = tuple(float(v) for v in header.PixelSpacing)
    if len(spacing) != 2 or min(spacing) <= 0:
        raise GeometryError(f"PixelSpacing {list(header.PixelSpacing)} is not two positive values", path,
                            "PixelSpacing")
    frames = int(header.get("NumberOfFrames") or 1)
    rows, cols = int(header.Rows), int(header.Columns)
    # stored values plus the float64 dose in Gy
    require_memory(voxel_bytes((frames, rows, cols), int(header.BitsAllocated) // 8 + 8),
                   f"a {frames}x{rows}x{cols} dose grid", path)
    normal = np.cross(orientation[:3], orientation[3:])
    offsets, kind, warnings = _relative_offsets(header, path, frames, position, normal)
    scaling = float(header.DoseGridScaling)
    if not np.isfinite(scaling) or scaling <= 0:
        raise InvalidInputFileError(f"DoseGridScaling {scaling!r} is not a positive number", path, "DoseGridScaling")

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # truncated files fail in many ways
        raise InvalidInputFileError(f"cannot read the file ({exc})", path) from exc
    if "PixelData" not in ds:
        raise MissingTagError("RTDOSE has no pixel data (a DVH-only RTDOSE cannot be resampled)", path, "PixelData")
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    expected = rows * cols * frames * int(ds.BitsAllocated) // 8
    if syntax in UNCOMPRESSED_SYNTAXES and len(ds.PixelData) < expected:
        raise InvalidInputFileError(f"pixel data truncated: {len(ds.PixelData)} bytes, {expected} expected for "
                                    f"{frames}x{rows}x{cols} at {ds.BitsAllocated} bits", path, "PixelData")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types
        raise InvalidInputFileError(f"cannot decode pixel data ({exc})", path, "PixelData") from exc
    pixels = pixels.reshape(frames, rows, cols)
    dose = pixels.astype(np.float64) * scaling
    dose_type = str(header.get("DoseType", "") or "")
    if dose_type and dose_type not in DoseType.__members__:
        warnings.append(f"unknown DoseType {dose_type!r}")
    frame_of_reference = header.get("FrameOfReferenceUID")
    if not frame_of_reference:
        warnings.append("RTDOSE has no FrameOfReferenceUID: it cannot be checked against the CT")
    return DoseGrid(
        dose=dose, image_position=position, image_orientation=orientation, pixel_spacing=spacing,
        frame_offsets=offsets, units=units, dose_type=dose_type,
        summation_type=str(header.get("DoseSummationType", "") or ""),
        frame_of_reference_uid=str(frame_of_reference) if frame_of_reference else None, offset_kind=kind,
        path=str(path), dataset=header, warnings=warnings,
    )


def check_summable(grids: list[DoseGrid]) -> list[str]:
    """Refuse to add doses that are not the same kind of quantity; warn where adding may double count."""
    if not grids:
        raise InvalidInputFileError("no RTDOSE given")
    warnings: list[str] = []
    first = grids[0]
    for grid in grids[1:]:
        if grid.units != first.units:
            raise UnitsMismatchError(f"DoseUnits {grid.units.value} cannot be added to {first.units.value} "
                                     f"from {first.path}", grid.path, "DoseUnits")
        if grid.dose_type != first.dose_type:
            raise UnitsMismatchError(f"DoseType {grid.dose_type or 'missing'} cannot be added to "
                                     f"{first.dose_type or 'missing'} from {first.path}", grid.path, "DoseType")
        if grid.summation_type != first.summation_type:
            raise UnitsMismatchError(f"DoseSummationType {grid.summation_type or 'missing'} mixed with "
                                     f"{first.summation_type or 'missing'} from {first.path} (would double count)",
                                     grid.path, "DoseSummationType")
        if (grid.frame_of_reference_uid and first.frame_of_reference_uid
                and grid.frame_of_reference_uid != first.frame_of_reference_uid):
            raise FrameOfReferenceMismatchError(f"FrameOfReferenceUID differs from {first.path}", grid.path,
                                                "FrameOfReferenceUID")
    if len(grids) > 1:
        if first.units == DoseUnits.RELATIVE:
            warnings.append("adding RELATIVE doses: the sum is only meaningful if they share one normalisation")
        if first.summation_type in ("PLAN", "MULTI_PLAN"):
            warnings.append(f"adding {len(grids)} {first.summation_type} doses: make sure they are different plans")
        paths = [g.path for g in grids]
        if len(set(paths)) != len(paths):
            raise InvalidInputFileError("the same RTDOSE is given twice", paths[0])
    return warnings
