"""Agreement metrics between two masks on one grid, with the definitions of Nikolov et al. (DeepMind's
``surface-distance`` package): the surface is the marching-cubes surface through the voxel corners, every surface
element (surfel) is weighted by its area, and all distances are in millimetres with the grid's anisotropic spacing.

Everything is computed inside a box holding both masks (in compare_segmentations, the structure's box across all
models), padded by the reach of the near-offset search: never on the full grid. Distances are exact nearest-surface-
point distances, because every surface point of either mask lies inside that box. Each mask's count, centroid and
surface are prepared once (prepare_mask) however many masks it is compared with (pair_metrics).

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
NEAR_OFFSETS = 1000  # grid offsets tried before the k-d tree
NEAR_SPACINGS = 4.0  # ... and at most this many of the largest spacing away
FEW_PENDING = 256  # points left for which one call per table offset costs more than gathering a block ...
BLOCK_GATHERS = 1 << 15  # ... of this many (points x offsets) at once
BOUNDARY_MARGIN = 1e-8  # relative area: far above the rounding of a float64 running sum of 10^7 surfels

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
    the unpadded array. Built one axis at a time (three shift-and-or passes instead of eight).
    """
    padded = padded.view(np.uint8) if padded.dtype == bool else padded
    codes = padded[:, :, :-1] | (padded[:, :, 1:] << np.uint8(1))  # bits 0-1: column offset 0/1
    codes = codes[:, :-1] | (codes[:, 1:] << np.uint8(2))  # bits 0-3: row offset too
    return codes[:-1] | (codes[1:] << np.uint8(4))  # bits 0-7: bit 4a + 2b + c for offset (a, b, c)


@dataclass
class SurfaceDistances:
    """Every surfel of A with its distance to B's surface, and vice versa (what surface-distance returns)."""

    distances_a_to_b: np.ndarray
    distances_b_to_a: np.ndarray
    areas_a: np.ndarray
    areas_b: np.ndarray
    area_rank_a: np.ndarray  # per surfel, the rank of its area among the table's (see robust_hausdorff)
    area_rank_b: np.ndarray
    key_a_to_b: np.ndarray  # per surfel, the sort key of its distance (see _nearest_distances)
    key_b_to_a: np.ndarray


def _padded(mask: np.ndarray, pad: Sequence[int]) -> np.ndarray:
    """``mask`` as 0/1 uint8 with ``pad[axis]`` zero voxels on both sides of every axis (one allocation)."""
    out = np.zeros(tuple(n + 2 * p for n, p in zip(mask.shape, pad)), np.uint8)
    out[tuple(slice(p, p + n) for n, p in zip(mask.shape, pad))] = mask.view(np.uint8)
    return out


