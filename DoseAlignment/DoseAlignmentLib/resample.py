"""Resample dose onto a reference grid (and a reference volume onto the dose grid) with SimpleITK.

Uniform frame offsets: one SimpleITK resample with the exact grid (any orientation, any interpolator).
Non-uniform offsets cannot be one SimpleITK image, so for linear and nearest interpolation every pair of adjacent frames
becomes a two-frame image with its own exact spacing, and each target voxel takes its value from the slab it lies in.
Trilinear interpolation is per-slab anyway, so this is exact, and each target slice is touched by only a few slabs.
B-spline needs more than two frames: the stack is first interpolated linearly along the normal to a uniform step (the
smallest frame gap), with a warning. Voxels outside the source grid (ITK convention: voxels are boxes, so half a voxel
beyond the outer centres still counts) get ``outside_value``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import SimpleITK as sitk

from DicomFidelityCommonLib.errors import GeometryError
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from DicomFidelityCommonLib.progress import ProgressCallback
from DoseAlignmentLib.rtdose import DoseGrid


class Interpolation(str, Enum):
    LINEAR = "linear"
    NEAREST = "nearest"
    BSPLINE = "bspline"


class Direction(str, Enum):
    DOSE_TO_CT = "dose-to-ct"
    CT_TO_DOSE = "ct-to-dose"


_SITK_INTERPOLATORS = {
    Interpolation.LINEAR: sitk.sitkLinear,
    Interpolation.NEAREST: sitk.sitkNearestNeighbor,
    Interpolation.BSPLINE: sitk.sitkBSpline,
}


def _no_progress(fraction: float, message: str) -> None:
    pass


def _transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """SimpleITK transform for a 4x4 LPS matrix that maps *output* grid points to *input* grid points."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(float(v) for v in np.asarray(matrix)[:3, :3].ravel()))
    transform.SetTranslation(tuple(float(v) for v in np.asarray(matrix)[:3, 3]))
    return transform


def _resample(image: sitk.Image, target: VolumeGeometry, output_to_input: np.ndarray, interpolation: Interpolation,
              default: float, slices: tuple[int, int] | None = None) -> np.ndarray:
    """Resample ``image`` onto slices [k0, k1) of ``target``; returns a float32 array [k, j, i]."""
    k0, k1 = slices if slices is not None else (0, target.shape[0])
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize((int(target.shape[2]), int(target.shape[1]), int(k1 - k0)))
    origin = target.affine_lps[:3, 3] + k0 * target.affine_lps[:3, 2]
    resampler.SetOutputOrigin(tuple(float(v) for v in origin))
    resampler.SetOutputSpacing(tuple(float(v) for v in target.spacing))
    resampler.SetOutputDirection(tuple(float(v) for v in target.direction.ravel()))
    resampler.SetTransform(_transform(output_to_input))
    resampler.SetInterpolator(_SITK_INTERPOLATORS[interpolation])
    resampler.SetDefaultPixelValue(float(default))
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image))


def _slab_geometry(grid: DoseGrid, offset: float, step: float, frames: int = 2) -> VolumeGeometry:
    origin = np.asarray(grid.image_position, float) + grid.normal * offset
    affine = affine_from_dicom(origin, grid.image_orientation, grid.pixel_spacing, grid.normal * step)
    return VolumeGeometry((frames, grid.shape[1], grid.shape[2]), affine)


