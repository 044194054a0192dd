"""Per-structure agreement metrics: closed-form shapes on anisotropic grids, and equality with DeepMind's
surface-distance package (the definitions we follow; test oracle only, never imported by production code)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from DicomFidelityCommonLib.errors import GeometryError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.compare import metrics as metrics_module
from SegmentationQALib.compare.metrics import (
    PairStatus,
    compare_masks,
    corner_codes,
    metrics_in_box,
    robust_hausdorff,
    surface_area_table,
)

TS_LABELS = "totalsegmentator/reference_files/example_seg_fast_force_split.nii.gz"
ORACLE_ATOL = 1e-6  # mm (and for the unitless ratios)
# surface-distance 0.1 imports scipy.ndimage.filters / .morphology (deprecated names)
pytestmark = pytest.mark.filterwarnings("ignore:Please import:DeprecationWarning")


@pytest.fixture(scope="module")
def oracle():
    """surface-distance 0.1 uses np.Inf, which numpy 2 removed."""
    if not hasattr(np, "Inf"):
        np.Inf = np.inf
    return pytest.importorskip("surface_distance")


def grid(shape, spacing_xyz, origin=(0.0, 0.0, 0.0), direction=None) -> VolumeGeometry:
    return VolumeGeometry.from_origin_spacing_direction(shape, origin, spacing_xyz,
                                                        np.eye(3) if direction is None else direction)


def oracle_values(oracle, a, b, spacing_kji, tolerance=2.0):
    s = oracle.compute_surface_distances(a, b, spacing_kji)
    asd = oracle.compute_average_surface_distance(s)
    return {"hd95_mm": oracle.compute_robust_hausdorff(s, 95), "hausdorff_mm": oracle.compute_robust_hausdorff(s, 100),
            "asd_a_to_b_mm": asd[0], "asd_b_to_a_mm": asd[1],
            "surface_dice": oracle.compute_surface_dice_at_tolerance(s, tolerance),
            "dice": oracle.compute_dice_coefficient(a, b)}


def assert_equal_to_oracle(oracle, a, b, geometry, tolerance=2.0):
    ours = compare_masks(a, b, geometry, tolerance_mm=tolerance)
    theirs = oracle_values(oracle, a, b, tuple(geometry.spacing[::-1]), tolerance)
    for key, value in theirs.items():
        assert getattr(ours, key) == pytest.approx(value, abs=ORACLE_ATOL), key
    assert ours.msd_mm == pytest.approx((theirs["asd_a_to_b_mm"] + theirs["asd_b_to_a_mm"]) / 2, abs=ORACLE_ATOL)
    return ours


@pytest.mark.parametrize("spacing_kji", [(1.0, 1.0, 1.0), (2.5, 0.8, 1.3), (0.7, 3.0, 0.9), (5.0, 0.5, 0.5)])
def test_surfel_area_table_equals_surface_distance_for_all_256_configurations(oracle, spacing_kji):
    from surface_distance import lookup_tables

    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing_kji)
    ours = surface_area_table(spacing_kji)
    for code in range(256):
        cube = np.zeros((3, 3, 3), np.uint8)
        for bit, (a, b, c) in enumerate(itertools.product((0, 1), repeat=3)):
            cube[1 + a, 1 + b, 1 + c] = code >> bit & 1
        their_code = ndimage.correlate(cube, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant")[2, 2, 2]
        our_code = corner_codes(np.pad(cube[1:, 1:, 1:], ((0, 1), (0, 1), (0, 1))))[0, 0, 0]
        assert our_code == code
        assert ours[our_code] == pytest.approx(theirs[their_code], abs=1e-12), code


def test_translated_boxes_closed_form(oracle):
    """Box B = box A moved by 2 slices and 3 columns on a (0.7, 1.1, 2.5) mm grid: volumes, Dice, Jaccard and the
    centroid distance are exact; the Hausdorff distance of a translated box is exactly the translation length
    (A's outer corner is outside B and B's nearest point is its own corner)."""
    geometry = grid((30, 40, 50), (0.7, 1.1, 2.5))
    a = np.zeros(geometry.shape, bool)
    b = np.zeros(geometry.shape, bool)
    a[5:15, 10:30, 8:40] = True
    b[7:17, 10:30, 11:43] = True
    m = compare_masks(a, b, geometry)
    voxel_ml = 0.7 * 1.1 * 2.5 / 1000
    assert m.volume_a_ml == pytest.approx(10 * 20 * 32 * voxel_ml)
    assert m.volume_b_ml == pytest.approx(m.volume_a_ml)
    overlap = 8 * 20 * 29
    assert m.dice == pytest.approx(2 * overlap / (2 * 6400))
    assert m.jaccard == pytest.approx(overlap / (2 * 6400 - overlap))
    shift = math.hypot(2 * 2.5, 3 * 0.7)
    assert m.centroid_distance_mm == pytest.approx(shift, abs=1e-9)
    assert m.hausdorff_mm == pytest.approx(shift, abs=1e-9)
    assert 0 < m.hd95_mm <= shift + 1e-9 and 0 < m.msd_mm < shift
    assert compare_masks(a, b, geometry, tolerance_mm=shift + 1e-6).surface_dice == pytest.approx(1.0)
    assert m.status is PairStatus.BOTH_PRESENT and m.reason is None
    assert_equal_to_oracle(oracle, a, b, geometry)  # corners 5.4 mm apart: beyond the near-offset table


def test_concentric_spheres_closed_form_on_anisotropic_grid(oracle):
    """Spheres of 15 and 20 mm about one centre on a (0.5, 0.7, 1.2) mm grid.

    Discretisation bound: every voxel centre is classified exactly, so a surface corner point lies within
    delta = half the voxel diagonal (0.74 mm) of the true sphere; volumes then lie within the shell r +- delta and
    surface distances within (r2 - r1) +- 3 delta. Swapping the spacing axes would put the 5 mm radial gap at
    ~2 mm along z and fail these bounds.
    """
    spacing = np.array([0.5, 0.7, 1.2])  # dx, dy, dz
    r1, r2 = 15.0, 20.0
    shape = tuple(int(math.ceil(2 * 22 / s)) for s in spacing[::-1])
    geometry = grid(shape, spacing)
    centre = [(n - 1) / 2 for n in shape]  # a grid-symmetric centre: the voxelised spheres keep their centroid
    k, j, i = np.indices(shape)
    radius = np.sqrt(((i - centre[2]) * spacing[0]) ** 2 + ((j - centre[1]) * spacing[1]) ** 2
                     + ((k - centre[0]) * spacing[2]) ** 2)
    a, b = radius <= r1, radius <= r2
    m = compare_masks(a, b, geometry)
    delta = 0.5 * float(np.linalg.norm(spacing))

    def volume_bounds(r):
        return 4 / 3 * math.pi * (r - delta) ** 3 / 1000, 4 / 3 * math.pi * (r + delta) ** 3 / 1000

    for volume, r in ((m.volume_a_ml, r1), (m.volume_b_ml, r2)):
        low, high = volume_bounds(r)
        assert low <= volume <= high
    assert m.dice == pytest.approx(2 * m.volume_a_ml / (m.volume_a_ml + m.volume_b_ml))  # A inside B exactly
    assert m.jaccard == pytest.approx(m.volume_a_ml / m.volume_b_ml)
    for value in (m.hd95_mm, m.msd_mm, m.asd_a_to_b_mm, m.asd_b_to_a_mm):
        assert abs(value - (r2 - r1)) <= 3 * delta
    assert m.centroid_distance_mm < 1e-6
    assert m.surface_dice == 0.0  # every distance > 5 - 3 delta > 2 mm
    assert compare_masks(a, b, geometry, tolerance_mm=r2 - r1 + 3 * delta).surface_dice == pytest.approx(1.0)
    assert_equal_to_oracle(oracle, a, b, geometry, tolerance=5.0)


def random_blob(shape, seed, level=0.52):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 2.5) > level


@pytest.mark.parametrize("seed, spacing_xyz", [(0, (0.8, 1.3, 2.5)), (1, (0.8, 1.3, 2.5)), (2, (0.5, 0.5, 5.0)),
                                                (3, (3.0, 0.7, 1.0))])
def test_random_blobs_equal_surface_distance(oracle, seed, spacing_xyz):
    """Covers both ways a distance is found: the near-offset table (close surfaces) and the k-d tree (far ones)."""
    geometry = grid((24, 40, 36), spacing_xyz)
    a = random_blob(geometry.shape, seed)
    b = random_blob(geometry.shape, seed + 100)
    a[:, :, :3] = False  # leave some of the grid empty so the bounding boxes matter
    ours = assert_equal_to_oracle(oracle, a, b, geometry, tolerance=1.5)
    assert 0 < ours.dice < 1


@pytest.mark.parametrize("few_pending, block", [(0, 1 << 15), (1 << 30, 1), (1 << 30, 7), (1 << 30, 1 << 15)])
def test_both_near_offset_searches_equal_surface_distance(oracle, monkeypatch, few_pending, block):
    """The offset table is searched one length at a time while many points are pending, then in blocks of offsets
    (first hit per point); each search alone, and blocks that end inside a length group, give the oracle's values."""
    monkeypatch.setattr(metrics_module, "FEW_PENDING", few_pending)
    monkeypatch.setattr(metrics_module, "BLOCK_GATHERS", block)
    geometry = grid((24, 40, 36), (0.8, 1.3, 2.5))
    a = random_blob(geometry.shape, 5)
    b = np.roll(random_blob(geometry.shape, 5), (1, 2, 1), axis=(0, 1, 2)) | random_blob(geometry.shape, 7)
    ours = assert_equal_to_oracle(oracle, a, b, geometry, tolerance=1.5)
    assert 0 < ours.dice < 1 and ours.hd95_mm > 0


