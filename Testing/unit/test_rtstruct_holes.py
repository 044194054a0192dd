"""RTSTRUCT holes for union readers: `--holes keyhole` joins every hole to its outer contour by a narrow channel,
so readers that take the union of a plane's contours (instead of XOR-ing them) read holes right too.

Oracles written here, apart from the package: a union reader (every contour filled on its own by matplotlib's
point-in-polygon, then OR-ed) and an XOR reader (the same fill, XOR-ed), both reading the DICOM file with pydicom
only; peers: plastimatch (union without --xor-contours, XOR with it) and rt-utils (cv2.fillPoly of all contours).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath
from scipy import ndimage
from shapely.geometry import LinearRing

from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.reference_series import write_reference_series
from SegmentationQALib.rtstruct import (
    HoleEncoding,
    RtStructExportOptions,
    check_rtstruct,
    check_rtstruct_fidelity,
    read_rtstruct,
    write_rtstruct,
)
from SegmentationQALib.rtstruct.contours import keyhole_contours, rasterize_contours, rasterize_union, slice_contours
from SegmentationQALib.segmentation import LayeredSegmentation
from validators import assert_dciodvfy_clean

REPO = Path(__file__).resolve().parents[2]
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
NAMES = {1: "torus", 2: "nested", 3: "two_holes", 4: "solid"}
SPACING = (0.9, 0.9, 2.5)  # column, row, slice (mm)


def reference_geometry() -> VolumeGeometry:
    # square planes: rt-utils sizes its masks (Columns, Rows) but fills them [row, column]
    return VolumeGeometry.from_origin_spacing_direction((18, 112, 112), (-50, -30, -20), SPACING, np.eye(3))


def analytic_labels(geometry: VolumeGeometry) -> np.ndarray:
    """A torus around the slice normal (an annulus whose width changes from plane to plane), a disc with a hole
    holding an island that has a hole of its own, a block with two holes side by side, and a solid disc (nothing
    to keyhole)."""
    kk, jj, ii = np.mgrid[0:geometry.shape[0], 0:geometry.shape[1], 0:geometry.shape[2]]
    x, y, z = ii * SPACING[0], jj * SPACING[1], kk * SPACING[2]
    labels = np.zeros(geometry.shape, np.uint8)
    rho = np.hypot(x - 27.0, y - 27.0)
    labels[(rho - 14.0) ** 2 + (z - 21.0) ** 2 <= 7.5 ** 2] = 1
    r = np.hypot(x - 78.0, y - 26.0)
    slab = (kk >= 2) & (kk < 16)
    labels[slab & (((r <= 20) & (r > 13)) | ((r <= 9) & (r > 3.5)))] = 2
    block = (np.abs(x - 40) <= 22) & (np.abs(y - 54) <= 7) & (kk >= 4) & (kk < 12)
    holes = (np.hypot(x - 30, y - 54) <= 4) | ((np.abs(x - 50) <= 3) & (np.abs(y - 54) <= 2.5))
    labels[block & ~holes] = 3
    labels[(np.hypot(x - 90, y - 80) <= 6) & (kk >= 3) & (kk < 14)] = 4
    return labels


def file_contours(rs_path: Path, geometry: VolumeGeometry) -> dict[str, dict[int, list[np.ndarray]]]:
    """(column, row) polygons per plane per ROI name, from the DICOM file with pydicom only."""
    ds = pydicom.dcmread(rs_path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    inverse = np.linalg.inv(geometry.affine_lps)
    result: dict[str, dict[int, list[np.ndarray]]] = {}
    for item in ds.ROIContourSequence:
        planes: dict[int, list[np.ndarray]] = {}
        for contour in item.get("ContourSequence", []):  # an ROI without voxels on the planes has none
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            ijk = points @ inverse[:3, :3].T + inverse[:3, 3]
            k = int(round(ijk[0, 2]))
            assert np.allclose(ijk[:, 2], k, atol=1e-3)
            planes.setdefault(k, []).append(ijk[:, :2])
        result[names[int(item.ReferencedROINumber)]] = planes
    return result


def oracle_read(rs_path: Path, geometry: VolumeGeometry, union: bool,
                names: set[str] | None = None) -> dict[str, np.ndarray]:
    """Union (OR) or XOR of every contour filled on its own by voxel-centre inclusion (matplotlib)."""
    rows, cols = geometry.shape[1:]
    masks = {}
    for name, planes in file_contours(rs_path, geometry).items():
        if names is not None and name not in names:
            continue
        mask = np.zeros(geometry.shape, bool)
        for k, polygons in planes.items():
            for polygon in polygons:
                c0, r0 = np.clip(np.floor(polygon.min(axis=0)).astype(int), 0, [cols, rows])
                c1, r1 = np.clip(np.ceil(polygon.max(axis=0)).astype(int) + 1, 0, [cols, rows])
                jj, ii = np.mgrid[r0:r1, c0:c1]
                inside = MplPath(polygon).contains_points(np.column_stack([ii.ravel(), jj.ravel()]))
                window = mask[k, r0:r1, c0:c1]
                if union:
                    window |= inside.reshape(window.shape)
                else:
                    window ^= inside.reshape(window.shape)
        masks[name] = mask
    return masks


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def filled(mask: np.ndarray) -> np.ndarray:
    """Each plane with its holes filled: what a union reader makes of separate inner contours."""
    return np.stack([ndimage.binary_fill_holes(plane) for plane in mask])


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    geometry = reference_geometry()
    labels = analytic_labels(geometry)
    folder = tmp_path_factory.mktemp("holes")
    image = np.where(labels > 0, 40, -1000).astype(np.int16)
    series = write_reference_series(image, geometry, folder / "ct")
    layered = LayeredSegmentation.from_label_volume(geometry, labels, NAMES)
    exports = {}
    for holes in HoleEncoding:
        prediction = check_rtstruct_fidelity(layered, series.geometry, holes=holes)
        path = folder / f"{holes.value}.dcm"
        written = write_rtstruct(layered, series, path, RtStructExportOptions(holes=holes), prediction.contours)
        exports[holes] = (path, prediction, written)
    return folder, series, labels, exports


def test_the_analytic_case_has_holes_and_nesting(case):
    _, _, labels, _ = case
    for value in (1, 2, 3):
        mask = labels == value
        assert np.count_nonzero(filled(mask) & ~mask) > 100, NAMES[value]
    assert not np.any(filled(labels == 4) & ~(labels == 4))


def test_keyhole_polygons_are_simple_and_exact_for_union_and_xor_on_random_masks():
    """Property: on random planes (many holes, holes in islands in holes), keyholed polygons are simple, every hole
    is joined, and both the even-odd and the union fill give back exactly the plane."""
    rng = np.random.default_rng(11)
    bridges = 0
    for _ in range(120):
        plane = rng.random((19, 23)) < rng.uniform(0.35, 0.9)
        keyholed = keyhole_contours(slice_contours(plane))
        assert keyholed.unbridged == 0
        assert all(LinearRing(p).is_simple for p in keyholed.polygons)
        assert np.array_equal(rasterize_contours(keyholed.polygons, plane.shape), plane)
        assert np.array_equal(rasterize_union(keyholed.polygons, plane.shape), plane)
        bridges += keyholed.bridges
    assert bridges > 500


def test_separate_holes_are_filled_by_a_union_reader_and_the_check_warns(case):
    """The problem: separate inner contours, read as a union, fill every hole; XOR reads them right."""
    _, series, labels, exports = case
    path, prediction, _ = exports[HoleEncoding.SEPARATE]
    union = oracle_read(path, series.geometry, union=True)
    xor = oracle_read(path, series.geometry, union=False)
    by_name = {s.name: s for s in prediction.segments}
    for value, name in NAMES.items():
        original = labels == value
        assert np.array_equal(xor[name], original), name
        assert np.array_equal(union[name], filled(original)), name  # every hole filled, nothing else changed
        gained = int(np.count_nonzero(union[name] & ~original))
        assert by_name[name].union_reader_voxels_gained == gained, name
        if value != 4:
            assert gained > 100 and dice(union[name], original) < 0.97, name
            assert by_name[name].union_reader_holes_filled == by_name[name].holes > 0
            assert any(w.startswith(f"{name}: ") and "fill them" in w and f"+{gained} voxels" in w
                       and "--holes keyhole" in w for w in prediction.warnings), name
        else:
            assert by_name[name].union_reader_holes_filled == 0
    assert by_name["torus"].verdict.value == "lossless"  # an XOR reader's verdict: holes are not a loss there


def test_keyhole_export_reads_right_by_union_and_xor(case):
    """Keyhole: one simple polygon per outer region; the union oracle, the XOR oracle and our reader all give back
    the mask voxel for voxel (channels run on quarter-pixel lines, so they hold no voxel centre)."""
    _, series, labels, exports = case
    path, prediction, written = exports[HoleEncoding.KEYHOLE]
    union = oracle_read(path, series.geometry, union=True)
    xor = oracle_read(path, series.geometry, union=False)
    ours = read_rtstruct(path, series)
    ours_masks = {s.name: ours.segmentation.layers[s.layer] == s.label_value for s in ours.segmentation.segments}
    polygons = file_contours(path, series.geometry)
    separate = file_contours(exports[HoleEncoding.SEPARATE][0], series.geometry)
    by_name = {s.name: s for s in prediction.segments}
    for value, name in NAMES.items():
        original = labels == value
        for reader, mask in (("union", union[name]), ("xor", xor[name]), ("ours", ours_masks[name])):
            assert np.array_equal(mask, original), (name, reader)
        # holes are gone as contours: no polygon of the file winds the other way, none touches itself
        for planes in polygons.values():
            for plane_polygons in planes.values():
                assert all(LinearRing(p).is_simple for p in plane_polygons)
        segment = by_name[name]
        inner = sum(1 for ps in separate[name].values() for p in ps if _area(p) < 0)
        assert segment.keyholes == inner and segment.holes == inner
        assert sum(1 for ps in polygons[name].values() for p in ps if _area(p) < 0) == 0
        assert segment.union_reader_voxels_gained == segment.union_reader_holes_filled == 0
        assert segment.voxels_lost == segment.voxels_gained == segment.keyhole_voxels_changed == 0
        # the channels' own cost is contour area: width x length, measured on the file's polygons
        taken = (sum(_area(p) for ps in separate[name].values() for p in ps)
                 - sum(_area(p) for ps in polygons[name].values() for p in ps)) * SPACING[0] * SPACING[1]
        assert segment.keyhole_area_mm2 == pytest.approx(taken, abs=1e-3), name
        if value != 4:
            assert 0 < segment.keyhole_area_mm2 < 0.1 * SPACING[0] * SPACING[1] * 30 * inner  # < 30-pixel channels
    reports = {r.name: r for r in written.rois}
    assert reports["torus"].keyholes == by_name["torus"].keyholes > 0
    assert not [w for w in prediction.warnings if "fill them" in w]


def _area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_keyhole_rtstruct_is_valid_dicom_and_passes_our_file_check(case):
    _, series, _, exports = case
    path = exports[HoleEncoding.KEYHOLE][0]
    assert_dciodvfy_clean(path)
    check = check_rtstruct(path, series)
    assert check.ok and not check.issues, [i.to_json() for i in check.issues]


def _plastimatch(path: Path, ct: Path, out: Path, xor: bool) -> dict[str, np.ndarray]:
    command = ["plastimatch", "convert", "--input", str(path), "--referenced-ct", str(ct), "--output-prefix",
               str(out), "--prefix-format", "nrrd"] + (["--xor-contours"] if xor else [])
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return {name: sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}.nrrd"))) > 0 for name in NAMES.values()}


def test_plastimatch_union_fills_separate_holes_but_reads_keyholes(case, tmp_path):
    """plastimatch without --xor-contours ORs a plane's contours; it fills separate holes, not keyholed ones.
    Bound: exact, voxel for voxel (it includes voxel centres, and none lies on our contours or in our channels)."""
    folder, series, labels, exports = case
    for holes in HoleEncoding:
        path, prediction, _ = exports[holes]
        by_name = {s.name: s for s in prediction.segments}
        union = _plastimatch(path, folder / "ct", tmp_path / f"union_{holes.value}", xor=False)
        xor = _plastimatch(path, folder / "ct", tmp_path / f"xor_{holes.value}", xor=True)
        for value, name in NAMES.items():
            original = labels == value
            assert np.array_equal(xor[name], original), (holes, name)
            expected = original if holes == HoleEncoding.KEYHOLE else filled(original)
            assert np.array_equal(union[name], expected), (holes, name)
            gained = int(np.count_nonzero(union[name] & ~original))
            assert gained == by_name[name].union_reader_voxels_gained, (holes, name)  # the check predicted it
            if holes == HoleEncoding.SEPARATE and value != 4:
                assert gained > 100 and dice(union[name], original) < 0.97, name


def test_rtutils_keeps_keyholed_holes(case, tmp_path):
    """rt-utils (cv2.fillPoly of all of a plane's contours, vertices rounded to whole pixels) keeps holes either
    way; its rounding grows every contour by up to a pixel, so the bound is: nothing lost, hole centres empty."""
    folder, series, labels, exports = case
    out = tmp_path / "rtutils.npz"
    path = exports[HoleEncoding.KEYHOLE][0]
    subprocess.run([str(PEERS_PYTHON), str(REPO / "Testing" / "peers" / "rtutils_read.py"), str(folder / "ct"),
                    str(path), str(out)], check=True, capture_output=True, timeout=300)
    data = np.load(out)
    assert list(data["__sop_instance_uids__"]) == series.sop_instance_uids
    for value, name in NAMES.items():
        seen = data[name] > 0
        original = labels == value
        assert not np.any(original & ~seen), name
        hole_cores = ndimage.binary_erosion(filled(original) & ~original, np.ones((1, 3, 3), bool), iterations=2)
        assert not np.any(seen & hole_cores), name


def test_cli_export_rtstruct_holes_keyhole(case, tmp_path):
    """`segqa rtstruct-check --holes keyhole` predicts, `segqa export-rtstruct --holes keyhole` writes, and a union
    read of the file gives back the mask."""
    from SegmentationQALib import cli

    folder, series, labels, _ = case
    label_path = tmp_path / "labels.nrrd"
    geometry = series.geometry
    sitk.WriteImage(geometry.to_sitk(labels), str(label_path))
    common = ["--segmentation", str(label_path), "--reference", str(folder / "ct"), "--quiet"]
    assert cli.main(["rtstruct-check", *common, "--holes", "keyhole", "--report", str(tmp_path / "report"),
                     "--json", str(tmp_path / "check.json")]) == 0
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["holes_encoding"] == "keyhole"
    assert cli.main(["export-rtstruct", *common, "--holes", "keyhole", "--output-dir", str(tmp_path / "out"),
                     "--json", str(tmp_path / "export.json")]) == 0
    export = json.loads((tmp_path / "export.json").read_text())
    assert export["fidelity"]["holes_encoding"] == "keyhole"
    assert_dciodvfy_clean(export["path"])
    union = oracle_read(Path(export["path"]), geometry, union=True)
    segments = {s["name"]: s for s in export["fidelity"]["segments"]}
    assert len(union) == len(NAMES)
    for value in NAMES:
        original = labels == value
        name = next(n for n, m in union.items() if np.array_equal(m, original))  # names come from the label file
        assert segments[name]["keyholes"] == segments[name]["holes"]
        assert segments[name]["union_reader_voxels_gained"] == 0
    assert sum(s["keyholes"] for s in segments.values()) > 0
    assert "keyhole" in (tmp_path / "report" / "index.html").read_text()
    assert cli.main(["export-rtstruct", *common, "--output-dir", str(tmp_path / "default"), "--json",
                     str(tmp_path / "default.json")]) == 0
    default = json.loads((tmp_path / "default.json").read_text())
    assert default["fidelity"]["holes_encoding"] == "separate"
    assert any("fill them" in w for w in default["warnings"])


def test_real_structure_set_keyholed_reads_right_by_a_union_reader(shared_data, tmp_path):
    """dicompyler-core's RTSTRUCT (read even-odd; BODY and Lt Lung have inner contours): exported with separate
    holes a union read fills exactly what the check predicts; keyholed, the union read gives every ROI back voxel
    for voxel, as predicted, and the file is valid DICOM."""
    folder = shared_data / "dicompyler-core"
    loaded = read_rtstruct(folder / "rtss.dcm", folder)
    layered, reference = loaded.segmentation, loaded.reference
    geometry = reference.geometry
    originals = {s.name: layered.layers[s.layer] == s.label_value for s in layered.segments}
    measured = {}
    for holes in HoleEncoding:
        prediction = check_rtstruct_fidelity(layered, geometry, holes=holes, pictures=False)
        by_name = {s.name: s for s in prediction.segments}
        with_holes = {name for name, s in by_name.items() if s.holes}
        assert {"BODY", "Lt Lung"} <= with_holes
        path = tmp_path / f"{holes.value}.dcm"
        write_rtstruct(layered, reference, path, RtStructExportOptions(holes=holes), prediction.contours)
        union = oracle_read(path, geometry, union=True, names=with_holes)
        for name in with_holes:
            gained = int(np.count_nonzero(union[name] & ~originals[name]))
            assert not np.any(originals[name] & ~union[name]), (holes, name)
            assert gained == by_name[name].union_reader_voxels_gained, (holes, name)
            measured[holes, name] = gained
            if holes == HoleEncoding.KEYHOLE:
                assert by_name[name].keyholes == by_name[name].holes
                assert by_name[name].voxels_lost == by_name[name].voxels_gained == 0
        if holes == HoleEncoding.KEYHOLE:
            assert_dciodvfy_clean(path)
    assert measured[HoleEncoding.SEPARATE, "Lt Lung"] > 1000
    assert measured[HoleEncoding.KEYHOLE, "Lt Lung"] == measured[HoleEncoding.KEYHOLE, "BODY"] == 0
