"""The whole alignment: read doses and reference, check frames of reference, resample, sum, report.

Used by the CLI, the MRML logic and ML pipelines alike, so every entry point applies the same rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from DicomFidelityCommonLib.dicom.series import ImageSeries, read_image_series
from DicomFidelityCommonLib.errors import FrameOfReferenceMismatchError, GeometryError, InvalidInputFileError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DoseAlignmentLib.resample import (
    Direction,
    DoseStatistics,
    Interpolation,
    dose_statistics,
    inside_geometry,
    resample_dose,
    resample_dose_onto_dose,
    resample_volume_to_dose,
    same_grid,
)
from DoseAlignmentLib.rtdose import DoseGrid, DoseUnits, check_summable, read_rtdose

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


@dataclass
class Reference:
    """The image the dose is aligned with (a CT series, a volume file, or a Slicer volume node's content)."""

    geometry: VolumeGeometry
    frame_of_reference_uid: str | None = None
    source: str | None = None
    warnings: list[str] = field(default_factory=list)
    series: ImageSeries | None = field(default=None, repr=False)
    _array: np.ndarray | None = field(default=None, repr=False)
    _loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def array(self) -> np.ndarray:
        """Voxel values [k, j, i] (HU for CT); loaded on first use since dose -> CT only needs the geometry."""
        if self._array is None:
            if self._loader is None:
                raise InvalidInputFileError("reference has no voxel data", self.source)
            self._array = np.asarray(self._loader(), dtype=np.float32)
        return self._array


def is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in VOLUME_SUFFIXES)


def read_reference(path: str | Path | Sequence[str | Path]) -> Reference:
    """A CT folder or list of its files (sorted along the slice normal, HU), or a volume file (NRRD, NIfTI, MHA)."""
    if not isinstance(path, (str, Path)):  # the files of one series, e.g. a cohort case's
        series = read_image_series(list(path))
        return Reference(series.geometry, series.frame_of_reference_uid, str(Path(series.paths[0]).parent),
                         list(series.warnings), series=series, _loader=series.pixel_array)
    path = Path(path)
    if is_volume_file(path):
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InvalidInputFileError(f"cannot read the volume ({str(exc).strip().splitlines()[-1]})", path) from exc
        if reader.GetDimension() != 3:
            raise GeometryError(f"reference volume must be 3D, it is {reader.GetDimension()}D", path)
        size = reader.GetSize()
        direction = np.asarray(reader.GetDirection(), float).reshape(3, 3)
        geometry = VolumeGeometry.from_origin_spacing_direction((size[2], size[1], size[0]), reader.GetOrigin(),
                                                                reader.GetSpacing(), direction)
        uid = reader.GetMetaData("FrameOfReferenceUID") if reader.HasMetaDataKey("FrameOfReferenceUID") else None

        def load() -> np.ndarray:
            return sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))

        warnings = [] if uid else ["reference volume file carries no FrameOfReferenceUID: "
                                   "the frame of reference is not checked"]
        return Reference(geometry, uid, str(path), warnings, _loader=load)
    series = read_image_series(path)
    return Reference(series.geometry, series.frame_of_reference_uid, str(path), list(series.warnings), series=series,
                     _loader=series.pixel_array)


def read_registration(path: str | Path) -> np.ndarray:
    """A 4x4 matrix (text, 4 rows of 4 numbers) in LPS mm that maps dose-frame points to reference-frame points."""
    path = Path(path)
    try:
        matrix = np.loadtxt(path, dtype=float, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InvalidInputFileError(f"cannot read a 4x4 matrix ({exc})", path) from exc
    if matrix.shape == (4, 4) and not np.all(np.isfinite(matrix)):
        raise InvalidInputFileError("the 4x4 matrix holds non-finite values (nan or inf)", path)
    if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0, 0, 0, 1]) or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
        raise InvalidInputFileError(f"expected an invertible affine 4x4 matrix with last row 0 0 0 1, "
                                    f"got shape {matrix.shape}", path)
    return matrix