def test_masks_touching_the_grid_border_equal_surface_distance(oracle):
    geometry = grid((10, 12, 14), (1.5, 0.6, 3.0))
    a = np.zeros(geometry.shape, bool)
    b = np.zeros(geometry.shape, bool)
    a[0:6, 0:12, 3:14] = True
    b[2:10, 1:9, 0:10] = True
    assert_equal_to_oracle(oracle, a, b, geometry)


def test_real_totalsegmentator_structures_equal_surface_distance(oracle, shared_data):
    """Real organ shapes: each structure against itself dilated, and against itself shifted, on an anisotropic
    version of the TotalSegmentator grid."""
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / TS_LABELS)))
    geometry = grid(labels.shape, (0.9, 1.4, 2.5))
    values = [int(v) for v in np.unique(labels) if v]
    assert len(values) == 61
    structure = ndimage.generate_binary_structure(3, 1)
    for value in values[::6]:
        mask = labels == value
        dilated = ndimage.binary_dilation(mask, structure)
        shifted = np.roll(mask, (1, -2, 3), axis=(0, 1, 2))
        assert_equal_to_oracle(oracle, mask, dilated, geometry)
        assert_equal_to_oracle(oracle, shifted, mask, geometry, tolerance=3.0)


def _lexsort_percentile(distances, areas, percentile):
    """surface-distance's compute_robust_hausdorff on one direction."""
    order = np.lexsort((areas, distances))
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    return distances[order][min(int(np.searchsorted(cumulative, percentile / 100.0)), distances.size - 1)]


