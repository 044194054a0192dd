"""dicompyler-core RTSTRUCT (one CT slice present): load -> check -> export -> load, and bad input."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from DicomFidelityCommonLib.errors import InvalidInputFileError, WrongModalityError
from SegmentationQALib.rtstruct import IssueKind, check_rtstruct, read_rtstruct, write_rtstruct
from SegmentationQALib.rtstruct.fidelity import check_rtstruct_fidelity
from validators import assert_dciodvfy_clean


def contour_volumes(path, geometry) -> dict[str, float]:
    """Independent: shoelace area of every contour in mm (in-plane axes), even-odd by nesting, times thickness."""
    from matplotlib.path import Path as MplPath

    ds = pydicom.dcmread(path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    row, col = np.asarray(geometry.image_orientation[:3]), np.asarray(geometry.image_orientation[3:])
    volumes = {}
    for item in ds.ROIContourSequence:
        planes: dict[float, list[np.ndarray]] = {}
        for contour in item.get("ContourSequence", []):
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            planes.setdefault(round(float(points[0] @ np.cross(row, col)), 2), []).append(
                np.column_stack([points @ row, points @ col]))
        total = 0.0
        for polygons in planes.values():
            for index, p in enumerate(polygons):
                area = 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))
                depth = sum(MplPath(q).contains_point(p[0]) for j, q in enumerate(polygons) if j != index)
                total += area if depth % 2 == 0 else -area
        volumes[names[int(item.ReferencedROINumber)]] = total * float(geometry.spacing[2])
    return volumes


@pytest.fixture(scope="module")
def round_trip(shared_data, tmp_path_factory):
    folder = shared_data / "dicompyler-core"
    first = read_rtstruct(folder / "rtss.dcm", folder)
    fidelity = check_rtstruct_fidelity(first.segmentation, first.reference.geometry)
    out = tmp_path_factory.mktemp("dicompyler") / "rs.dcm"
    write_rtstruct(first.segmentation, first.reference, out, contours=fidelity.contours)
    second = read_rtstruct(out, first.reference)
    return folder, first, fidelity, out, second


def test_a_series_already_read_gets_the_planes_its_folder_gets(round_trip):
    """The cohort tasks pass the CT series they read; the planes are rebuilt from the contours as for the folder."""
    from DicomFidelityCommonLib.dicom.series import read_image_series

    folder, first, _, _, _ = round_trip
    by_series = read_rtstruct(folder / "rtss.dcm", read_image_series(folder))
    assert by_series.reference.synthesized
    assert by_series.reference.geometry.is_close(first.reference.geometry)
    assert by_series.segmentation.voxel_counts() == first.segmentation.voxel_counts()


def test_reference_planes_rebuilt_from_contours(round_trip):
    folder, first, _, _, _ = round_trip
    reference = first.reference
    assert reference.synthesized
    assert reference.geometry.shape == (98, 512, 512)  # 98 images in ContourImageSequence
    ds = pydicom.dcmread(folder / "rtss.dcm")
    listed = {str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedFrameOfReferenceSequence[0]
              .RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].ContourImageSequence}
    assert set(u for u in reference.sop_instance_uids if u) == listed
    ct = pydicom.dcmread(folder / "ct.0.dcm")
    k = reference.sop_instance_uids.index(str(ct.SOPInstanceUID))
    assert np.allclose(reference.geometry.slice_positions_lps()[k], [float(v) for v in ct.ImagePositionPatient],
                       atol=1e-3)


def test_predicted_volume_change_matches_measured(round_trip):
    _, first, fidelity, _, second = round_trip
    before = dict(zip([s.name for s in first.segmentation.segments], first.segmentation.voxel_counts()))
    after = dict(zip([s.name for s in second.segmentation.segments], second.segmentation.voxel_counts()))
    assert set(after) == set(before)
    for segment in fidelity.segments:
        measured = (100.0 * (after[segment.name] - before[segment.name]) / before[segment.name]
                    if before[segment.name] else 0.0)
        assert segment.volume_change_percent == pytest.approx(measured, abs=1e-9), segment.name
        assert segment.voxels_original == before[segment.name]


def test_predicted_contour_volume_matches_written_contours(round_trip):
    _, first, fidelity, out, _ = round_trip
    written = contour_volumes(out, first.reference.geometry)
    for segment in fidelity.segments:
        if segment.voxels_original:
            assert written[segment.name] == pytest.approx(segment.contour_volume_mm3, rel=1e-4), segment.name


def test_exported_rtstruct_is_valid_and_clean(round_trip):
    folder, first, _, out, _ = round_trip
    assert_dciodvfy_clean(out)
    result = check_rtstruct(out, first.reference)
    kinds = {i.kind for i in result.issues}
    assert kinds <= {IssueKind.ROI_WITHOUT_CONTOURS}, result.to_json()["issues"][:3]
    ds = pydicom.dcmread(out)
    assert [str(r.ROIName) for r in ds.StructureSetROISequence] == [s.name for s in first.segmentation.segments]
    assert str(ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID) == first.reference.frame_of_reference_uid


def test_check_of_the_original_file(shared_data):
    folder = shared_data / "dicompyler-core"
    result = check_rtstruct(folder / "rtss.dcm", folder)
    assert result.rois == 10
    empty = [i for i in result.issues if i.kind == IssueKind.ROI_WITHOUT_CONTOURS]
    assert [i.roi_name for i in empty] == ["Areola"]
    assert result.ok


def test_check_finds_broken_contours(shared_data, tmp_path):
    folder = shared_data / "dicompyler-core"
    ds = pydicom.dcmread(folder / "rtss.dcm")
    contours = ds.ROIContourSequence[0].ContourSequence
    points = np.asarray(contours[0].ContourData, float).reshape(-1, 3)
    shifted = points.copy()
    shifted[:, 2] += 1.0  # off the plane by a third of a slice
    contours[1].ContourData = [f"{v:.4f}" for v in shifted.ravel()]
    bowtie = np.array([[0, 0], [20, 20], [20, 0], [0, 20]], float) + points[0, :2]
    contours[2].ContourData = [f"{v:.4f}" for v in np.column_stack([bowtie, np.full(4, points[0, 2])]).ravel()]
    contours[2].NumberOfContourPoints = 4
    contours.append(contours[0])  # duplicate
    ds.ROIContourSequence[0].ContourSequence = contours
    ds.StructureSetROISequence[1].ReferencedFrameOfReferenceUID = "1.2.3.4"
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    kinds = {i.kind for i in check_rtstruct(bad, folder).issues}
    assert {IssueKind.OFF_PLANE, IssueKind.SELF_INTERSECTING, IssueKind.DUPLICATE_CONTOUR,
            IssueKind.FRAME_OF_REFERENCE_MISMATCH, IssueKind.ROI_WITHOUT_CONTOURS} <= kinds


def test_bad_input_names_the_file(shared_data, tmp_path):
    folder = shared_data / "dicompyler-core"
    with pytest.raises(WrongModalityError, match="ct.0.dcm"):
        read_rtstruct(folder / "ct.0.dcm", folder)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(InvalidInputFileError, match="junk.dcm"):
        read_rtstruct(junk, folder)


def test_failed_export_leaves_nothing(round_trip, tmp_path, monkeypatch):
    _, first, fidelity, _, _ = round_trip
    import SegmentationQALib.rtstruct.write as module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module.pydicom, "dcmwrite", broken)
    with pytest.raises(OSError):
        write_rtstruct(first.segmentation, first.reference, tmp_path / "rs.dcm", contours=fidelity.contours)
    assert list(tmp_path.iterdir()) == []