def _normal_coordinate(grid: DoseGrid, target: VolumeGeometry, target_to_dose: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients (c_i, c_j, c_k) and c0 of s = distance along the dose normal from ImagePositionPatient,
    as an affine function of the target voxel index."""
    g = target_to_dose @ target.affine_lps
    coefficients = grid.normal @ g[:3, :3]
    constant = float(grid.normal @ (g[:3, 3] - np.asarray(grid.image_position, float)))
    return coefficients, constant


def _slice_range(coefficients, constant, shape, low, high) -> tuple[int, int]:
    """Target slices [k0, k1) that hold any voxel with low <= s <= high."""
    slices, rows, cols = shape
    ci, cj, ck = coefficients
    smallest = constant + min(0.0, ci * (cols - 1)) + min(0.0, cj * (rows - 1))
    largest = constant + max(0.0, ci * (cols - 1)) + max(0.0, cj * (rows - 1))
    margin = 1e-6
    if abs(ck) < 1e-12:
        return (0, slices) if (smallest <= high + margin and largest >= low - margin) else (0, 0)
    bounds = sorted([(low - largest) / ck, (high - smallest) / ck])
    k0 = max(0, int(np.floor(bounds[0] - margin)))
    k1 = min(slices, int(np.ceil(bounds[1] + margin)) + 1)
    return k0, max(k0, k1)


def resample_dose(grid: DoseGrid, target: VolumeGeometry, interpolation: Interpolation = Interpolation.LINEAR,
                  dose_to_target: np.ndarray | None = None,
                  progress: ProgressCallback | None = None) -> tuple[np.ndarray, list[str]]:
    """Dose on ``target``: float32 array [k, j, i] with NaN outside the dose grid (the caller fills it).

    ``dose_to_target`` is a 4x4 LPS matrix taking dose-frame points to target-frame points (a registration);
    identity when both share a FrameOfReferenceUID.
    """
    progress = progress or _no_progress
    interpolation = Interpolation(interpolation)
    matrix = np.eye(4) if dose_to_target is None else np.asarray(dose_to_target, float)
    target_to_dose = np.linalg.inv(matrix)
    warnings: list[str] = []
    values = grid.dose.astype(np.float32)
    if grid.is_uniform():
        image = grid.geometry().to_sitk(values)
        progress(0.1, "resampling dose")
        result = _resample(image, target, target_to_dose, interpolation, np.nan)
    elif interpolation == Interpolation.BSPLINE:
        result, warnings = _resample_bspline_nonuniform(grid, values, target, target_to_dose)
    else:
        result = _resample_by_slabs(grid, values, target, target_to_dose, interpolation, progress)
    if interpolation == Interpolation.BSPLINE:
        np.maximum(result, 0, out=result, where=~np.isnan(result))  # cubic overshoot must not create negative dose
    progress(1.0, "dose resampled")
    return result, warnings


def _resample_by_slabs(grid, values, target, target_to_dose, interpolation, progress) -> np.ndarray:
    offsets = np.asarray(grid.frame_offsets, float)
    order = np.argsort(offsets)
    s = offsets[order]
    coefficients, constant = _normal_coordinate(grid, target, target_to_dose)
    result = np.full(target.shape, np.nan, dtype=np.float32)
    slabs = len(s) - 1
    for f in range(slabs):
        low = s[f] - (s[1] - s[0]) / 2 if f == 0 else s[f]
        high = s[f + 1] + (s[-1] - s[-2]) / 2 if f == slabs - 1 else s[f + 1]
        k0, k1 = _slice_range(coefficients, constant, target.shape, low, high)
        if k1 <= k0:
            continue
        slab = _slab_geometry(grid, s[f], s[f + 1] - s[f]).to_sitk(
            np.ascontiguousarray(values[[order[f], order[f + 1]]]))
        part = _resample(slab, target, target_to_dose, interpolation, np.nan, (k0, k1))
        k = np.arange(k0, k1, dtype=float)[:, None, None]
        j = np.arange(target.shape[1], dtype=float)[None, :, None]
        i = np.arange(target.shape[2], dtype=float)[None, None, :]
        coordinate = constant + coefficients[0] * i + coefficients[1] * j + coefficients[2] * k
        inside = (coordinate >= low) & ((coordinate <= high) if f == slabs - 1 else (coordinate < high))
        window = result[k0:k1]
        window[inside] = part[inside]
        progress(0.1 + 0.9 * (f + 1) / slabs, f"resampling dose slab {f + 1}/{slabs}")
    return result


def _resample_bspline_nonuniform(grid, values, target, target_to_dose) -> tuple[np.ndarray, list[str]]:
    offsets = np.asarray(grid.frame_offsets, float)
    order = np.argsort(offsets)
    s = offsets[order]
    stacked = values[order]
    step = float(np.min(np.diff(s)))
    count = int(np.ceil((s[-1] - s[0]) / step - 1e-9)) + 1
    positions = np.linspace(s[0], s[-1], count)
    step = float(positions[1] - positions[0]) if count > 1 else step
    upper = np.clip(np.searchsorted(s, positions, side="right"), 1, len(s) - 1)
    weight = ((positions - s[upper - 1]) / (s[upper] - s[upper - 1])).astype(np.float32)[:, None, None]
    uniform = stacked[upper - 1] * (1 - weight) + stacked[upper] * weight
    image = _slab_geometry(grid, s[0], step, count).to_sitk(np.ascontiguousarray(uniform, dtype=np.float32))
    warning = (f"B-spline on non-uniform frame offsets: the dose stack was first interpolated linearly to a uniform "
               f"{step:.3f} mm step along the normal")
    return _resample(image, target, target_to_dose, Interpolation.BSPLINE, np.nan), [warning]


def resample_volume_to_dose(volume: np.ndarray, volume_geometry: VolumeGeometry, grid: DoseGrid,
                            interpolation: Interpolation = Interpolation.LINEAR,
                            dose_to_volume: np.ndarray | None = None,
                            outside_value: float = -1000.0, progress: ProgressCallback | None = None) -> np.ndarray:
    """A reference volume (e.g. CT in HU) on the dose grid, frames in the RTDOSE's order
    (exact even when non-uniform)."""
    progress = progress or _no_progress
    interpolation = Interpolation(interpolation)
    matrix = np.eye(4) if dose_to_volume is None else np.asarray(dose_to_volume, float)
    image = volume_geometry.to_sitk(np.ascontiguousarray(volume, dtype=np.float32))
    if grid.is_uniform():
        result = _resample(image, grid.geometry(), matrix, interpolation, outside_value)
    else:
        result = np.empty(grid.shape, np.float32)
        for f, offset in enumerate(np.asarray(grid.frame_offsets, float)):
            result[f] = _resample(image, _slab_geometry(grid, offset, 1.0, 1), matrix, interpolation, outside_value)[0]
            progress((f + 1) / grid.shape[0], f"resampling frame {f + 1}/{grid.shape[0]}")
    if interpolation == Interpolation.BSPLINE:
        # keep cubic overshoot inside the source range (HU must not invent values)
        np.clip(result, float(np.min(volume)), float(np.max(volume)), out=result)
    progress(1.0, "volume resampled")
    return result


def resample_dose_onto_dose(grid: DoseGrid, reference: DoseGrid, interpolation: Interpolation) -> np.ndarray:
    """Another RTDOSE on ``reference``'s grid (to sum per-beam doses on differing grids)."""
    if same_grid(grid, reference):
        return grid.dose.astype(np.float32)
    if not reference.is_uniform():
        raise GeometryError("doses on different grids can only be summed on a uniform grid; "
                            "resample dose-to-ct instead", reference.path, "GridFrameOffsetVector")
    result, _ = resample_dose(grid, reference.geometry(), interpolation)
    np.copyto(result, np.float32(0), where=np.isnan(result))
    return result


def same_grid(a: DoseGrid, b: DoseGrid, tolerance_mm: float = 1e-3) -> bool:
    return (a.shape == b.shape and np.allclose(a.image_position, b.image_position, atol=tolerance_mm)
            and np.allclose(a.image_orientation, b.image_orientation, atol=1e-6)
            and np.allclose(a.pixel_spacing, b.pixel_spacing, atol=tolerance_mm)
            and np.allclose(a.frame_offsets, b.frame_offsets, atol=tolerance_mm))


@dataclass
class DoseStatistics:
    """What the resampling kept: compare ``max_dose_in`` with ``max_dose_out`` and the two integrals."""

    max_dose_in: float
    max_dose_out: float
    integral_in_common_gy_ml: float  # dose grid voxels whose centres lie inside the reference grid
    integral_out_common_gy_ml: float  # reference voxels inside the dose grid
    fraction_dose_voxels_outside_reference: float
    fraction_dose_integral_outside_reference: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def inside_geometry(points_lps: np.ndarray, geometry: VolumeGeometry) -> np.ndarray:
    """Which points fall inside the grid's voxels (half a voxel beyond the outer centres counts)."""
    index = geometry.lps_to_index(points_lps.reshape(-1, 3))
    shape_ijk = np.array(geometry.shape[::-1], dtype=float)
    inside = np.all((index >= -0.5) & (index < shape_ijk - 0.5), axis=1)
    return inside.reshape(points_lps.shape[:-1])


def dose_statistics(grids: list[DoseGrid], summed_native: np.ndarray | None, resampled: np.ndarray, inside: np.ndarray,
                    target: VolumeGeometry, dose_to_target: np.ndarray | None = None) -> DoseStatistics:
    """Statistics for dose -> reference; ``summed_native`` is the sum on the first grid when all grids agree."""
    matrix = np.eye(4) if dose_to_target is None else np.asarray(dose_to_target, float)
    max_in = 0.0
    integral_common = integral_total = 0.0
    voxels_outside = voxels_total = 0
    if summed_native is not None:
        pairs = [(grids[0], summed_native)]
        max_in = float(summed_native.max())
    else:
        pairs = [(g, g.dose) for g in grids]
        max_in = float(max(g.dose.max() for g in grids))
    for grid, dose in pairs:
        centres = grid.voxel_centers_lps()
        centres = centres @ matrix[:3, :3].T + matrix[:3, 3]
        in_reference = inside_geometry(centres, target)
        weighted = dose * grid.voxel_volumes_ml()[:, None, None]
        integral_common += float(weighted[in_reference].sum())
        integral_total += float(weighted.sum())
        voxels_outside += int((~in_reference).sum())
        voxels_total += in_reference.size
    voxel_ml = abs(float(np.linalg.det(target.affine_lps[:3, :3]))) / 1000.0
    integral_out = float(resampled[inside].sum(dtype=np.float64)) * voxel_ml
    max_out = float(resampled[inside].max()) if inside.any() else 0.0
    warnings = []
    fraction_integral = 0.0 if integral_total == 0 else (integral_total - integral_common) / integral_total
    if fraction_integral > 1e-3:
        warnings.append(f"{100 * fraction_integral:.1f}% of the dose integral lies outside the reference grid "
                        "and is lost")
    if max_in > 0 and abs(max_out - max_in) > 0.01 * max_in:
        warnings.append(f"maximum dose changed by more than 1% on resampling ({max_in:.4g} -> {max_out:.4g})")
    return DoseStatistics(max_in, max_out, integral_common, integral_out, voxels_outside / max(voxels_total, 1),
                          fraction_integral, warnings)
