"""Agreement metrics between two masks on one grid, with the definitions of Nikolov et al. (DeepMind's
``surface-distance`` package): the surface is the marching-cubes surface through the voxel corners, every surface
element (surfel) is weighted by its area, and all distances are in millimetres with the grid's anisotropic spacing.

Everything is computed inside the joint bounding box of the two masks plus one voxel (the corner grid needs it):
never on the full grid. Distances are exact nearest-surface-point distances, because every surface point of either
mask lies inside that box.

Conventions for empty structures (no NaN ever leaves this module):
  * both empty: Dice, Jaccard and surface Dice 1, distances None, ``status`` BOTH_EMPTY;
  * one side empty: Dice, Jaccard and surface Dice 0, surface distances inf, centroid distance None.
``reason`` says which case applied.
"""

from __future__ import annotations

import enum
import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from DicomFidelityCommonLib.errors import GeometryError
from DicomFidelityCommonLib.geometry import VolumeGeometry

DEFAULT_TOLERANCE_MM = 2.0
DEFAULT_PERCENTILE = 95.0
PARALLEL_QUERY_POINTS = 50_000
NEAR_OFFSETS = 125  # grid offsets tried before the k-d tree

Box = tuple[slice, slice, slice]  # [slice, row, column] ranges


class PairStatus(enum.Enum):
    BOTH_PRESENT = "both_present"
    A_EMPTY = "a_empty"
    B_EMPTY = "b_empty"
    BOTH_EMPTY = "both_empty"


@dataclass
class PairMetrics:
    """Agreement of mask A with mask B. Surface distances are symmetric unless named ``a_to_b`` / ``b_to_a``."""

    dice: float
    jaccard: float
    volume_a_ml: float
    volume_b_ml: float
    volume_difference_ml: float  # B - A
    hd95_mm: float | None  # robust Hausdorff at ``percentile``: max of the two directed percentiles
    hausdorff_mm: float | None  # maximum distance (100th percentile)
    msd_mm: float | None  # mean symmetric surface distance: mean of the two directed averages
    asd_a_to_b_mm: float | None
    asd_b_to_a_mm: float | None
    surface_dice: float
    tolerance_mm: float
    centroid_distance_mm: float | None
    status: PairStatus = PairStatus.BOTH_PRESENT
    reason: str | None = None
    percentile: float = DEFAULT_PERCENTILE

    @property
    def volume_difference_percent(self) -> float | None:
        """(B - A) / A in percent; None when A is empty."""
        return 100.0 * self.volume_difference_ml / self.volume_a_ml if self.volume_a_ml > 0 else None

    def to_json(self) -> dict:
        """JSON-safe: inf becomes None (``reason`` says why)."""
        out = {}
        for key, value in self.__dict__.items():
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = value
        out["volume_difference_percent"] = self.volume_difference_percent
        return out


@functools.lru_cache(maxsize=32)
def surface_area_table(spacing_kji: tuple[float, float, float]) -> np.ndarray:
    """Surfel area (mm^2) for each of the 256 corner configurations of a 2x2x2 neighbourhood.

    Bit ``4a + 2b + c`` of a code is the voxel at offset (a, b, c) along (slice, row, column). The surface is the
    classic (Lorensen) marching-cubes triangulation through edge midpoints; configurations with more than four inside
    voxels take their complement's triangles, so a surface has the same area seen from either side (the convention
    of Nikolov et al.'s table). Triangle area vectors scale with the spacing by their cofactors.
    """
    s0, s1, s2 = spacing_kji
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.array([float(np.linalg.norm(vectors * scale, axis=1).sum()) if len(vectors) else 0.0
                     for vectors in _unit_area_vectors()])


