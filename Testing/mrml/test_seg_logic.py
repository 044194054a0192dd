"""SegmentationQA MRML logic under the slicer-core wheel: nodes in, DICOM SEG out, and back."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.errors import MissingTagError, OverlapError, ReferenceNotDicomError
from SegmentationQALib.seg.options import SegExportOptions, SegType
from segtools import assert_same_voxels
from validators import assert_dciodvfy_clean

DCMQI = "dcmqi/segmentations"
TOTALSEG = "totalsegmentator/reference_files"


def test_partial_overlaps_binary_round_trip_is_exact(logic, shared_data, tmp_path):
    node, loaded = logic.loadDicomSeg(shared_data / DCMQI / "partial_overlaps.dcm")
    assert loaded.seg_type == "BINARY" and len(loaded.segments) == 5
    assert node.GetSegmentation().GetNumberOfLayers() > 1  # overlaps kept in separate layers
    result = logic.exportDicomSeg(node, None, tmp_path, referenceDicomFolder=shared_data / DCMQI / "ct-3slice")
    assert result.seg_type == "binary"
    assert_dciodvfy_clean(result.seg_path)
    again, _ = logic.loadDicomSeg(result.seg_path)
    before = logic.layeredSegmentationFromNode(node)
    after = logic.layeredSegmentationFromNode(again)
    for index in range(5):
        assert before.segments[index].name == after.segments[index].name
        assert np.allclose(before.segments[index].color, after.segments[index].color, atol=1.5 / 255)
        assert_same_voxels(before.geometry, before.mask(index), after.geometry, after.mask(index))
    segment = again.GetSegmentation().GetNthSegment(0)
    assert "SCT^85756007^Tissue" in segment.GetTerminology()
    with pytest.raises(OverlapError):
        logic.exportDicomSeg(node, None, tmp_path / "lm", SegExportOptions(seg_type=SegType.LABELMAP),
                             referenceDicomFolder=shared_data / DCMQI / "ct-3slice")
    assert list((tmp_path / "lm").iterdir()) == []


def test_nifti_reference_needs_export_reference(logic, shared_data, tmp_path):
    segmentation = logic.loadSegmentationFile(shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz")
    volume = logic.loadVolumeFile(shared_data / TOTALSEG / "example_ct.nii.gz")
    with pytest.raises(ReferenceNotDicomError, match="export-reference"):
        logic.exportDicomSeg(segmentation, volume, tmp_path / "no")
    assert list((tmp_path / "no").iterdir()) == []
    result = logic.exportDicomSeg(segmentation, volume, tmp_path / "yes", exportReference=True)
    assert result.seg_type == "labelmap" and len(result.segments) == 61
    assert any("no terminology" in w for w in result.warnings)  # Slicer's placeholder is reported
    series = dicom_series.read_image_series(tmp_path / "yes" / "reference")
    assert len(series.paths) == 112
    assert_dciodvfy_clean([result.seg_path, series.paths[0], series.paths[-1]])
    seg = pydicom.dcmread(result.seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_instance_uid
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= set(series.sop_instance_uids)
    assert seg.FrameOfReferenceUID == series.frame_of_reference_uid
    # the exported labels equal the NIfTI labels in patient space
    source = logic.layeredSegmentationFromNode(segmentation)
    loaded, _ = logic.loadDicomSeg(result.seg_path)
    back = logic.layeredSegmentationFromNode(loaded)
    for index in (0, 17, 60):
        assert_same_voxels(source.geometry, source.mask(index), back.geometry, back.mask(index))


def test_real_dicom_reference_and_resampled_segmentation(logic, shared_data, tmp_path):
    """TotalSegmentator's DICOM example: labels on the real (JPEG 2000) CT series; then on a coarser grid."""
    segmentation = logic.loadSegmentationFile(shared_data / TOTALSEG / "example_seg_dicom.nii.gz")
    folder = shared_data / TOTALSEG / "example_ct_dicom"
    # this anonymised series has blank SOP Instance UIDs: it cannot be referenced as it is
    with pytest.raises(MissingTagError, match="SOPClassUID.*export-reference"):
        logic.exportDicomSeg(segmentation, None, tmp_path / "a", referenceDicomFolder=folder)
    assert list((tmp_path / "a").iterdir()) == []
    result = logic.exportDicomSeg(segmentation, None, tmp_path / "a", referenceDicomFolder=folder, exportReference=True)
    assert_dciodvfy_clean(result.seg_path)
    ct = dicom_series.read_image_series(folder)
    written = dicom_series.read_image_series(tmp_path / "a" / "reference")
    assert written.geometry.is_close(ct.geometry, atol_mm=1e-3)
    assert np.array_equal(written.pixel_array(), ct.pixel_array())  # HU kept exactly
    seg = pydicom.dcmread(result.seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == written.series_instance_uid
    assert not any("resampled" in w for w in result.warnings)
    # a segmentation on another grid is resampled, and the warning says how many voxels changed
    layered = logic.layeredSegmentationFromNode(segmentation)
    from DicomFidelityCommonLib.geometry import VolumeGeometry

    coarse_affine = layered.geometry.affine_lps.copy()
    coarse_affine[:3, :2] *= 2
    coarse = logic.segmentationNodeFromLayered(
        type(layered)(VolumeGeometry((layered.geometry.shape[0], 256, 256), coarse_affine),
                      [layer[:, ::2, ::2].copy() for layer in layered.layers], layered.segments), "coarse")
    resampled = logic.exportDicomSeg(coarse, None, tmp_path / "b", referenceDicomFolder=tmp_path / "a" / "reference")
    assert any("resampled onto the reference grid" in w and "voxels changed" in w for w in resampled.warnings)
    assert_dciodvfy_clean(resampled.seg_path)


def test_seg_nrrd_and_label_volume_files(logic, shared_data, tmp_path):
    node, _ = logic.loadDicomSeg(shared_data / DCMQI / "partial_overlaps.dcm")
    path = logic.saveSegmentationFile(node, tmp_path / "overlaps.seg.nrrd")
    again = logic.loadSegmentationFile(path)
    assert again.GetSegmentation().GetNumberOfLayers() == node.GetSegmentation().GetNumberOfLayers()
    a, b = logic.layeredSegmentationFromNode(node), logic.layeredSegmentationFromNode(again)
    assert [s.name for s in a.segments] == [s.name for s in b.segments]
    assert [s.segment_id for s in a.segments] == [s.segment_id for s in b.segments]
    assert np.allclose([s.color for s in a.segments], [s.color for s in b.segments], atol=1e-5)
    for index in range(5):  # terminology survives Slicer's own .seg.nrrd reader
        assert (again.GetSegmentation().GetNthSegment(index).GetTerminology()
                == node.GetSegmentation().GetNthSegment(index).GetTerminology())
    for index in range(5):
        assert_same_voxels(a.geometry, a.mask(index), b.geometry, b.mask(index))
    with pytest.raises(OverlapError, match="seg.nrrd"):
        logic.saveSegmentationFile(node, tmp_path / "overlaps.nii.gz")
    assert not (tmp_path / "overlaps.nii.gz").exists()
    liver, _ = logic.loadDicomSeg(shared_data / DCMQI / "liver.dcm")
    label_path = logic.saveSegmentationFile(liver, tmp_path / "liver.nii.gz")
    reread = logic.layeredSegmentationFromNode(logic.loadSegmentationFile(label_path))
    original = logic.layeredSegmentationFromNode(liver)
    assert_same_voxels(original.geometry, original.mask(0), reread.geometry, reread.mask(0))


def test_remove_segmentation_node_empties_and_removes(logic, shared_data):
    """The fast removal leaves no segmentation, no segment and no node behind (the speed is in
    Testing/Benchmarks/teardown_speed.py)."""
    node, loaded = logic.loadDicomSeg(shared_data / DCMQI / "partial_overlaps.dcm")
    other, _ = logic.loadDicomSeg(shared_data / DCMQI / "liver.dcm")
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(loaded.segments) == 5
    logic.removeSegmentationNode(node)
    assert segmentation.GetNumberOfSegments() == 0
    assert node.GetScene() is None and logic.scene.GetNodeByID(node.GetID() or "") is None
    assert other.GetScene() is logic.scene
    kept = logic.segmentationNodeIds()
    third, _ = logic.loadDicomSeg(shared_data / DCMQI / "liver.dcm")
    logic.releaseSegmentations(keep=kept)  # e.g. a user's nodes in an open Slicer stay
    assert other.GetScene() is logic.scene and third.GetScene() is None
    logic.releaseSegmentations()
    assert logic.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