def check_frame_of_reference(grids: Sequence[DoseGrid], reference: Reference,
                             registration: np.ndarray | None) -> list[str]:
    """Same FrameOfReferenceUID, or a registration; otherwise an error naming the dose file."""
    warnings = []
    for grid in grids:
        if grid.frame_of_reference_uid and reference.frame_of_reference_uid \
                and grid.frame_of_reference_uid != reference.frame_of_reference_uid and registration is None:
            raise FrameOfReferenceMismatchError(
                f"FrameOfReferenceUID {grid.frame_of_reference_uid} differs from the reference's "
                f"{reference.frame_of_reference_uid} ({reference.source}); supply a registration to align them",
                grid.path, "FrameOfReferenceUID")
    if registration is not None and all(g.frame_of_reference_uid == reference.frame_of_reference_uid for g in grids) \
            and reference.frame_of_reference_uid:
        warnings.append("a registration was applied although dose and reference share the FrameOfReferenceUID")
    return warnings


@dataclass
class AlignmentResult:
    """Dose and reference on one grid, with what was kept and lost."""

    direction: Direction
    interpolation: Interpolation
    dose: np.ndarray = field(repr=False)  # float32 [k, j, i], in ``units``, outside the dose grid = outside value
    inside_dose_grid: np.ndarray = field(repr=False)  # bool, voxels covered by the dose grid
    geometry: VolumeGeometry | None  # None only for ct-to-dose on non-uniform frame offsets
    frame_offsets: np.ndarray | None  # ct-to-dose: the dose frame offsets along the normal
    units: DoseUnits
    dose_paths: list[str]
    reference_source: str | None
    statistics: DoseStatistics
    doses: list[dict]
    reference_array: np.ndarray | None = field(default=None, repr=False)  # CT on the output grid (HU), when loaded
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    dose_grids: list[DoseGrid] = field(default_factory=list, repr=False)
    reference: Reference | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.dose.shape)

    def metadata(self) -> dict:
        return {
            "direction": self.direction.value,
            "interpolation": self.interpolation.value,
            "dose_units": self.units.value,
            "dose_files": self.dose_paths,
            "reference": self.reference_source,
            "geometry": self.geometry.to_json() if self.geometry is not None else None,
            "frame_offsets_mm": None if self.frame_offsets is None else [float(v) for v in self.frame_offsets],
            "doses": self.doses,
        }

    def to_json(self) -> dict:
        result = self.metadata()
        result.update({
            "outputs": dict(self.outputs),
            "shape": list(self.shape),
            "max_dose_in": self.statistics.max_dose_in,
            "max_dose_out": self.statistics.max_dose_out,
            "fraction_outside": self.statistics.fraction_dose_voxels_outside_reference,
            "statistics": self.statistics.to_json(),
            "warnings": list(self.warnings),
            "timings_seconds": {k: round(v, 4) for k, v in self.timings.items()},
        })
        return result


