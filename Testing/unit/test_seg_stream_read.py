"""Streaming SEG reader: native and Deflated Explicit VR Little Endian files give what highdicom gives, pixel data is
read piece by piece (memory), and broken deflate streams or short pixel data raise InvalidInputFileError."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian
from test_seg_core import assert_same_loaded, sample_segs

from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.dicom.deflate import InflatingReader
from DicomFidelityCommonLib.errors import InvalidInputFileError
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from SegmentationQALib.reference_series import write_reference_series
from SegmentationQALib.seg.options import Compression, SegExportOptions, SegReader, SegType
from SegmentationQALib.seg.read import load_seg, read_seg_file
from SegmentationQALib.seg.stream_read import open_seg_stream
from SegmentationQALib.seg.write import write_seg
from SegmentationQALib.segmentation import LayeredSegmentation, Segment
from segtools import assert_same_voxels, dcmqi_segments, three_hundred_overlapping_segments

NATIVE = Compression.NONE  # written uncompressed, then deflated here with pydicom (independent of our writer)


def deflated_copy(source, target, edit=None):
    ds = pydicom.dcmread(source)
    if edit is not None:
        edit(ds)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(target, enforce_file_format=True)
    return target


def test_streaming_matches_highdicom_on_native_and_deflated_samples(shared_data, tmp_path):
    streamed = 0
    for n, path in enumerate(sample_segs(shared_data)):
        reference = load_seg(path, reader=SegReader.HIGHDICOM)
        if reference.seg_type == "FRACTIONAL":
            continue
        deflated = deflated_copy(path, tmp_path / f"deflated{n}.dcm")
        for candidate in (path, deflated):
            stream = open_seg_stream(candidate)
            assert stream is not None and "PixelData" not in stream.ds, candidate  # header only, pixels unread
            stream.close()
            fast = load_seg(candidate)
            assert "decode_assemble" in fast.timings, candidate
            assert_same_loaded(fast, reference, candidate)
            streamed += 1
        assert_same_loaded(load_seg(deflated, reader=SegReader.HIGHDICOM), reference, deflated)
        whole = read_seg_file(deflated)  # streamed header + the rest: the same dataset dcmread gives
        assert whole == pydicom.dcmread(deflated) and whole.PixelData == pydicom.dcmread(path).PixelData
    assert streamed >= 16


def test_dcmqi_reads_the_deflated_copy(shared_data, tmp_path):
    path = shared_data / "dcmqi/segmentations/partial_overlaps.dcm"
    deflated = deflated_copy(path, tmp_path / "deflated.dcm")
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    ours = load_seg(deflated)
    segments = dcmqi_segments(deflated, tmp_path / "dq")
    assert len(segments) == len(ours.layered.segments) >= 2
    for number, (geometry, mask, _) in segments.items():
        assert_same_voxels(geometry, mask, ours.layered.geometry, ours.layered.mask(number - 1), f"segment {number}")


def test_broken_deflate_streams_and_short_pixel_data_raise(shared_data, tmp_path):
    source = shared_data / "dcmqi/segmentations/liver.dcm"
    deflated = deflated_copy(source, tmp_path / "deflated.dcm")
    data = deflated.read_bytes()
    header_end = data.index(b"1.2.840.10008.1.2.1.99") + 30  # inside the deflated dataset, near its start
    cases = {"cut_in_middle.dcm": data[: len(data) // 2], "cut_in_header.dcm": data[: header_end + 40]}
    corrupt = bytearray(data)
    corrupt[len(data) // 2: len(data) // 2 + 64] = bytes(range(64, 128))
    cases["corrupt.dcm"] = bytes(corrupt)
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        for read in (load_seg, read_seg_file, lambda p: load_seg(p, reader=SegReader.HIGHDICOM)):
            with pytest.raises(InvalidInputFileError, match=f"{name}.*(deflate|truncated)"):
                read(tmp_path / name)

    def shorten(ds):
        ds.PixelData = ds.PixelData[:-1000]

    short = deflated_copy(source, tmp_path / "short_pixels.dcm", shorten)
    for read in (load_seg, read_seg_file):
        with pytest.raises(InvalidInputFileError, match="short_pixels.dcm.*pixel data truncated"):
            read(short)


def test_frames_not_grouped_by_segment_fall_back_to_whole_read(shared_data, tmp_path):
    """Frames interleaved across segments: read at once, still the same voxels as highdicom on the original."""
    path = shared_data / "dcmqi/segmentations/partial_overlaps.dcm"
    reference = load_seg(path, reader=SegReader.HIGHDICOM)

    def interleave(ds):
        size = int(ds.Rows) * int(ds.Columns) // 8
        segments = [int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                    for item in ds.PerFrameFunctionalGroupsSequence]
        assert len(set(segments)) >= 2
        order = list(range(len(segments)))[::-1]
        items = list(ds.PerFrameFunctionalGroupsSequence)
        ds.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
        ds.PixelData = b"".join(ds.PixelData[i * size: (i + 1) * size] for i in order)

    deflated = deflated_copy(path, tmp_path / "interleaved.dcm", interleave)
    frame_segments = [int(i.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                      for i in pydicom.dcmread(deflated).PerFrameFunctionalGroupsSequence]
    assert np.any(np.diff(frame_segments) < 0)  # really not in SegmentSequence order
    fast = load_seg(deflated)
    assert "decode_assemble" in fast.timings
    assert_same_loaded(fast, reference, "interleaved")


def test_many_overlapping_segments_deflated(shared_data, tmp_path):
    """300 segments, half overlapping others, odd-sized frames (bits not byte-aligned), from a deflated file."""
    series = dicom_series.read_image_series(shared_data / "dcmqi/segmentations/23x38x3/image")
    layered = three_hundred_overlapping_segments(series.geometry)
    kept = [i for i, count in enumerate(layered.voxel_counts()) if count]
    options = SegExportOptions(seg_type=SegType.BINARY, compression=NATIVE)
    native = write_seg(layered, series, tmp_path / "many.dcm", options).seg_path
    deflated = deflated_copy(native, tmp_path / "many_deflated.dcm")
    reference = load_seg(native, reader=SegReader.HIGHDICOM)
    fast = load_seg(deflated)
    assert "decode_assemble" in fast.timings and len(fast.layered.segments) == len(kept)
    assert_same_loaded(fast, reference, "many deflated")
    for out_index, in_index in enumerate(kept):
        assert_same_voxels(series.geometry, layered.mask(in_index), fast.layered.geometry, fast.layered.mask(out_index))


def big_binary_case(tmp_path, segments=300, slices=30, size=320):
    """Every segment a 12x12 square on every slice, none overlapping: pixel data ~19x the uint16 label volume."""
    affine = affine_from_dicom([-100.0, -120.0, 30.0], [1, 0, 0, 0, 1, 0], [0.8, 0.8], 2.0)
    geometry = VolumeGeometry((slices, size, size), affine)
    ct = (np.arange(slices * size * size) % 200).astype(np.int16).reshape(geometry.shape)
    series = write_reference_series(ct, geometry, tmp_path / "ct")
    series = dicom_series.read_image_series(tmp_path / "ct")
    labels = np.zeros(geometry.shape, np.uint16)
    per_row = size // 14
    for value in range(1, segments + 1):
        r, c = divmod(value - 1, per_row)
        labels[:, r * 14: r * 14 + 12, c * 14: c * 14 + 12] = value
    layered = LayeredSegmentation(series.geometry, [labels],
                                  [Segment(f"organ {v}", 0, v, (0.2, 0.4, 0.6)) for v in range(1, segments + 1)])
    options = SegExportOptions(seg_type=SegType.BINARY, compression=NATIVE)
    native = write_seg(layered, series, tmp_path / "big.dcm", options).seg_path
    return layered, native


def test_large_deflated_binary_is_not_read_whole(tmp_path):
    layered, native = big_binary_case(tmp_path)
    header = pydicom.dcmread(native, stop_before_pixels=True)
    pixel_bytes = int(header.NumberOfFrames) * int(header.Rows) * int(header.Columns) // 8
    label_bytes = layered.layers[0].nbytes
    assert pixel_bytes > 15 * label_bytes and pixel_bytes > 100e6
    deflated = deflated_copy(native, tmp_path / "big_deflated.dcm")
    assert deflated.stat().st_size < pixel_bytes / 20
    tracemalloc.start()
    try:
        loaded = load_seg(deflated)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "decode_assemble" in loaded.timings
    assert peak < pixel_bytes / 4, f"peak {peak / 1e6:.1f} MB for {pixel_bytes / 1e6:.1f} MB of pixel data"
    assert len(loaded.layered.segments) == 300
    for index in (0, 149, 299):
        assert_same_voxels(layered.geometry, layered.mask(index), loaded.layered.geometry, loaded.layered.mask(index))


def test_inflating_reader_seeks_back_and_reads_in_pieces(tmp_path):
    import zlib

    payload = np.random.default_rng(3).integers(0, 4, 3_000_000, dtype=np.uint8).tobytes()
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    path = tmp_path / "raw.deflate"
    path.write_bytes(packer.compress(payload) + packer.flush())
    with open(path, "rb") as raw:
        reader = InflatingReader(raw, path)
        assert reader.read(10) == payload[:10] and reader.tell() == 10
        reader.seek(4)
        assert reader.read(6) == payload[4:10]
        reader.keep_history = False
        assert reader.read(1_500_000) == payload[10:1_500_010]
        reader.seek(-12, 1)
        target = bytearray(1_000_000)
        assert reader.readinto(target) == len(target) and bytes(target) == payload[1_499_998:2_499_998]
        assert reader.read(10_000_000) == payload[2_499_998:]
        assert reader.read(5) == b""
    with open(path, "rb") as raw:
        reader = InflatingReader(_Short(raw, path.stat().st_size // 2), path)
        with pytest.raises(InvalidInputFileError, match="raw.deflate.*deflate stream truncated"):
            reader.read(len(payload))


class _Short:
    """A file that ends after ``size`` bytes."""

    def __init__(self, raw, size):
        self._raw, self._left = raw, size

    def read(self, n):
        data = self._raw.read(min(n, self._left))
        self._left -= len(data)
        return data
