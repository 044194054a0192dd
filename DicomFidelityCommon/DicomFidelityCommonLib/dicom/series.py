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

from DicomFidelityCommonLib.dicom import headers as dicom_headers
from DicomFidelityCommonLib.errors import (
    FrameOfReferenceMismatchError,
    GeometryError,
    InvalidInputFileError,
    MissingTagError,
    WrongModalityError,
)
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from DicomFidelityCommonLib.memory import require_memory, voxel_bytes

# Objects that sit in image folders but are not slices of the image series.
NON_IMAGE_MODALITIES = {"RTDOSE", "RTSTRUCT", "RTPLAN", "RTRECORD", "SEG", "SR", "KO", "PR", "REG"}
POSITION_TOLERANCE_MM = 1e-2
ORTHONORMAL_TOLERANCE = 1e-3  # direction cosines are often written with 5-6 decimals; a real error is far larger


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


def is_dicom_file(path: str | Path) -> bool:
    """A DICOM Part 10 file (128-byte preamble, then 'DICM'); folders and short files are not."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def read_header(path: str | Path) -> Dataset:
    """Read a DICOM header (no pixel data); a clear error for anything that is not DICOM."""
    try:
        return dicom_headers.read_header(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidInputFileError(f"not a readable DICOM file ({exc})", path) from exc


def check_orientation(orientation, path: str | Path | None, tag: str = "ImageOrientationPatient") -> np.ndarray:
    """Row and column cosines as finite unit vectors at right angles: anything else describes no voxel grid."""
    values = np.asarray([float(v) for v in orientation], dtype=float)
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        raise GeometryError(f"{tag} {list(orientation)} is not 6 finite numbers", path, tag)
    row, column = values[:3], values[3:]
    if (abs(np.linalg.norm(row) - 1) > ORTHONORMAL_TOLERANCE or abs(np.linalg.norm(column) - 1) > ORTHONORMAL_TOLERANCE
            or abs(float(row @ column)) > ORTHONORMAL_TOLERANCE):
        raise GeometryError(f"{tag} {values.tolist()} is not two orthogonal unit vectors", path, tag)
    return values


def check_pixel_spacing(spacing, path: str | Path | None, tag: str = "PixelSpacing") -> np.ndarray:
    """Two finite positive spacings: zero or negative ones make a singular or mirrored grid."""
    values = np.asarray([float(v) for v in spacing], dtype=float)
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise GeometryError(f"{tag} {list(spacing)} is not two positive numbers", path, tag)
    return values


def require(ds: Dataset, keyword: str, path: str | Path | None = None):
    """Return a required attribute or raise a MissingTagError naming the file and tag."""
    value = ds.get(keyword)
    if value is None or value == "":
        raise MissingTagError("required attribute is missing or empty", path or ds.filename, keyword)
    return value


REFERENCE_UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                          "FrameOfReferenceUID")
SLICE_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
                  *REFERENCE_UID_KEYWORDS, "Modality")
_GEOMETRY_KEYWORDS = SLICE_KEYWORDS[:5]


@dataclass(frozen=True)
class SliceKeys:
    """Per slice, the values a series is sorted, checked and referenced by, read once (dicom_headers.header_values).

    pydicom converts and validates a value on every first access (5-15 us); a 200-slice series read, checked and
    referenced by a SEG touched each of these values several times, which cost as much as reading the headers.
    Missing values are None (in ``values``) and NaN (in the arrays).
    """

    values: list[list]  # per slice, per SLICE_KEYWORDS

    @classmethod
    def of(cls, datasets: Sequence[Dataset]) -> SliceKeys:
        return cls([dicom_headers.header_values(ds, SLICE_KEYWORDS) for ds in datasets])

    def column(self, keyword: str) -> list:
        index = SLICE_KEYWORDS.index(keyword)
        return [row[index] for row in self.values]

    def array(self, keyword: str, width: int) -> np.ndarray:
        """A numeric column as a (slices, width) float array, NaN where missing or of another length."""
        out = np.full((len(self.values), width), np.nan)
        for k, value in enumerate(self.column(keyword)):
            if value is not None and len(value) == width:
                out[k] = value
        return out

    @property
    def positions(self) -> np.ndarray:
        return self.array("ImagePositionPatient", 3)

    def first_missing(self, keywords: Sequence[str]) -> tuple[int, str] | None:
        """(slice index, keyword) of the first value that is missing or empty."""
        indices = [SLICE_KEYWORDS.index(keyword) for keyword in keywords]
        for k, row in enumerate(self.values):
            for index in indices:
                if row[index] is None:
                    return k, SLICE_KEYWORDS[index]
        return None


class LazyHeaders(Sequence):
    """The slices' headers (no pixel data), each read when first asked for.

    A SEG export needs every slice's UIDs and position (SliceKeys, read without building a dataset) but the whole
    header of one slice only; building 200 pydicom datasets was a third of reading the series.
    """

    def __init__(self, paths: Sequence[Path], loaded: Sequence[Dataset | None]):
        self._paths = list(paths)
        self._loaded = list(loaded)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        dataset = self._loaded[index]
        if dataset is None:
            dataset = self._loaded[index] = read_header(self._paths[index])
        return dataset


@dataclass
class ImageSeries:
    """One image series, slices sorted along the slice normal."""

    paths: list[Path]
    datasets: Sequence[Dataset] = field(repr=False)  # headers, in slice order (a list, or LazyHeaders)
    geometry: VolumeGeometry
    warnings: list[str] = field(default_factory=list)
    keys: SliceKeys | None = field(default=None, repr=False)  # of ``datasets``; made from them when not given

    def __post_init__(self):
        if self.keys is None:
            self.keys = SliceKeys.of(self.datasets)

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
        return self.keys.column("SOPInstanceUID")

    @property
    def sop_class_uids(self) -> list[str]:
        return self.keys.column("SOPClassUID")

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


def first_missing_reference_uid(series: ImageSeries) -> tuple[Path, str] | None:
    """(file, keyword) of the first UID a SEG/RTSTRUCT needs to reference this series but that is empty.

    Over-zealous anonymisation blanks these; such a series can be displayed but not referenced.
    """
    missing = series.keys.first_missing(REFERENCE_UID_KEYWORDS)
    return None if missing is None else (series.paths[missing[0]], missing[1])


def normal_order(keys: SliceKeys) -> tuple[np.ndarray, np.ndarray]:
    """Slice order by position along the slice normal (of the first slice), and the sorted positions along it."""
    orientation = keys.array("ImageOrientationPatient", 6)[0]
    normal = np.cross(orientation[:3], orientation[3:])
    distances = keys.positions @ normal
    order = np.argsort(distances, kind="stable")
    return order, distances[order]


def geometry_from_slices(keys: SliceKeys, paths: Sequence[Path], first: Dataset) -> tuple[VolumeGeometry, list[str]]:
    """Geometry of sorted single-frame slices, with warnings for gaps, non-uniform spacing and gantry tilt."""
    warnings: list[str] = []
    missing = keys.first_missing(_GEOMETRY_KEYWORDS)
    if missing is not None:
        raise MissingTagError("required attribute is missing or empty", paths[missing[0]], missing[1])
    orientations, positions = keys.array("ImageOrientationPatient", 6), keys.positions
    for keyword, values, count in (("ImageOrientationPatient", orientations, 6),
                                   ("ImagePositionPatient", positions, 3)):
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise GeometryError(f"{keyword} does not have {count} finite numbers", paths[int(np.argmax(bad))], keyword)
    orientation = check_orientation(orientations[0], paths[0])
    frames = keys.column("FrameOfReferenceUID")
    known = [uid for uid in frames if uid]
    usual = max(set(known), key=known.count) if known else None  # blame the slices that differ from most
    other = next((k for k, uid in enumerate(frames) if uid and uid != usual), None)
    if other is not None:
        raise FrameOfReferenceMismatchError(f"one series in two frames of reference ({usual} and {frames[other]})",
                                            paths[other], "FrameOfReferenceUID")
    differs = ~np.all(np.isclose(orientations, orientation, rtol=1e-5, atol=1e-4), axis=1)
    if differs.any():
        raise GeometryError("ImageOrientationPatient differs from the first slice", paths[int(np.argmax(differs))],
                            "ImageOrientationPatient")
    sizes = np.array([keys.column("Rows"), keys.column("Columns")]).T
    if np.any(sizes != sizes[0]):
        raise GeometryError("Rows/Columns differ from the first slice",
                            paths[int(np.argmax(np.any(sizes != sizes[0], axis=1)))])
    rows, columns = (int(v) for v in sizes[0])
    if rows < 1 or columns < 1:
        raise GeometryError(f"Rows x Columns {rows}x{columns} is not an image size", paths[0], "Rows")
    _check_pixel_bytes(paths, first, rows, columns)
    # stored pixels plus the float32 volume built from them
    require_memory(voxel_bytes((len(paths), rows, columns), 2 + 4), f"a {len(paths)}x{rows}x{columns} image volume",
                   paths[0])
    if len(positions) > 1:
        steps = np.diff(positions, axis=0)
        lengths = np.linalg.norm(steps, axis=1)
        if np.any(lengths < POSITION_TOLERANCE_MM):
            duplicate = paths[int(np.argmin(lengths)) + 1]
            raise GeometryError("two slices share one ImagePositionPatient (duplicate or multi-phase series)",
                                duplicate)
        step = positions[-1] - positions[0]
        step = step / (len(positions) - 1)
        if not np.allclose(lengths, lengths.mean(), atol=max(POSITION_TOLERANCE_MM, 1e-3 * lengths.mean())):
            warnings.append(
                f"non-uniform slice spacing ({lengths.min():.3f} to {lengths.max():.3f} mm); the mean "
                f"{lengths.mean():.3f} mm is used and slices may be misplaced by up to "
                f"{np.max(np.abs(np.cumsum(lengths) - lengths.mean() * np.arange(1, len(lengths) + 1))):.3f} mm"
            )
            if lengths.max() > 1.5 * np.median(lengths):
                warnings.append(f"gap in the series: largest slice step {lengths.max():.3f} mm, "
                                f"median {np.median(lengths):.3f} mm")
        normal = np.cross(orientation[:3], orientation[3:])
        cosine = abs(float(np.dot(step / np.linalg.norm(step), normal)))
        if cosine < 1 - 1e-4:
            angle = float(np.degrees(np.arccos(min(1.0, cosine))))
            warnings.append(f"gantry tilt / sheared slices: slice stack is {angle:.2f} degrees off the slice normal")
    else:
        thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
        step = np.cross(orientation[:3], orientation[3:]) * thickness
    spacing = keys.column("PixelSpacing")[0]
    if len(spacing) != 2:
        raise GeometryError(f"PixelSpacing has {len(spacing)} values, not 2", paths[0], "PixelSpacing")
    check_pixel_spacing(spacing, paths[0])
    affine = affine_from_dicom(positions[0], orientation, list(spacing), step)
    return VolumeGeometry((len(positions), rows, columns), affine), warnings


def _check_pixel_bytes(paths: Sequence[Path], first: Dataset, rows: int, columns: int) -> None:
    """Refuse, before anything is allocated, native slices too small for the Rows x Columns their header claims."""
    syntax = getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed:
        return
    needed = rows * columns * int(first.get("BitsAllocated") or 8) * int(first.get("SamplesPerPixel") or 1) // 8
    for path in paths:
        size = Path(path).stat().st_size
        if size < needed:
            raise InvalidInputFileError(f"Rows x Columns {rows}x{columns} need {needed} bytes of pixel data, the file "
                                        f"has {size} bytes in all", path, "Rows")


def read_image_series(source: str | Path | Iterable[str | Path], series_instance_uid: str | None = None) -> ImageSeries:
    """Read the headers of an image series from a folder or a list of files.

    Non-image objects (RTDOSE, RTSTRUCT, SEG, ...) and non-DICOM files in the folder are ignored. When the folder
    holds several series, the one named by ``series_instance_uid`` or else the largest is used, with a warning.
    """
    files = list_dicom_files(source)
    by_series: dict[str, list[tuple[Dataset | None, Path, list]]] = defaultdict(list)
    modality_index, series_index = SLICE_KEYWORDS.index("Modality"), SLICE_KEYWORDS.index("SeriesInstanceUID")
    skipped = 0
    unpositioned: dict[str, Path] = {}  # image slices without ImagePositionPatient, per series
    for path in files:
        try:
            # the slices' values only; a slice's whole header is read when it is asked for (LazyHeaders)
            found = dicom_headers.read_values(path, SLICE_KEYWORDS)
            if found is None:
                ds = dicom_headers.read_header(path)
                values = dicom_headers.header_values(ds, SLICE_KEYWORDS)
                present = {keyword for keyword in SLICE_KEYWORDS if keyword in ds}
            else:
                ds, (values, present) = None, found
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError, MemoryError):
            if len(files) == 1 or is_dicom_file(path):  # a DICOM file that cannot be read is corrupt, not foreign
                raise InvalidInputFileError("not a readable DICOM file (corrupt or truncated)", path) from None
            skipped += 1
            continue
        if (values[modality_index] or "") in NON_IMAGE_MODALITIES:
            continue
        if "ImagePositionPatient" not in present:
            if values[modality_index] and not values[series_index]:  # an image without its series: cut short
                raise MissingTagError("required attribute is missing (corrupt or truncated header?)", path,
                                      "SeriesInstanceUID")
            unpositioned.setdefault(values[series_index] or "", path)
            continue
        by_series[values[series_index] or ""].append((ds, path, values))
    if not by_series:
        raise WrongModalityError("no DICOM image slices (CT, MR, ...) with ImagePositionPatient found",
                                 source if isinstance(source, (str, Path)) else None)
    warnings: list[str] = []
    if series_instance_uid is not None:
        if series_instance_uid not in by_series:
            raise InvalidInputFileError(f"series {series_instance_uid} not found",
                                        source if isinstance(source, (str, Path)) else None)
        chosen = series_instance_uid
    else:
        chosen = max(by_series, key=lambda uid: len(by_series[uid]))
        if len(by_series) > 1:
            warnings.append(f"{len(by_series)} image series found; using {chosen} ({len(by_series[chosen])} slices)")
    if skipped:
        warnings.append(f"{skipped} non-DICOM file(s) ignored")
    if chosen in unpositioned:  # a slice of this series without a position: the volume would silently lose it
        raise MissingTagError("required attribute is missing or empty", unpositioned[chosen], "ImagePositionPatient")
    members = by_series[chosen]
    keys = SliceKeys([m[2] for m in members])
    missing = keys.first_missing(("ImagePositionPatient", "ImageOrientationPatient"))
    if missing is not None:
        raise MissingTagError("required attribute is missing or empty", members[missing[0]][1], missing[1])
    order, _ = normal_order(keys)
    members = [members[i] for i in order]
    keys = SliceKeys([m[2] for m in members])
    paths = [m[1] for m in members]
    datasets = LazyHeaders(paths, [m[0] for m in members])
    geometry, geometry_warnings = geometry_from_slices(keys, paths, datasets[0])
    return ImageSeries(paths=paths, datasets=datasets, geometry=geometry, warnings=warnings + geometry_warnings,
                       keys=keys)