@functools.lru_cache(maxsize=1)
def _unit_area_vectors() -> list[np.ndarray]:
    """Per configuration, the area vectors (half cross products) of its triangles on the unit cube."""
    from skimage.measure import marching_cubes

    corners = list(itertools.product((0, 1), repeat=3))
    result = []
    for code in range(256):
        inside = code if bin(code).count("1") <= 4 else 255 - code
        if inside == 0:
            result.append(np.zeros((0, 3)))
            continue
        cube = np.zeros((2, 2, 2), np.float32)
        for bit, corner in enumerate(corners):
            if inside >> bit & 1:
                cube[corner] = 1.0
        vertices, faces, _, _ = marching_cubes(cube, 0.5, method="lorensen", allow_degenerate=True)
        triangles = vertices[faces].astype(float)
        result.append(np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]) / 2.0)
    return result


def corner_codes(padded: np.ndarray) -> np.ndarray:
    """Configuration code of every voxel corner of a 0/1 uint8 array padded by one zero voxel on each side.

    The result has one element less per axis than ``padded``: element q is the corner between voxels q-1 and q of
    the unpadded array.
    """
    n0, n1, n2 = (s - 1 for s in padded.shape)
    codes = np.zeros((n0, n1, n2), np.uint8)
    for bit, (a, b, c) in enumerate(itertools.product((0, 1), repeat=3)):
        codes |= padded[a:a + n0, b:b + n1, c:c + n2] << np.uint8(bit)
    return codes


@dataclass
class SurfaceDistances:
    """Every surfel of A with its distance to B's surface, and vice versa (what surface-distance returns)."""

    distances_a_to_b: np.ndarray
    distances_b_to_a: np.ndarray
    areas_a: np.ndarray
    areas_b: np.ndarray


def surface_distances_in_box(a: np.ndarray, b: np.ndarray, spacing_kji: Sequence[float]) -> SurfaceDistances:
    """Surfels and their distances for two boolean arrays covering (at least) both masks' bounding boxes.

    Work grows with the surface, not with the box volume as a distance transform's does: each surface point first
    looks for the other surface at the nearby grid offsets, nearest first (most points of two agreeing models are
    resolved there), and only the rest go to a k-d tree over the other surface's points. Either way the distance is
    computed from the integer index offset exactly as scipy's ``distance_transform_edt`` (and so surface-distance)
    computes it.
    """
    spacing_kji = tuple(float(s) for s in spacing_kji)
    table = surface_area_table(spacing_kji)
    codes_a = corner_codes(np.pad(a.view(np.uint8), 1))
    codes_b = corner_codes(np.pad(b.view(np.uint8), 1))
    border_a = (codes_a != 0) & (codes_a != 255)
    border_b = (codes_b != 0) & (codes_b != 255)
    areas_a, areas_b = table[codes_a[border_a]], table[codes_b[border_b]]
    points_a, points_b = np.argwhere(border_a), np.argwhere(border_b)
    if len(points_a) and len(points_b):
        to_b = _nearest_distances(points_a, points_b, border_b, spacing_kji)
        to_a = _nearest_distances(points_b, points_a, border_a, spacing_kji)
    else:
        to_b = np.full(areas_a.shape, np.inf)
        to_a = np.full(areas_b.shape, np.inf)
    return SurfaceDistances(to_b, to_a, areas_a, areas_b)