@pytest.mark.parametrize("percentile", [50.0, 90.0, 95.0, 99.0, 100.0])
def test_robust_hausdorff_by_distance_key_equals_the_sorted_surfels(percentile):
    """The per-key area sums give surface-distance's answer at any percentile."""
    rng = np.random.default_rng(int(percentile))
    lengths = np.unique(np.round(rng.random(30) * 5, 2))
    keys = rng.integers(0, lengths.size, 5000).astype(np.uint16)
    areas = rng.choice([0.25, 0.5, 0.7071], 5000)
    ranks = np.unique(areas, return_inverse=True)[1].astype(np.uint8)
    distances = lengths[keys]
    assert robust_hausdorff(distances, areas, percentile, ranks, keys) == _lexsort_percentile(distances, areas,
                                                                                              percentile)


def test_robust_hausdorff_on_a_key_boundary_sorts_the_surfels(monkeypatch):
    """Exactly on a key boundary (19 of 20 equal areas at 95 %) the per-key sums and the running sum may round
    differently: the surfels are sorted as surface-distance sorts them, and the test proves the sort ran."""
    boundary_keys = np.r_[np.zeros(19, np.uint16), np.ones(1, np.uint16)]
    boundary_distances = np.r_[np.full(19, 1.0), 2.0]
    equal = np.full(20, 0.5)
    sorted_calls = []
    real_argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda *a, **k: sorted_calls.append(1) or real_argsort(*a, **k))
    expected = _lexsort_percentile(boundary_distances, equal, 95.0)
    assert robust_hausdorff(boundary_distances, equal, 95.0, np.zeros(20, np.uint8), boundary_keys) == expected == 1.0
    assert sorted_calls, "a crossing on a key boundary must be resolved by the exact sort"


