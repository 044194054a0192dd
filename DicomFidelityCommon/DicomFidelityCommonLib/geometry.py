"""Patient-space geometry of a voxel grid, in LPS (DICOM's patient coordinate system).

Arrays are indexed [k, j, i] = [slice, row, column]. ``affine_lps`` maps the homogeneous voxel index
(i, j, k, 1) to LPS millimetres; Slicer's IJKToRAS is ``LPS_TO_RAS @ affine_lps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from DicomFidelityCommonLib.errors import GeometryError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_dicom(
    image_position: Sequence[float],
    image_orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float] | float,
) -> np.ndarray:
    """Build ``affine_lps`` from DICOM attributes.

    ``pixel_spacing`` is DICOM order (row spacing, column spacing) = (dy, dx).
    ``slice_step`` is the vector from one slice origin to the next (or its length along the normal).
    """
    orientation = np.asarray(image_orientation, dtype=float)
    if orientation.shape != (6,):
        raise GeometryError(f"ImageOrientationPatient must have 6 values, got {list(image_orientation)}")
    row_direction = orientation[:3]  # direction of increasing column index
    column_direction = orientation[3:]  # direction of increasing row index
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    step = np.asarray(slice_step, dtype=float)
    if step.ndim == 0:
        step = np.cross(row_direction, column_direction) * float(step)
    affine = np.eye(4)
    affine[:3, 0] = row_direction * column_spacing
    affine[:3, 1] = column_direction * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = np.asarray(image_position, dtype=float)
    return affine


@dataclass(frozen=True)
class VolumeGeometry:
    """A regular voxel grid in patient space."""

    shape: tuple[int, int, int]  # (slices, rows, columns)
    affine_lps: np.ndarray = field(repr=False)

    def __post_init__(self):
        affine = np.asarray(self.affine_lps, dtype=float)
        if affine.shape != (4, 4):
            raise GeometryError(f"affine must be 4x4, got {affine.shape}")
        object.__setattr__(self, "affine_lps", affine)
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @classmethod
    def from_origin_spacing_direction(cls, shape, origin_lps, spacing, direction) -> VolumeGeometry:
        """``spacing`` is (dx, dy, dz) along (i, j, k); ``direction`` is a 3x3 whose columns are the axis cosines."""
        affine = np.eye(4)
        affine[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)
        affine[:3, 3] = origin_lps
        return cls(tuple(shape), affine)

    @property
    def spacing(self) -> np.ndarray:
        """(dx, dy, dz): voxel size along column, row and slice index."""
        return np.linalg.norm(self.affine_lps[:3, :3], axis=0)

    @property
    def origin_lps(self) -> np.ndarray:
        return self.affine_lps[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        return self.affine_lps[:3, :3] / self.spacing

    @property
    def affine_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.affine_lps

    @property
    def image_orientation(self) -> list[float]:
        """DICOM ImageOrientationPatient (row direction, then column direction)."""
        d = self.direction
        return [float(v) for v in (*d[:, 0], *d[:, 1])]

    @property
    def pixel_spacing(self) -> list[float]:
        """DICOM PixelSpacing: (row spacing, column spacing) = (dy, dx)."""
        dx, dy, _ = self.spacing
        return [float(dy), float(dx)]

    @property
    def slice_normal(self) -> np.ndarray:
        d = self.direction
        return np.cross(d[:, 0], d[:, 1])

    def slice_positions_lps(self) -> np.ndarray:
        """ImagePositionPatient of every slice, shape (slices, 3)."""
        k = np.arange(self.shape[0], dtype=float)
        return self.affine_lps[:3, 3][None, :] + k[:, None] * self.affine_lps[:3, 2][None, :]

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        inverse = np.linalg.inv(self.affine_lps)
        lps = np.asarray(lps, dtype=float)
        return lps @ inverse[:3, :3].T + inverse[:3, 3]

    def is_close(self, other: VolumeGeometry, atol_mm: float = 1e-3) -> bool:
        """Same shape and every grid corner within ``atol_mm``."""
        if tuple(self.shape) != tuple(other.shape):
            return False
        corners = np.array([[i, j, k] for i in (0, self.shape[2] - 1) for j in (0, self.shape[1] - 1)
                            for k in (0, self.shape[0] - 1)], dtype=float)
        corners = np.vstack([corners, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]])
        return bool(np.allclose(self.index_to_lps(corners), other.index_to_lps(corners), atol=atol_mm))

    def is_reindexing_of(self, other: VolumeGeometry, atol: float = 1e-3) -> bool:
        """True when every voxel centre of ``other`` is a voxel centre of this grid (axes permuted or flipped, any
        integer offset): moving data between the two is a copy, not an interpolation."""
        mapping = np.linalg.inv(self.affine_lps) @ other.affine_lps
        linear, offset = mapping[:3, :3], mapping[:3, 3]
        signed_permutation = np.allclose(np.abs(linear).sum(axis=0), 1, atol=atol) and np.allclose(
            np.abs(linear), np.round(np.abs(linear)), atol=atol)
        return bool(signed_permutation and np.allclose(offset, np.round(offset), atol=atol))

    def to_sitk(self, array: np.ndarray):
        """A SimpleITK image of ``array`` (indexed [k, j, i]) with this geometry (SimpleITK is LPS too)."""
        import SimpleITK as sitk

        if tuple(array.shape[:3]) != tuple(self.shape):
            raise GeometryError(f"array shape {array.shape} does not match geometry shape {self.shape}")
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(tuple(float(v) for v in self.origin_lps))
        image.SetSpacing(tuple(float(v) for v in self.spacing))
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image) -> VolumeGeometry:
        size = image.GetSize()
        shape = (size[2], size[1], size[0]) if len(size) == 3 else (1, size[1], size[0])
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        return cls.from_origin_spacing_direction(shape, image.GetOrigin(), image.GetSpacing(), direction)

    def to_json(self) -> dict:
        return {
            "shape": list(self.shape),
            "affine_lps": self.affine_lps.tolist(),
            "spacing": self.spacing.tolist(),
        }


def resample_labels(labels: np.ndarray, source: VolumeGeometry, target: VolumeGeometry) -> np.ndarray:
    """Labels of ``source`` at the voxel centres of ``target``, nearest neighbour (SimpleITK), 0 outside.

    The one label resampler of the project; the array itself (no copy) when the grids coincide.
    """
    import SimpleITK as sitk

    if source.is_close(target, atol_mm=1e-4):
        return labels
    image = source.to_sitk(labels)
    resampled = sitk.Resample(image, [int(target.shape[2]), int(target.shape[1]), int(target.shape[0])],
                              sitk.Transform(), sitk.sitkNearestNeighbor,
                              tuple(float(v) for v in target.origin_lps), tuple(float(v) for v in target.spacing),
                              tuple(float(v) for v in target.direction.ravel()), 0, image.GetPixelID())
    return sitk.GetArrayFromImage(resampled)