def _offset_distances(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Length (mm) of integer [k, j, i] offsets, summed in the order distance_transform_edt sums them."""
    delta = offsets.astype(np.float64) * spacing
    delta *= delta
    return np.sqrt(delta[:, 0] + delta[:, 1] + delta[:, 2])


@functools.lru_cache(maxsize=32)
def _offset_table(spacing_kji: tuple[float, float, float], max_offsets: int = NEAR_OFFSETS):
    """Grid offsets within ``radius`` mm, nearest first, and the reach (voxels per axis) that holds them all.

    Every offset outside the table is longer than ``radius`` (it leaves the reach on some axis), so the first table
    offset that meets the other surface, if within ``radius``, is the nearest one.
    """
    spacing = np.asarray(spacing_kji)
    radius = min(2.0 * spacing.max(), (max_offsets * float(np.prod(spacing)) * 3.0 / (4.0 * math.pi)) ** (1 / 3))
    radius = max(radius, float(spacing.min()))
    reach = np.floor(radius / spacing + 1e-9).astype(int)
    axes = [np.arange(-r, r + 1) for r in reach]
    offsets = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    lengths = _offset_distances(offsets, spacing)
    keep = lengths <= radius
    order = np.argsort(lengths[keep], kind="stable")
    return offsets[keep][order], lengths[keep][order], tuple(int(r) for r in reach)


def _nearest_distances(points: np.ndarray, targets: np.ndarray, target_mask: np.ndarray,
                       spacing_kji: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from every point to the nearest target point (integer [k, j, i] indices; ``target_mask`` is the
    boolean grid of the targets)."""
    offsets, lengths, reach = _offset_table(spacing_kji)
    padded = np.pad(target_mask, [(r, r) for r in reach])
    flat = padded.ravel()
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    index = (points + np.asarray(reach)) @ strides
    distances = np.empty(len(points))
    pending = np.arange(len(points))
    for delta, length in zip(offsets @ strides, lengths):
        hit = flat[index + delta]
        if hit.any():
            distances[pending[hit]] = length
            missed = ~hit
            pending, index = pending[missed], index[missed]
            if pending.size == 0:
                return distances
    from scipy.spatial import cKDTree  # the points farther than the table reaches

    spacing = np.asarray(spacing_kji)
    tree = cKDTree(targets * spacing)
    workers = -1 if pending.size > PARALLEL_QUERY_POINTS else 1  # threads cost more than they save on small sets
    _, nearest = tree.query(points[pending] * spacing, k=1, workers=workers)
    distances[pending] = _offset_distances(targets[nearest] - points[pending], spacing)
    return distances


def robust_hausdorff(distances: np.ndarray, areas: np.ndarray, percentile: float) -> float:
    """Directed distance below which ``percentile`` % of the surface area lies (surfels sorted by distance, then
    area, as surface-distance does, so ties resolve identically)."""
    if distances.size == 0:
        return math.inf
    order = np.lexsort((areas, distances))
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percentile / 100.0))
    return float(distances[order][min(index, distances.size - 1)])


def _weighted_mean(distances: np.ndarray, areas: np.ndarray) -> float:
    total = float(np.sum(areas))
    return float(np.sum(distances * areas) / total) if total > 0 else math.inf


