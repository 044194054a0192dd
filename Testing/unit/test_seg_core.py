"""DICOM SEG core without Slicer: reference series, export, load, interop with highdicom and dcmqi, bad input."""

from __future__ import annotations

import glob

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.errors import (
    EmptySegmentationError,
    FrameOfReferenceMismatchError,
    GeometryError,
    InvalidInputFileError,
    OverlapError,
    WrongModalityError,
)
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from SegmentationQALib.reference_series import ReferenceModality, choose_encoding, write_reference_series
from SegmentationQALib.seg.options import Compression, SegExportOptions, SegReader, SegType
from SegmentationQALib.seg.read import load_seg
from SegmentationQALib.seg.write import write_seg
from SegmentationQALib.segmentation import LayeredSegmentation, Segment
from segtools import assert_same_voxels, dcmqi_segments, three_hundred_overlapping_segments
from validators import assert_dciodvfy_clean

TOTALSEG = "totalsegmentator/reference_files"


@pytest.fixture(scope="module")
def totalseg_case(shared_data, tmp_path_factory):
    """61 TotalSegmentator labels on their NIfTI CT, with the CT written as a DICOM reference series."""
    ct = sitk.ReadImage(str(shared_data / TOTALSEG / "example_ct.nii.gz"))
    labels_image = sitk.ReadImage(str(shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz"))
    geometry = VolumeGeometry.from_sitk(ct)
    series = write_reference_series(sitk.GetArrayFromImage(ct), geometry, tmp_path_factory.mktemp("ts") / "ref")
    labels = sitk.GetArrayFromImage(labels_image)
    assert VolumeGeometry.from_sitk(labels_image).is_close(geometry)
    layered = LayeredSegmentation.from_label_volume(geometry, labels)
    return geometry, labels, series, layered


def test_reference_series_is_valid_and_exact(totalseg_case):
    geometry, _, series, _ = totalseg_case
    assert_dciodvfy_clean([series.paths[0], series.paths[-1]])
    again = dicom_series.read_image_series(series.paths[0].parent)
    assert again.geometry.is_close(geometry, atol_mm=1e-4)
    assert len({ds.SOPInstanceUID for ds in again.datasets}) == geometry.shape[0]
    assert again.frame_of_reference_uid and again.series_instance_uid == series.series_instance_uid


def test_reference_series_float_oblique_and_mr(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.normal(0.3, 2.0, (4, 6, 5)).astype(np.float32)
    affine = affine_from_dicom([5, -3, 12], [0.8660254, 0.5, 0, -0.5, 0.8660254, 0], [0.7, 1.3], -2.5)
    geometry = VolumeGeometry(volume.shape, affine)  # slice axis against the normal: written in reverse
    series = write_reference_series(volume, geometry, tmp_path / "ct")
    assert_dciodvfy_clean(series.paths)
    again = dicom_series.read_image_series(tmp_path / "ct")
    values = again.pixel_array()
    encoding = choose_encoding(volume)
    assert not encoding.exact
    # same voxel centres, same values (to the int16 quantisation step)
    original = {tuple(np.round(geometry.index_to_lps([i, j, k]), 3)): volume[k, j, i]
                for k in range(4) for j in range(6) for i in range(5)}
    for (k, j, i), value in np.ndenumerate(values):
        key = tuple(np.round(again.geometry.index_to_lps([i, j, k]), 3))
        assert abs(original[key] - value) <= encoding.slope
    mr = write_reference_series(np.arange(120, dtype=np.int16).reshape(4, 6, 5), geometry, tmp_path / "mr",
                                modality=ReferenceModality.MR)
    assert_dciodvfy_clean(mr.paths[:1])
    assert pydicom.dcmread(mr.paths[0]).Modality == "MR"


@pytest.mark.parametrize("compression", list(Compression))
def test_labelmap_export_round_trip_many_labels(totalseg_case, tmp_path, compression):
    geometry, labels, series, layered = totalseg_case
    result = write_seg(layered, series, tmp_path / "seg.dcm", SegExportOptions(compression=compression))
    assert result.seg_type == "labelmap" and len(result.segments) == 61
    assert_dciodvfy_clean(result.seg_path)
    loaded = load_seg(result.seg_path)
    assert [s.name for s in loaded.layered.segments] == [s.name for s in layered.segments]
    for index in (0, 30, 60):
        assert_same_voxels(geometry, labels == layered.segments[index].label_value,
                           loaded.layered.geometry, loaded.layered.mask(index), f"segment {index + 1}")
    colors_in = np.array([s.color for s in layered.segments])
    colors_out = np.array([s.color for s in loaded.layered.segments])
    assert np.abs(colors_in - colors_out).max() <= 1.5 / 255  # CIELab round trip to 8-bit RGB


def test_our_labelmap_seg_reads_the_same_in_highdicom_and_dcmqi(totalseg_case, tmp_path):
    geometry, labels, series, layered = totalseg_case
    result = write_seg(layered, series, tmp_path / "seg.dcm")
    assert result.compression == "deflate"
    volume = hd.seg.segread(result.seg_path).get_volume(combine_segments=True)
    hd_geometry = VolumeGeometry(volume.spatial_shape, np.asarray(volume.affine)[:, [2, 1, 0, 3]])
    dcmqi = dcmqi_segments(tmp_path / "seg.dcm", tmp_path / "dcmqi")
    assert len(dcmqi) == 61
    for number in range(1, 62):
        value = layered.segments[number - 1].label_value
        assert_same_voxels(geometry, labels == value, hd_geometry, volume.array == number, f"highdicom {number}")
        dq_geometry, dq_mask, dq_label = dcmqi[number]
        assert dq_label == layered.segments[number - 1].name
        assert_same_voxels(geometry, labels == value, dq_geometry, dq_mask, f"dcmqi {number}")


def overlapping_case(series_geometry):
    shape = series_geometry.shape
    first = np.zeros(shape, np.uint8)
    second = np.zeros(shape, np.uint8)
    first[:, 100:300, 100:300] = 1
    first[:, 350:400, 350:400] = 2
    second[:, 200:320, 150:250] = 1  # overlaps segment 1
    segments = [Segment("A", 0, 1, (1, 0, 0)), Segment("B", 0, 2, (0, 1, 0)), Segment("C", 1, 1, (0, 0, 1))]
    return LayeredSegmentation(series_geometry, [first, second], segments)


@pytest.mark.parametrize("compression", [Compression.DEFLATE, Compression.NONE, Compression.JPEG2000])
def test_binary_overlap_round_trip_and_dcmqi(shared_data, tmp_path, compression):
    series = dicom_series.read_image_series(shared_data / "dcmqi/segmentations/ct-3slice")
    layered = overlapping_case(series.geometry)
    assert layered.has_overlap()
    result = write_seg(layered, series, tmp_path / "seg.dcm", SegExportOptions(compression=compression))
    assert result.seg_type == "binary"
    assert_dciodvfy_clean(result.seg_path)
    loaded = load_seg(result.seg_path)
    assert loaded.layered.has_overlap() and len(loaded.layered.layers) == 2
    for index in range(3):
        assert_same_voxels(series.geometry, layered.mask(index), loaded.layered.geometry, loaded.layered.mask(index))
    if compression != Compression.JPEG2000:  # dcmqi's DCMTK build decodes native, deflated and RLE only
        dcmqi = dcmqi_segments(tmp_path / "seg.dcm", tmp_path / "dq")
        for index in range(3):
            geometry, mask, _ = dcmqi[index + 1]
            assert_same_voxels(series.geometry, layered.mask(index), geometry, mask)


def sample_segs(shared_data):
    files = sorted(glob.glob(str(shared_data / "dcmqi/segmentations/**/*.dcm"), recursive=True))
    files += sorted(glob.glob(str(shared_data / "dcmqi/segmentations/*/seg/*")))
    files += sorted(glob.glob(str(shared_data / "highdicom/test_files/seg_image_ct*.dcm")))
    return [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SEG"]


def test_loader_matches_highdicom_and_dcmqi_on_sample_segs(shared_data, tmp_path):
    files = sample_segs(shared_data)
    assert len(files) >= 10
    for n, path in enumerate(files):
        loaded = load_seg(path)
        seg = hd.seg.segread(path)
        numbers = [n for n in seg.segment_numbers if n > 0]  # LABELMAP may describe 0 (background)
        for index, number in enumerate(numbers):
            if seg.segmentation_type.value == "LABELMAP":
                volume = seg.get_volume(combine_segments=True, allow_missing_positions=True)
                reference = volume.array == number
            else:
                volume = seg.get_volume(segment_numbers=[number], allow_missing_positions=True,
                                        rescale_fractional=True, dtype=np.float32)
                reference = volume.array[..., 0] >= 0.5
            geometry = VolumeGeometry(volume.spatial_shape, np.asarray(volume.affine)[:, [2, 1, 0, 3]])
            if reference.any():
                assert_same_voxels(geometry, reference, loaded.layered.geometry, loaded.layered.mask(index), path)
        if seg.segmentation_type.value != "FRACTIONAL" and "highdicom" not in path:
            for number, (geometry, mask, _) in dcmqi_segments(path, tmp_path / f"dq{n}").items():
                if mask.any():
                    assert_same_voxels(geometry, mask, loaded.layered.geometry, loaded.layered.mask(number - 1), path)


def test_bad_inputs_leave_no_file(shared_data, tmp_path, totalseg_case):
    series = dicom_series.read_image_series(shared_data / "dcmqi/segmentations/ct-3slice")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OverlapError, match="overlap"):
        write_seg(overlapping_case(series.geometry), series, out / "x.dcm", SegExportOptions(seg_type=SegType.LABELMAP))
    empty = LayeredSegmentation(series.geometry, [np.zeros(series.geometry.shape, np.uint8)], [Segment("e", 0, 1)])
    with pytest.raises(EmptySegmentationError, match="x.dcm"):
        write_seg(empty, series, out / "x.dcm")
    with pytest.raises(FrameOfReferenceMismatchError, match="FrameOfReferenceUID"):
        write_seg(overlapping_case(series.geometry), series, out / "x.dcm",
                  SegExportOptions(expected_frame_of_reference_uid="1.2.3.4"))
    _, _, _, other = totalseg_case
    with pytest.raises(GeometryError, match="does not match"):
        write_seg(other, series, out / "x.dcm")
    assert list(out.iterdir()) == []
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"DICM" * 100)
    with pytest.raises(InvalidInputFileError, match="corrupt.dcm"):
        load_seg(corrupt)
    with pytest.raises(WrongModalityError, match="not a DICOM Segmentation"):
        load_seg(shared_data / "dcmqi/segmentations/ct-3slice/01.dcm")
    with pytest.raises(GeometryError, match="patient-space"):
        load_seg(shared_data / "highdicom/test_files/seg_image_sm_control.dcm")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes((shared_data / "dcmqi/segmentations/liver.dcm").read_bytes()[:-5000])
    with pytest.raises(InvalidInputFileError, match="truncated.dcm"):
        load_seg(truncated)


def assert_same_loaded(fast, reference, what):
    assert fast.seg_type == reference.seg_type
    assert [s.name for s in fast.layered.segments] == [s.name for s in reference.layered.segments], what
    assert [s.terminology for s in fast.layered.segments] == [s.terminology for s in reference.layered.segments]
    assert np.allclose([s.color for s in fast.layered.segments], [s.color for s in reference.layered.segments])
    assert fast.frame_of_reference_uid == reference.frame_of_reference_uid
    for index in range(len(fast.layered.segments)):
        a, b = reference.layered.mask(index), fast.layered.mask(index)
        if a.any() or b.any():
            assert_same_voxels(reference.layered.geometry, a, fast.layered.geometry, b, f"{what} segment {index + 1}")


def test_fast_binary_reader_matches_highdicom_on_samples(shared_data):
    used_fast = 0
    for path in sample_segs(shared_data):
        fast, reference = load_seg(path), load_seg(path, reader=SegReader.HIGHDICOM)
        used_fast += "decode_assemble" in fast.timings
        assert_same_loaded(fast, reference, path)
    assert used_fast >= 8  # uncompressed BINARY and patient-space LABELMAP samples take the fast path


def test_fast_binary_reader_many_overlapping_segments(shared_data, tmp_path):
    """300 segments, half of them overlapping others, odd-sized frames (bits not byte-aligned)."""
    series = dicom_series.read_image_series(shared_data / "dcmqi/segmentations/23x38x3/image")
    layered = three_hundred_overlapping_segments(series.geometry)
    counts = layered.voxel_counts()
    kept = [i for i, count in enumerate(counts) if count]
    result = write_seg(layered, series, tmp_path / "many.dcm", SegExportOptions(seg_type=SegType.BINARY))
    fast, reference = load_seg(result.seg_path), load_seg(result.seg_path, reader=SegReader.HIGHDICOM)
    assert "decode_assemble" in fast.timings
    assert_same_loaded(fast, reference, "many")
    for out_index, in_index in enumerate(kept):
        assert_same_voxels(series.geometry, layered.mask(in_index), fast.layered.geometry, fast.layered.mask(out_index))


def test_fast_binary_writer_matches_highdicom_writer(shared_data, tmp_path):
    """300 overlapping segments on the real 512x512 CT: the bulk writer and highdicom's agree in every reader."""
    series = dicom_series.read_image_series(shared_data / "dcmqi/segmentations/ct-3slice")
    shape = series.geometry.shape
    rng = np.random.default_rng(7)
    layers = [np.zeros(shape, np.uint16) for _ in range(3)]
    segments = []
    for number in range(300):
        layer = number % 3
        value = number // 3 + 1
        k = rng.integers(0, shape[0])
        r, c = rng.integers(0, shape[1] - 40, 2)
        layers[layer][k, r:r + rng.integers(2, 40), c:c + rng.integers(2, 40)] = value
        segments.append(Segment(f"organ {number}", layer, value, tuple(rng.random(3))))
    layered = LayeredSegmentation(series.geometry, layers, segments)
    kept = [i for i, count in enumerate(layered.voxel_counts()) if count]
    fast = write_seg(layered, series, tmp_path / "fast.dcm", SegExportOptions(seg_type=SegType.BINARY))
    slow = write_seg(layered, series, tmp_path / "slow.dcm",
                     SegExportOptions(seg_type=SegType.BINARY, compression=Compression.JPEG2000))
    assert_dciodvfy_clean([fast.seg_path, slow.seg_path])
    fast_ds, slow_ds = pydicom.dcmread(fast.seg_path), pydicom.dcmread(slow.seg_path)
    assert fast_ds.SegmentsOverlap == "YES" and fast_ds.NumberOfFrames == slow_ds.NumberOfFrames
    assert fast_ds.SegmentSequence == slow_ds.SegmentSequence
    instances = [{i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
                 for ds in (fast_ds, slow_ds)]
    assert instances[0] == instances[1] and len(instances[0]) == 3
    uid_at = {round(float(ds.ImagePositionPatient[2]), 3): ds.SOPInstanceUID for ds in series.datasets}
    for item in fast_ds.PerFrameFunctionalGroupsSequence:  # each frame names the CT slice it lies on
        z = round(float(item.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
        assert item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == uid_at[z]
    fast_hd, slow_hd = hd.seg.segread(fast.seg_path), hd.seg.segread(slow.seg_path)
    for number in (1, 2, 150, len(kept)):
        volumes = [s.get_volume(segment_numbers=[number], allow_missing_positions=True) for s in (fast_hd, slow_hd)]
        geometries = [VolumeGeometry(v.spatial_shape, np.asarray(v.affine)[:, [2, 1, 0, 3]]) for v in volumes]
        assert_same_voxels(geometries[0], volumes[0].array[..., 0] > 0, geometries[1], volumes[1].array[..., 0] > 0)
        assert_same_voxels(series.geometry, layered.mask(kept[number - 1]), geometries[0], volumes[0].array[..., 0] > 0)
    ours = load_seg(fast.seg_path)
    for out_index, in_index in enumerate(kept):
        assert_same_voxels(series.geometry, layered.mask(in_index), ours.layered.geometry, ours.layered.mask(out_index))
    dcmqi = dcmqi_segments(tmp_path / "fast.dcm", tmp_path / "dq")
    for number in (1, 77, len(kept)):
        geometry, mask, label = dcmqi[number]
        assert label == layered.segments[kept[number - 1]].name
        assert_same_voxels(series.geometry, layered.mask(kept[number - 1]), geometry, mask)