def align(dose_paths: Sequence[str | Path] | Sequence[DoseGrid], reference: Reference | str | Path,
          direction: Direction | str = Direction.DOSE_TO_CT, interpolation: Interpolation | str = Interpolation.LINEAR,
          outside_value: float = 0.0, reference_outside_value: float = -1000.0, registration: np.ndarray | None = None,
          load_reference: bool = False, progress: ProgressCallback | None = None) -> AlignmentResult:
    """Read, check, resample and sum. ``registration`` maps dose-frame LPS points to reference-frame points.

    ``load_reference`` also puts the reference voxels (HU) on the output grid (always done for ct-to-dose).
    """
    progress = progress or no_progress
    direction, interpolation = Direction(direction), Interpolation(interpolation)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if not dose_paths:
        raise InvalidInputFileError("no RTDOSE given")
    grids = [g if isinstance(g, DoseGrid) else read_rtdose(g) for g in dose_paths]
    warnings = [f"{Path(g.path).name if g.path else 'dose'}: {w}" for g in grids for w in g.warnings]
    warnings += check_summable(grids)
    timings["read_dose"] = time.perf_counter() - start
    progress(0.1, "dose read")
    t = time.perf_counter()
    if not isinstance(reference, Reference):
        reference = read_reference(reference)
    warnings += [f"reference: {w}" for w in reference.warnings]
    warnings += check_frame_of_reference(grids, reference, registration)
    timings["read_reference"] = time.perf_counter() - t
    progress(0.2, "reference read")
    t = time.perf_counter()
    summed_native = None
    if len(grids) > 1 and all(same_grid(g, grids[0]) for g in grids[1:]):
        summed_native = np.sum([g.dose for g in grids], axis=0)
    if direction == Direction.DOSE_TO_CT:
        if summed_native is not None:  # one resample of the sum is cheaper than one per beam and identical (linear)
            sources = [_replace_dose(grids[0], summed_native)]
        else:
            sources = grids
        total = None
        inside = None
        for n, grid in enumerate(sources):
            def step(fraction, message, n=n):
                progress(0.2 + 0.7 * (n + fraction) / len(sources), message)
            values, resample_warnings = resample_dose(grid, reference.geometry, interpolation, registration, step)
            warnings += resample_warnings
            covered = ~np.isnan(values)
            np.copyto(values, np.float32(0), where=~covered)  # much faster than nan_to_num on 40M voxels
            total = values if total is None else total + values
            inside = covered if inside is None else inside | covered
        dose = total
        if outside_value != 0.0:
            dose[~inside] = outside_value
        statistics = dose_statistics(grids, summed_native, dose, inside, reference.geometry, registration)
        geometry, frame_offsets = reference.geometry, None
        timings["resample"] = time.perf_counter() - t
        reference_array = None
        if load_reference:
            t = time.perf_counter()
            reference_array = reference.array()
            timings["read_reference_voxels"] = time.perf_counter() - t
    else:
        base = grids[0]
        dose = (summed_native if summed_native is not None
                else np.sum([resample_dose_onto_dose(g, base, interpolation) for g in grids],
                            axis=0)).astype(np.float32)
        inside = np.ones(dose.shape, bool)
        t_read = time.perf_counter()
        volume = reference.array()
        timings["read_reference_voxels"] = time.perf_counter() - t_read
        reference_array = resample_volume_to_dose(volume, reference.geometry, base, interpolation,
                                                  np.linalg.inv(registration) if registration is not None else None,
                                                  reference_outside_value,
                                                  lambda f, m: progress(0.3 + 0.6 * f, m))
        centres = base.voxel_centers_lps()
        if registration is not None:
            centres = centres @ registration[:3, :3].T + registration[:3, 3]
        in_reference = inside_geometry(centres, reference.geometry)
        max_dose = float(dose.max()) if dose.size else 0.0
        weighted = dose * base.voxel_volumes_ml()[:, None, None]
        total_integral = float(weighted.sum())
        common = float(weighted[in_reference].sum())
        statistics = DoseStatistics(max_dose, max_dose, common, common, float((~in_reference).mean()),
                                    0.0 if total_integral == 0 else (total_integral - common) / total_integral)
        if base.is_uniform():
            geometry, frame_offsets = base.geometry(), None
        else:
            geometry, frame_offsets = None, np.asarray(base.frame_offsets, float)
            warnings.append("the dose grid has non-uniform frame offsets: "
                            "only .npz (with frame_offsets_mm) can hold it")
        timings["resample"] = time.perf_counter() - t - timings["read_reference_voxels"]
    warnings += statistics.warnings
    timings["total"] = time.perf_counter() - start
    progress(1.0, "aligned")
    return AlignmentResult(
        direction=direction, interpolation=interpolation, dose=dose.astype(np.float32, copy=False),
        inside_dose_grid=inside,
        geometry=geometry, frame_offsets=frame_offsets, units=grids[0].units, dose_paths=[g.path for g in grids],
        reference_source=reference.source, statistics=statistics, doses=[g.summary() for g in grids],
        reference_array=reference_array, warnings=warnings, timings=timings, dose_grids=grids, reference=reference,
    )


def _replace_dose(grid: DoseGrid, dose: np.ndarray) -> DoseGrid:
    from dataclasses import replace

    return replace(grid, dose=dose, warnings=[])
