"""RTSTRUCT fidelity check on a synthetic set, contour exactness, export -> independent even-odd read, and peers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as MplPath
from skimage.draw import polygon as sk_polygon

from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.reference_series import write_reference_series
from SegmentationQALib.rtstruct import read_rtstruct, write_rtstruct
from SegmentationQALib.rtstruct.contours import rasterize_contours, slice_contours
from SegmentationQALib.rtstruct.fidelity import (
    FidelityGateError,
    FidelityThresholds,
    Verdict,
    check_rtstruct_fidelity,
    gate,
)
from SegmentationQALib.rtstruct.report import write_fidelity_report
from SegmentationQALib.segmentation import LayeredSegmentation, Segment
from validators import assert_dciodvfy_clean

REPO = Path(__file__).resolve().parents[2]
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
NAMES = {1: "ring", 2: "ring_island", 3: "two_islands", 4: "line"}


def reference_geometry() -> VolumeGeometry:
    return VolumeGeometry.from_origin_spacing_direction((20, 64, 64), (-40, -50, -30), (1.25, 1.25, 3.0), np.eye(3))


def synthetic_labels(geometry: VolumeGeometry) -> np.ndarray:
    kk, jj, ii = np.mgrid[0:geometry.shape[0], 0:geometry.shape[1], 0:geometry.shape[2]]
    labels = np.zeros(geometry.shape, np.uint8)
    slab = (kk >= 3) & (kk < 15)
    r = np.hypot(jj - 20, ii - 20)
    labels[(r <= 12) & (r > 6) & slab] = 1  # ring with a hole
    r = np.hypot(jj - 20, ii - 48)
    labels[(((r <= 12) & (r > 7)) | (r <= 3)) & slab] = 2  # ring with an island inside the hole
    pair = (kk >= 5) & (kk < 12)
    labels[((np.hypot(jj - 50, ii - 12) <= 5) | (np.hypot(jj - 50, ii - 30) <= 4)) & pair] = 3  # two islands per slice
    labels[(jj == 55) & (ii == 50) & (kk >= 2) & (kk < 18)] = 4  # one-voxel line through the slices
    labels[(jj == 58) & (ii >= 40) & (ii < 60) & (kk == 10)] = 4  # and one within a slice
    return labels


def oblique_fine_segmentation(reference: VolumeGeometry) -> LayeredSegmentation:
    """A box with a 0.8 mm fin on a 0.7 mm grid rotated 20 degrees: finer than and oblique to the reference."""
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    fine = VolumeGeometry.from_origin_spacing_direction((60, 60, 60), (-10, -35, -15), (0.7, 0.7, 0.7), rotation)
    k, j, i = np.mgrid[0:60, 0:60, 0:60]
    points = fine.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(60, 60, 60, 3)
    d = points - reference.index_to_lps([40, 30, 10])
    mask = (np.abs(d[..., 0]) < 8) & (np.abs(d[..., 1]) < 5) & (np.abs(d[..., 2]) < 10)
    mask |= (np.abs(d[..., 0] - 10) < 0.4) & (np.abs(d[..., 1]) < 6) & (np.abs(d[..., 2]) < 6)
    return LayeredSegmentation(fine, [mask.astype(np.uint8)], [Segment("oblique_fine", 0, 1)])


@pytest.fixture(scope="module")
def synthetic():
    geometry = reference_geometry()
    labels = synthetic_labels(geometry)
    return geometry, labels, LayeredSegmentation.from_label_volume(geometry, labels, NAMES)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synthetic):
    geometry, labels, layered = synthetic
    folder = tmp_path_factory.mktemp("synthetic")
    image = np.full(geometry.shape, -1000, np.int16)
    image[labels > 0] = 40
    series = write_reference_series(image, geometry, folder / "ct")
    result = write_rtstruct(layered, series, folder / "rs.dcm")
    return folder, series, result


def test_marching_squares_contours_round_trip_exactly_on_random_masks():
    rng = np.random.default_rng(7)
    for _ in range(200):
        mask = rng.random((17, 23)) < rng.random()
        assert np.array_equal(rasterize_contours(slice_contours(mask), mask.shape), mask)


def test_scanline_fill_matches_skimage_even_odd_on_random_polygons():
    rng = np.random.default_rng(3)
    compared = 0
    for _ in range(200):
        points = rng.random((int(rng.integers(3, 12)), 2)) * [30, 25] - 2
        expected = np.zeros((25, 30), bool)
        rows, cols = sk_polygon(points[:, 1], points[:, 0], shape=expected.shape)
        expected[rows, cols] = True
        got = rasterize_contours([points], expected.shape)
        assert np.array_equal(got, expected)
        compared += int(expected.sum())
    assert compared > 1000


def test_synthetic_set_is_classified(synthetic):
    geometry, labels, layered = synthetic
    result = check_rtstruct_fidelity(layered, geometry)
    by_name = {s.name: s for s in result.segments}
    for name in ("ring", "ring_island", "two_islands"):
        segment = by_name[name]
        assert segment.verdict == Verdict.LOSSLESS, (name, segment.reasons)
        assert segment.voxels_lost == segment.voxels_gained == 0
        assert segment.dice == 1.0
    slices = 12
    assert (by_name["ring"].islands, by_name["ring"].holes) == (slices, slices)
    assert (by_name["ring_island"].islands, by_name["ring_island"].holes) == (2 * slices, slices)
    assert (by_name["two_islands"].islands, by_name["two_islands"].holes) == (2 * 7, 0)
    line = by_name["line"]
    assert line.verdict == Verdict.LOSSY
    assert line.thin_voxels == int(np.count_nonzero(labels == 4))
    # 16 single voxels enclose half a voxel each; the in-slice run of 20 loses half a voxel at its two ends.
    expected = (16 * 0.5 + 19.5) / 36 - 1
    assert line.contour_volume_change_percent == pytest.approx(100 * expected, abs=1e-6)
    assert result.worst_verdict == Verdict.LOSSY


def test_oblique_finer_grid_is_lossy_and_blamed_on_resampling(synthetic):
    geometry, _, _ = synthetic
    layered = oblique_fine_segmentation(geometry)
    result = check_rtstruct_fidelity(layered, geometry)
    segment = result.segments[0]
    assert not result.same_grid
    assert segment.verdict == Verdict.LOSSY
    assert segment.resampling_lost + segment.resampling_gained == segment.voxels_lost + segment.voxels_gained > 0
    assert 0.5 < segment.dice < 0.98
    assert segment.hd95_mm is not None and segment.hd95_mm > 0
    # Independent measure: nearest reference voxel of every fine voxel centre, and back.
    mask = layered.layers[0] > 0
    fine = layered.geometry
    k, j, i = np.nonzero(mask)
    ref_index = np.rint(geometry.lps_to_index(fine.index_to_lps(np.column_stack([i, j, k])))).astype(int)
    assert np.all(ref_index >= 0)
    assert segment.beyond_reference_voxels == 0


def test_parts_beyond_the_last_reference_slice_are_reported(synthetic):
    geometry, _, _ = synthetic
    longer = VolumeGeometry(
        (24, 64, 64), geometry.affine_lps)
    labels = np.zeros(longer.shape, np.uint8)
    labels[15:24, 20:30, 20:30] = 1  # slices 20..23 lie beyond the reference's 20 slices
    result = check_rtstruct_fidelity(LayeredSegmentation.from_label_volume(longer, labels), geometry)
    segment = result.segments[0]
    assert segment.beyond_reference_voxels == 4 * 100
    assert segment.voxels_lost == 4 * 100
    assert segment.verdict == Verdict.LOSSY


def test_thresholds_are_configurable_and_gate(synthetic):
    geometry, _, layered = synthetic
    relaxed = FidelityThresholds(lossy_thin_fraction=1.0, lossy_contour_volume_change_percent=50.0)
    result = check_rtstruct_fidelity(layered, geometry, relaxed)
    assert {s.name: s.verdict for s in result.segments}["line"] == Verdict.MINOR
    gate(result, Verdict.LOSSY)
    with pytest.raises(FidelityGateError, match="line"):
        gate(result, Verdict.MINOR)


def _independent_even_odd(rs_path: Path, geometry: VolumeGeometry) -> dict[str, np.ndarray]:
    """A reader written apart from ours: matplotlib point-in-polygon, XOR per contour, pydicom only."""
    ds = pydicom.dcmread(rs_path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    inverse = np.linalg.inv(geometry.affine_lps)
    jj, ii = np.mgrid[0:geometry.shape[1], 0:geometry.shape[2]]
    centres = np.column_stack([ii.ravel(), jj.ravel()])
    masks = {}
    for item in ds.ROIContourSequence:
        mask = np.zeros(geometry.shape, bool)
        for contour in item.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            ijk = points @ inverse[:3, :3].T + inverse[:3, 3]
            k = int(round(ijk[0, 2]))
            assert np.allclose(ijk[:, 2], k, atol=1e-3)
            inside = MplPath(ijk[:, :2]).contains_points(centres).reshape(geometry.shape[1:])
            mask[k] ^= inside
        masks[names[int(item.ReferencedROINumber)]] = mask
    return masks


def test_export_survives_independent_even_odd_read(synthetic, exported):
    geometry, labels, _ = synthetic
    folder, series, result = exported
    assert_dciodvfy_clean(folder / "rs.dcm")
    masks = _independent_even_odd(folder / "rs.dcm", series.geometry)
    for value, name in NAMES.items():
        assert np.array_equal(masks[name], labels == value), name
    ds = pydicom.dcmread(folder / "rs.dcm")
    assert [str(o.ROIObservationLabel) for o in ds.RTROIObservationsSequence] == list(NAMES.values())
    uids = set(series.sop_instance_uids)
    for item in ds.ROIContourSequence:
        assert len(item.ROIDisplayColor) == 3
        for contour in item.ContourSequence:
            assert str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID) in uids
    raw = (folder / "rs.dcm").read_bytes()
    assert raw  # the DS text: every value within 16 characters
    for item in ds.ROIContourSequence:
        for contour in item.ContourSequence:
            assert max(len(str(v)) for v in contour.ContourData) <= 16


def test_our_reader_round_trips_our_export(synthetic, exported):
    geometry, labels, _ = synthetic
    folder, series, _ = exported
    loaded = read_rtstruct(folder / "rs.dcm", series)
    counts = dict(zip([s.name for s in loaded.segmentation.segments], loaded.segmentation.voxel_counts()))
    assert counts == {name: int(np.count_nonzero(labels == value)) for value, name in NAMES.items()}


def test_prediction_matches_plastimatch(synthetic, exported, tmp_path):
    import SimpleITK as sitk

    geometry, labels, layered = synthetic
    folder, series, _ = exported
    prediction = {s.name: s for s in check_rtstruct_fidelity(layered, geometry).segments}
    subprocess.run(["plastimatch", "convert", "--input", str(folder / "rs.dcm"), "--referenced-ct", str(folder / "ct"),
                    "--output-prefix", str(tmp_path / "pl"), "--prefix-format", "nrrd", "--xor-contours"],
                   check=True, capture_output=True, timeout=120)
    for value, name in NAMES.items():
        image = sitk.ReadImage(str(tmp_path / "pl" / f"{name}.nrrd"))
        assert VolumeGeometry.from_sitk(image).is_close(geometry)
        seen = sitk.GetArrayFromImage(image) > 0
        original = labels == value
        predicted = prediction[name]
        tolerance = predicted.contours  # one voxel per slice per contour
        assert abs(int(np.count_nonzero(original & ~seen)) - predicted.voxels_lost) <= tolerance
        assert abs(int(np.count_nonzero(seen & ~original)) - predicted.voxels_gained) <= tolerance


def test_rtutils_reads_holes_and_islands_of_our_export(synthetic, exported, tmp_path):
    """rt-utils rounds vertices to whole pixels and fills boundary pixels: it keeps holes and islands but grows
    every contour by up to a pixel. Measured, not predicted: our check models centre-inclusion readers."""
    geometry, labels, _ = synthetic
    folder, series, _ = exported
    out = tmp_path / "rtutils.npz"
    subprocess.run([str(PEERS_PYTHON), str(REPO / "Testing" / "peers" / "rtutils_read.py"), str(folder / "ct"),
                    str(folder / "rs.dcm"), str(out)], check=True, capture_output=True, timeout=300)
    data = np.load(out)
    assert list(data["__sop_instance_uids__"]) == series.sop_instance_uids
    for value, name in NAMES.items():
        seen = data[name] > 0
        original = labels == value
        assert not np.any(original & ~seen), name  # nothing lost
        if name in ("ring", "ring_island"):
            centre = (8, 20, 20) if name == "ring" else (8, 20, 48 - 5)
            assert not seen[centre], f"{name}: rt-utils filled the hole"
    assert data["ring_island"][8, 20, 48]  # the island inside the hole survives


def test_report_has_table_and_pictures_for_changed_segments(synthetic, tmp_path):
    geometry, labels, layered = synthetic
    result = check_rtstruct_fidelity(layered, geometry)
    paths = write_fidelity_report(result, tmp_path / "report", labels.astype(np.float32), geometry)
    data = json.loads(Path(paths["json"]).read_text())
    assert [s["verdict"] for s in data["segments"]] == ["lossless", "lossless", "lossless", "lossy"]
    for key in ("name", "verdict", "voxels_lost", "voxels_gained", "volume_change_percent", "dice", "islands",
                "holes", "slices_affected"):
        assert key in data["segments"][0]
    csv_lines = Path(paths["csv"]).read_text().splitlines()
    assert len(csv_lines) == 1 + len(NAMES)
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["segment_004.png"]
    assert (tmp_path / "report" / "segment_004.png").read_bytes()[:4] == b"\x89PNG"
    assert "segment_004.png" in Path(paths["html"]).read_text()