def _surface(mask: np.ndarray, pad: Sequence[int], table: np.ndarray,
             rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(border-corner mask, flat indices of the border corners, their surfel areas, area ranks) of one mask.

    With ``pad`` = reach + 1 per axis, every border corner lies at least ``reach`` from the edge of the corner grid,
    so the near-offset lookups in _nearest_distances never leave it.
    """
    codes = corner_codes(_padded(mask, pad))
    shifted = codes - np.uint8(1)  # 0 and 255 (outside, inside) become 255 and 254: not border
    border = shifted < np.uint8(254)
    index = np.flatnonzero(border)
    border_codes = codes.ravel()[index]
    return border, index, table[border_codes], rank[border_codes]


@functools.lru_cache(maxsize=32)
def _area_rank(spacing_kji: tuple[float, float, float]) -> np.ndarray:
    """Dense rank (uint8) of every configuration's surfel area: equal areas, equal rank."""
    return np.unique(surface_area_table(spacing_kji), return_inverse=True)[1].astype(np.uint8).ravel()


@dataclass
class PreparedMask:
    """What the metrics need of one mask, computed once however many masks it is compared with: its voxel count,
    centroid and surface. Masks compared with each other must be prepared from arrays of one shape (one box)."""

    count: int
    centroid_kji: np.ndarray | None  # mean voxel index within the array; None when empty
    border: np.ndarray | None  # boolean corner grid of the surface, padded by the offset table's reach
    index: np.ndarray  # flat indices (into ``border``) of the surface corners, C order
    areas: np.ndarray  # their surfel areas (mm^2)
    area_rank: np.ndarray  # their areas' ranks (robust_hausdorff's sort key)


def prepare_mask(mask: np.ndarray, spacing_kji: Sequence[float]) -> PreparedMask:
    """Count, centroid and surface of a boolean array (see PreparedMask)."""
    spacing_kji = tuple(float(s) for s in spacing_kji)
    mask = np.ascontiguousarray(mask, dtype=bool)
    count = int(np.count_nonzero(mask))
    if count == 0:
        empty = np.zeros(0)
        return PreparedMask(0, None, None, np.zeros(0, np.intp), empty, np.zeros(0, np.uint8))
    _, _, reach = _offset_table(spacing_kji)
    border, index, areas, rank = _surface(mask, [r + 1 for r in reach], surface_area_table(spacing_kji),
                                          _area_rank(spacing_kji))
    return PreparedMask(count, _centre_of_mass(mask, count), border, index, areas, rank)


def prepared_distances(a: PreparedMask, b: PreparedMask, spacing_kji: Sequence[float]) -> SurfaceDistances:
    """Surfel distances between two prepared masks (both non-empty, prepared from arrays of one shape).

    Work grows with the surface, not with the box volume as a distance transform's does: each surface point first
    looks for the other surface at the nearby grid offsets, nearest first (most points of two agreeing models are
    resolved there), and only the rest go to a k-d tree over the other surface's points. Either way the distance is
    computed from the integer index offset exactly as scipy's ``distance_transform_edt`` (and so surface-distance)
    computes it. Surfels come in C order of their corner, as surface-distance lists them (the same in any box).
    """
    spacing_kji = tuple(float(s) for s in spacing_kji)
    to_b, key_b = _nearest_distances(a.index, b.index, b.border, spacing_kji)
    to_a, key_a = _nearest_distances(b.index, a.index, a.border, spacing_kji)
    return SurfaceDistances(to_b, to_a, a.areas, b.areas, a.area_rank, b.area_rank, key_b, key_a)


def _offset_distances(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Length (mm) of integer [k, j, i] offsets, summed in the order distance_transform_edt sums them."""
    delta = offsets.astype(np.float64) * spacing
    delta *= delta
    return np.sqrt(delta[:, 0] + delta[:, 1] + delta[:, 2])


@functools.lru_cache(maxsize=32)
def _offset_table(spacing_kji: tuple[float, float, float]):
    """Grid offsets within ``radius`` mm, nearest first, and the reach (voxels per axis) that holds them all.

    Every offset outside the table is longer than ``radius`` (it leaves the reach on some axis), so the first table
    offset that meets the other surface, if within ``radius``, is the nearest one.
    """
    spacing = np.asarray(spacing_kji)
    ball = (NEAR_OFFSETS * float(np.prod(spacing)) * 3.0 / (4.0 * math.pi)) ** (1 / 3)
    radius = min(NEAR_SPACINGS * spacing.max(), ball)
    radius = max(radius, float(spacing.min()))
    reach = np.floor(radius / spacing + 1e-9).astype(int)
    axes = [np.arange(-r, r + 1) for r in reach]
    offsets = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    lengths = _offset_distances(offsets, spacing)
    keep = lengths <= radius
    order = np.argsort(lengths[keep], kind="stable")
    return offsets[keep][order], lengths[keep][order], tuple(int(r) for r in reach)


@functools.lru_cache(maxsize=32)
def _length_groups(spacing_kji: tuple[float, float, float]) -> list[tuple[int, int]]:
    """(first, stop) table positions of every run of equal offset lengths."""
    lengths = _offset_table(spacing_kji)[1]
    bounds = np.flatnonzero(np.r_[True, lengths[1:] != lengths[:-1], True])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@functools.lru_cache(maxsize=32)
def _offset_groups(spacing_kji: tuple[float, float, float]) -> np.ndarray:
    """The length group of every table offset."""
    groups = _length_groups(spacing_kji)
    return np.repeat(np.arange(len(groups), dtype=np.uint16), [stop - first for first, stop in groups])


def _nearest_distances(points: np.ndarray, targets: np.ndarray, target_mask: np.ndarray,
                       spacing_kji: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from every point to the nearest target point, and an integer sort key of the distances (equal
    keys for equal distances, ordered as they are: robust_hausdorff's radix sort).

    ``points`` and ``targets`` are flat indices into ``target_mask`` (the boolean corner grid of the targets), whose
    border is at least the offset table's reach wide around every point. The table is tried one length at a time
    (all offsets of equal length together, then the points that met a target are set aside): the first length at
    which a point meets the other surface is its distance, exactly as offset by offset. When few points are left,
    each call gathers a block of offsets for all of them and takes every point's first hit (the same answer, with
    fewer calls); the points beyond the table go to a k-d tree.
    """
    offsets, lengths, _ = _offset_table(spacing_kji)
    shape = target_mask.shape
    flat = target_mask.ravel()
    deltas = offsets @ np.array([shape[1] * shape[2], shape[2], 1])
    groups = _length_groups(spacing_kji)
    distances = np.empty(len(points))
    keys = np.empty(len(points), np.uint16)  # the length group; beyond the table, the rank among the far distances
    pending = np.arange(len(points))
    index = points
    position = 0  # table offsets tried so far
    for group, (first, stop) in enumerate(groups):
        if pending.size <= FEW_PENDING:
            break
        hit = flat[index + deltas[first]]
        for delta in deltas[first + 1:stop]:
            hit |= flat[index + delta]
        position = stop
        if hit.any():
            resolved = pending[hit]
            distances[resolved] = lengths[first]
            keys[resolved] = group
            missed = ~hit
            pending, index = pending[missed], index[missed]
    # the last few points: a block of offsets per call, each point's first hit (the table is sorted by length)
    offset_group = _offset_groups(spacing_kji)
    while pending.size and position < len(deltas):
        stop = min(position + max(1, BLOCK_GATHERS // pending.size), len(deltas))
        hits = flat[index[:, None] + deltas[position:stop]]
        found = hits.any(axis=1)
        if found.any():
            first_hit = position + hits[found].argmax(axis=1)
            resolved = pending[found]
            distances[resolved] = lengths[first_hit]
            keys[resolved] = offset_group[first_hit]
            pending, index = pending[~found], index[~found]
        position = stop
    if pending.size == 0:
        return distances, keys
    from scipy.spatial import cKDTree  # the points farther than the table reaches

    spacing = np.asarray(spacing_kji)
    target_kji = np.stack(np.unravel_index(targets, shape), axis=1)
    point_kji = np.stack(np.unravel_index(index, shape), axis=1)
    tree = cKDTree(target_kji * spacing)
    workers = -1 if pending.size > PARALLEL_QUERY_POINTS else 1  # threads cost more than they save on small sets
    _, nearest = tree.query(point_kji * spacing, k=1, workers=workers)
    far = _offset_distances(target_kji[nearest] - point_kji, spacing)  # all longer than any table length
    distances[pending] = far
    unique, rank = np.unique(far, return_inverse=True)
    if len(groups) + len(unique) > np.iinfo(np.uint16).max:
        keys = keys.astype(np.int64)
    keys[pending] = len(groups) + rank.ravel()
    return distances, keys


def robust_hausdorff(distances: np.ndarray, areas: np.ndarray, percentile: float,
                     area_rank: np.ndarray | None = None, distance_key: np.ndarray | None = None) -> float:
    """Directed distance below which ``percentile`` % of the surface area lies (surfels sorted by distance, then
    area, as surface-distance does, so ties resolve identically).

    With ``distance_key`` (small integers, equal for equal distances, ordered as the distances) the answer is read
    from the area summed per key: every surfel of one key has the same distance, so the order inside a key cannot
    change it. Only when the percentile falls within rounding of a key's boundary (the per-key sums and
    surface-distance's running sum may round differently there) are the surfels sorted as surface-distance sorts
    them: stable radix sorts, area rank first, then distance key, which is exactly lexsort's order.
    """
    if distances.size == 0:
        return math.inf
    fraction = percentile / 100.0
    if distance_key is not None:
        per_key = np.bincount(distance_key, weights=areas)
        cumulative = np.cumsum(per_key) / np.sum(areas)
        key = min(int(np.searchsorted(cumulative, fraction)), per_key.size - 1)
        below = cumulative[key - 1] if key else 0.0
        if min(abs(cumulative[key] - fraction), abs(fraction - below)) > BOUNDARY_MARGIN:
            return float(distances[int(np.argmax(distance_key == key))])
    if area_rank is None or distance_key is None:
        order = np.lexsort((areas, distances))
    else:
        order = np.argsort(area_rank, kind="stable")
        order = order[np.argsort(distance_key[order], kind="stable")]
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    index = int(np.searchsorted(cumulative, fraction))
    return float(distances[order][min(index, distances.size - 1)])


def _weighted_mean(distances: np.ndarray, areas: np.ndarray) -> float:
    total = float(np.sum(areas))
    return float(np.sum(distances * areas) / total) if total > 0 else math.inf


def _centre_of_mass(mask: np.ndarray, count: int) -> np.ndarray:
    """Mean [k, j, i] index of a non-empty boolean array, from its projections (two passes over the array instead of
    scipy's index grids)."""
    data = mask.view(np.uint8)
    plane = data.sum(axis=0, dtype=np.int64)  # (rows, columns)
    per_slice = data.reshape(data.shape[0], -1).sum(axis=1, dtype=np.int64)
    marginals = (per_slice, plane.sum(axis=1), plane.sum(axis=0))
    return np.array([float(np.dot(m, np.arange(m.size, dtype=np.int64))) for m in marginals]) / count


def metrics_in_box(a: np.ndarray, b: np.ndarray, geometry: VolumeGeometry, offset_kji: Sequence[int] = (0, 0, 0),
                   tolerance_mm: float = DEFAULT_TOLERANCE_MM, percentile: float = DEFAULT_PERCENTILE) -> PairMetrics:
    """Metrics of two boolean arrays that cover both masks' bounding boxes; ``offset_kji`` is where the arrays start
    on ``geometry`` (for the centroids)."""
    if a.shape != b.shape:
        raise GeometryError(f"masks have different shapes {a.shape} and {b.shape}")
    spacing_kji = tuple(float(s) for s in geometry.spacing[::-1])
    return pair_metrics(a, b, prepare_mask(a, spacing_kji), prepare_mask(b, spacing_kji), geometry, offset_kji,
                        tolerance_mm, percentile)


@functools.lru_cache(maxsize=64)
def _orthogonal(direction: bytes) -> bool:
    matrix = np.frombuffer(direction).reshape(3, 3)
    return bool(np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4))


def pair_metrics(a: np.ndarray, b: np.ndarray, prepared_a: PreparedMask, prepared_b: PreparedMask,
                 geometry: VolumeGeometry, offset_kji: Sequence[int] = (0, 0, 0),
                 tolerance_mm: float = DEFAULT_TOLERANCE_MM, percentile: float = DEFAULT_PERCENTILE) -> PairMetrics:
    """metrics_in_box of two same-shape boolean arrays already prepared (prepare_mask): a structure's masks in
    several models are prepared once in the structure's box, then compared pair by pair."""
    if a.shape != b.shape:
        raise GeometryError(f"masks have different shapes {a.shape} and {b.shape}")
    voxel_ml = abs(float(np.linalg.det(geometry.affine_lps[:3, :3]))) / 1000.0
    count_a, count_b = prepared_a.count, prepared_b.count
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
    if not _orthogonal(np.ascontiguousarray(geometry.direction, dtype=float).tobytes()):
        raise GeometryError("surface distances need orthogonal grid axes; this grid is sheared: resample it first")
    intersection = int(np.count_nonzero(np.logical_and(a, b)))
    union = count_a + count_b - intersection
    spacing_kji = tuple(float(s) for s in geometry.spacing[::-1])
    surf = prepared_distances(prepared_a, prepared_b, spacing_kji)
    asd_ab = _weighted_mean(surf.distances_a_to_b, surf.areas_a)
    asd_ba = _weighted_mean(surf.distances_b_to_a, surf.areas_b)
    hd = max(robust_hausdorff(surf.distances_a_to_b, surf.areas_a, percentile, surf.area_rank_a, surf.key_a_to_b),
             robust_hausdorff(surf.distances_b_to_a, surf.areas_b, percentile, surf.area_rank_b, surf.key_b_to_a))
    hd_max = max(float(surf.distances_a_to_b.max()), float(surf.distances_b_to_a.max()))
    touching = (np.sum(surf.areas_a[surf.distances_a_to_b <= tolerance_mm])
                + np.sum(surf.areas_b[surf.distances_b_to_a <= tolerance_mm]))
    surface_dice = float(touching / (np.sum(surf.areas_a) + np.sum(surf.areas_b)))
    offset = np.asarray(offset_kji, dtype=float)
    centroid_a = geometry.index_to_lps((prepared_a.centroid_kji + offset)[::-1])
    centroid_b = geometry.index_to_lps((prepared_b.centroid_kji + offset)[::-1])
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