def metrics_in_box(a: np.ndarray, b: np.ndarray, geometry: VolumeGeometry, offset_kji: Sequence[int] = (0, 0, 0),
                   tolerance_mm: float = DEFAULT_TOLERANCE_MM, percentile: float = DEFAULT_PERCENTILE) -> PairMetrics:
    """Metrics of two boolean arrays that cover both masks' bounding boxes; ``offset_kji`` is where the arrays start
    on ``geometry`` (for the centroids)."""
    from scipy import ndimage

    if a.shape != b.shape:
        raise GeometryError(f"masks have different shapes {a.shape} and {b.shape}")
    a, b = np.ascontiguousarray(a, dtype=bool), np.ascontiguousarray(b, dtype=bool)
    voxel_ml = abs(float(np.linalg.det(geometry.affine_lps[:3, :3]))) / 1000.0
    count_a, count_b = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    volume_a, volume_b = count_a * voxel_ml, count_b * voxel_ml
    common = dict(volume_a_ml=volume_a, volume_b_ml=volume_b, volume_difference_ml=volume_b - volume_a,
                  tolerance_mm=float(tolerance_mm), percentile=float(percentile))
    if count_a == 0 and count_b == 0:
        return PairMetrics(dice=1.0, jaccard=1.0, hd95_mm=None, hausdorff_mm=None, msd_mm=None, asd_a_to_b_mm=None,
                           asd_b_to_a_mm=None, surface_dice=1.0, centroid_distance_mm=None,
                           status=PairStatus.BOTH_EMPTY, reason="both masks empty: no surface to measure", **common)
    if count_a == 0 or count_b == 0:
        status = PairStatus.A_EMPTY if count_a == 0 else PairStatus.B_EMPTY
        side = "A" if count_a == 0 else "B"
        return PairMetrics(dice=0.0, jaccard=0.0, hd95_mm=math.inf, hausdorff_mm=math.inf, msd_mm=math.inf,
                           asd_a_to_b_mm=math.inf, asd_b_to_a_mm=math.inf, surface_dice=0.0,
                           centroid_distance_mm=None, status=status,
                           reason=f"mask {side} empty: distances to it are infinite", **common)
    direction = geometry.direction
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise GeometryError("surface distances need orthogonal grid axes; this grid is sheared: resample it first")
    intersection = int(np.count_nonzero(a & b))
    union = count_a + count_b - intersection
    spacing_kji = tuple(float(s) for s in geometry.spacing[::-1])
    surf = surface_distances_in_box(a, b, spacing_kji)
    asd_ab = _weighted_mean(surf.distances_a_to_b, surf.areas_a)
    asd_ba = _weighted_mean(surf.distances_b_to_a, surf.areas_b)
    hd = max(robust_hausdorff(surf.distances_a_to_b, surf.areas_a, percentile),
             robust_hausdorff(surf.distances_b_to_a, surf.areas_b, percentile))
    hd_max = max(float(surf.distances_a_to_b.max()), float(surf.distances_b_to_a.max()))
    touching = (np.sum(surf.areas_a[surf.distances_a_to_b <= tolerance_mm])
                + np.sum(surf.areas_b[surf.distances_b_to_a <= tolerance_mm]))
    surface_dice = float(touching / (np.sum(surf.areas_a) + np.sum(surf.areas_b)))
    offset = np.asarray(offset_kji, dtype=float)
    centroid_a = geometry.index_to_lps((np.asarray(ndimage.center_of_mass(a)) + offset)[::-1])
    centroid_b = geometry.index_to_lps((np.asarray(ndimage.center_of_mass(b)) + offset)[::-1])
    return PairMetrics(dice=2.0 * intersection / (count_a + count_b), jaccard=intersection / union, hd95_mm=hd,
                       hausdorff_mm=hd_max, msd_mm=(asd_ab + asd_ba) / 2.0, asd_a_to_b_mm=asd_ab,
                       asd_b_to_a_mm=asd_ba, surface_dice=surface_dice,
                       centroid_distance_mm=float(np.linalg.norm(centroid_a - centroid_b)), **common)


def bounding_box(mask: np.ndarray) -> Box | None:
    """Tight bounding box of a boolean array, None when empty."""
    from scipy import ndimage

    found = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == bool else (mask != 0).view(np.uint8))
    return found[0] if found else None


def union_box(*boxes: Box | None) -> Box | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes)) for axis in range(3))


def compare_masks(mask_a: np.ndarray, mask_b: np.ndarray, geometry: VolumeGeometry,
                  tolerance_mm: float = DEFAULT_TOLERANCE_MM, percentile: float = DEFAULT_PERCENTILE) -> PairMetrics:
    """Metrics of two full-grid boolean masks (arrays indexed [slice, row, column] on ``geometry``)."""
    for name, mask in (("A", mask_a), ("B", mask_b)):
        if tuple(mask.shape) != tuple(geometry.shape):
            raise GeometryError(f"mask {name} has shape {mask.shape}, geometry is {geometry.shape}")
    mask_a, mask_b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    box = union_box(bounding_box(mask_a), bounding_box(mask_b))
    if box is None:
        box = (slice(0, 0),) * 3
    return metrics_in_box(mask_a[box], mask_b[box], geometry, [s.start for s in box], tolerance_mm, percentile)
