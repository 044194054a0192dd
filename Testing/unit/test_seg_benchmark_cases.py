"""The benchmark's own cases (Testing/Benchmarks/seg_speed.py: real TotalSegmentator organs split into 117 and
1000 segments, with overlapping margins for BINARY), on a smaller grid: the fast writer and reader give the same
object and the same voxels as highdicom's, and dcmqi reads our files the same."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from Benchmarks import seg_speed
from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.seg.options import SegExportOptions, SegReader, SegType, SegWriter
from SegmentationQALib.seg.read import load_seg
from SegmentationQALib.seg.write import write_seg
from segtools import assert_same_seg, assert_same_voxels, dcmqi_segments
from validators import assert_dciodvfy_clean


@pytest.fixture(scope="module")
def cases(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    ct_dir, built = seg_speed.build_cases(shared_data, work, 40, 128, [117, 1000], [])
    return dicom_series.read_image_series(ct_dir), {case["name"]: case for case in built}


def loaded_equals_input(layered, loaded, what):
    assert [s.name for s in loaded.layered.segments] == [s.name for s in layered.segments]
    for index in range(len(layered.segments)):
        assert_same_voxels(layered.geometry, layered.mask(index), loaded.layered.geometry,
                           loaded.layered.mask(index), f"{what} segment {index + 1}")


@pytest.mark.parametrize("name", ["labelmap_117", "binary_137", "labelmap_1000"])
def test_fast_paths_equal_highdicom_on_benchmark_cases(cases, tmp_path, name):
    series, built = cases
    layered = seg_speed.load_case(built[name]["folder"])
    assert len(layered.segments) == built[name]["segments"]
    seg_type = SegType[built[name]["seg_type"]]
    options = SegExportOptions(seg_type=seg_type)
    fast = write_seg(layered, series, tmp_path / "fast.dcm", options)
    slow = write_seg(layered, series, tmp_path / "slow.dcm", options, writer=SegWriter.HIGHDICOM)
    assert (fast.writer, slow.writer) == ("streamed", "highdicom")
    assert_same_seg(fast.seg_path, slow.seg_path)
    assert_dciodvfy_clean([fast.seg_path])
    ours, reference = load_seg(fast.seg_path), load_seg(slow.seg_path, reader=SegReader.HIGHDICOM)
    assert "decode_assemble" in ours.timings and "decode_assemble" not in reference.timings
    loaded_equals_input(layered, ours, f"{name} fast")
    loaded_equals_input(layered, reference, f"{name} highdicom")
    if seg_type == SegType.LABELMAP:  # dcmqi writes one file per segment: a sample of them
        dcmqi = dcmqi_segments(tmp_path / "fast.dcm", tmp_path / "dq")
        for number in (1, len(layered.segments) // 2, len(layered.segments)):
            geometry, mask, label = dcmqi[number]
            assert label == layered.segments[number - 1].name
            assert_same_voxels(layered.geometry, layered.mask(number - 1), geometry, mask, f"dcmqi {number}")


def test_1020_overlapping_segments_fast_paths(cases, tmp_path):
    """highdicom cannot write this case (one boolean volume per segment); it reads our file the same as we do."""
    series, built = cases
    layered = seg_speed.load_case(built["binary_1020"]["folder"])
    result = write_seg(layered, series, tmp_path / "seg.dcm", SegExportOptions(seg_type=SegType.BINARY))
    assert result.writer == "streamed" and len(result.segments) == 1020
    assert_dciodvfy_clean([result.seg_path])
    ours = load_seg(result.seg_path)
    loaded_equals_input(layered, ours, "binary_1020")
    seg = hd.seg.segread(result.seg_path)
    for number in (1, 117, 500, 1001, 1020):  # margins (1001-1020) overlap the organs
        volume = seg.get_volume(segment_numbers=[number], allow_missing_positions=True)
        geometry = VolumeGeometry(volume.spatial_shape, np.asarray(volume.affine)[:, [2, 1, 0, 3]])
        assert_same_voxels(layered.geometry, layered.mask(number - 1), geometry, volume.array[..., 0] > 0,
                           f"highdicom {number}")