def test_empty_and_one_sided_structures_have_defined_values():
    geometry = grid((8, 9, 10), (1.0, 2.0, 3.0))
    empty = np.zeros(geometry.shape, bool)
    full = empty.copy()
    full[2:5, 3:6, 4:7] = True
    both = compare_masks(empty, empty, geometry)
    assert (both.dice, both.jaccard, both.surface_dice, both.status) == (1.0, 1.0, 1.0, PairStatus.BOTH_EMPTY)
    assert both.hd95_mm is None and both.msd_mm is None and "both" in both.reason
    one = compare_masks(full, empty, geometry)
    assert (one.dice, one.surface_dice, one.status) == (0.0, 0.0, PairStatus.B_EMPTY)
    assert math.isinf(one.hd95_mm) and math.isinf(one.msd_mm) and one.centroid_distance_mm is None
    assert one.volume_a_ml == pytest.approx(27 * 6 / 1000) and one.volume_difference_ml == pytest.approx(-0.162)
    assert compare_masks(empty, full, geometry).status is PairStatus.A_EMPTY
    for metrics in (both, one):
        document = metrics.to_json()
        json.dumps(document, allow_nan=False)  # no NaN, no inf in JSON
        assert document["reason"] and document["status"] in {s.value for s in PairStatus}
        assert not any(isinstance(v, float) and math.isnan(v) for v in metrics.__dict__.values())


def test_identical_masks_agree_perfectly():
    geometry = grid((12, 12, 12), (0.7, 0.7, 2.0))
    mask = random_blob(geometry.shape, 5)
    m = compare_masks(mask, mask, geometry)
    assert (m.dice, m.jaccard, m.hd95_mm, m.msd_mm, m.surface_dice) == (1.0, 1.0, 0.0, 0.0, 1.0)
    assert m.volume_difference_ml == 0.0 and m.volume_difference_percent == 0.0


def test_box_crop_gives_the_same_values_as_the_full_grid():
    """metrics_in_box on a crop (with its offset) equals the full-grid computation, centroid included."""
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # rotated axes
    geometry = grid((30, 30, 30), (0.6, 0.9, 2.0), origin=(10.0, -4.0, 7.0), direction=direction)
    a = np.zeros(geometry.shape, bool)
    b = np.zeros(geometry.shape, bool)
    a[10:16, 5:20, 8:12] = True
    b[11:18, 6:22, 7:11] = True
    full = compare_masks(a, b, geometry)
    box = (slice(9, 19), slice(4, 23), slice(6, 14))
    cropped = metrics_in_box(a[box], b[box], geometry, offset_kji=(9, 4, 6))
    assert cropped.to_json() == pytest.approx(full.to_json())
    centroid_a = geometry.index_to_lps(np.array([9.5, 12.0, 12.5]))  # (i, j, k) of the box centres
    centroid_b = geometry.index_to_lps(np.array([8.5, 13.5, 14.0]))
    assert full.centroid_distance_mm == pytest.approx(float(np.linalg.norm(centroid_a - centroid_b)), abs=1e-9)


def test_mismatched_shapes_raise_typed_errors():
    geometry = grid((4, 4, 4), (1, 1, 1))
    with pytest.raises(GeometryError):
        compare_masks(np.zeros((4, 4, 5), bool), np.zeros((4, 4, 4), bool), geometry)
    with pytest.raises(GeometryError):
        metrics_in_box(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool), geometry)
    sheared = grid((4, 4, 4), (1, 1, 1), direction=np.array([[1.0, 0.3, 0.0], [0.0, 0.95, 0.0], [0.0, 0.0, 1.0]]))
    mask = np.zeros(sheared.shape, bool)
    mask[1:3, 1:3, 1:3] = True
    with pytest.raises(GeometryError, match="sheared"):
        compare_masks(mask, mask, sheared)
