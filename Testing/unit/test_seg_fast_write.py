"""The streaming SEG writer (seg_fast_write + seg_stream) against highdicom building the same SEG frame by frame:
same attributes, same per-frame groups, same pixels, for BINARY and LABELMAP, uncompressed and deflated; valid in
dciodvfy and read the same by highdicom, dcmqi and our reader."""

from __future__ import annotations

import zlib

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.dicom.deflate import ParallelDeflateWriter
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.seg.census import layer_census
from SegmentationQALib.seg.options import Compression, SegExportOptions, SegType, SegWriter
from SegmentationQALib.seg.read import load_seg
from SegmentationQALib.seg.write import write_seg
from SegmentationQALib.segmentation import (
    CodedTerm,
    LayeredSegmentation,
    Segment,
    SegmentTerminology,
    label_counts,
)
from segtools import assert_same_seg, assert_same_voxels, dcmqi_segments
from validators import assert_dciodvfy_clean, dciodvfy_errors


@pytest.fixture(scope="module")
def ct3(shared_data):
    return dicom_series.read_image_series(shared_data / "dcmqi/segmentations/ct-3slice")


def many_segments(series, count: int, layers: int, seed: int, dtype=np.uint16, empty_slice: int | None = None):
    """``count`` rectangles spread over ``layers`` layers (overlapping across layers), some empty."""
    shape = series.geometry.shape
    rng = np.random.default_rng(seed)
    arrays = [np.zeros(shape, dtype) for _ in range(layers)]
    segments = []
    for number in range(count):
        layer, value = number % layers, number // layers + 1
        k = int(rng.integers(0, shape[0]))
        if k == empty_slice:
            k = (k + 1) % shape[0]
        r, c = rng.integers(0, shape[1] - 40, 2)
        if number % 17 != 5:  # every 17th segment stays empty: it must be skipped with a warning
            arrays[layer][k, r:r + rng.integers(2, 40), c:c + rng.integers(2, 40)] = value
        segments.append(Segment(f"organ {number}", layer, value, tuple(rng.random(3))))
    return LayeredSegmentation(series.geometry, arrays, segments)


@pytest.mark.parametrize("compression", [Compression.DEFLATE, Compression.NONE])
def test_binary_fast_writer_equals_highdicom(ct3, tmp_path, compression):
    layered = many_segments(ct3, 120, 3, seed=3)
    options = SegExportOptions(seg_type=SegType.BINARY, compression=compression)
    fast = write_seg(layered, ct3, tmp_path / "fast.dcm", options)
    slow = write_seg(layered, ct3, tmp_path / "slow.dcm", options, writer=SegWriter.HIGHDICOM)
    assert (fast.writer, slow.writer) == ("streamed", "highdicom")
    assert fast.file_size_bytes and len(fast.segments) == len(slow.segments) == 120 - len(range(5, 120, 17))
    assert any("empty" in w for w in fast.warnings)
    assert_same_seg(fast.seg_path, slow.seg_path)
    assert_dciodvfy_clean([fast.seg_path])
    ds = pydicom.dcmread(fast.seg_path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == compression.transfer_syntax_uid and ds.SegmentsOverlap == "YES"


@pytest.mark.parametrize("values", ["consecutive", "gaps", "stray", "two_layers", "uint16"])
def test_labelmap_fast_writer_equals_highdicom(ct3, tmp_path, values):
    """Stored values equal to the segment numbers (written without a copy), values with gaps, values no segment
    has (written as background; a slice with only those is empty), non-overlapping segments on two layers, and
    more than 255 segments (16-bit frames); one slice empty (frame omitted)."""
    shape = ct3.geometry.shape
    labels = np.zeros(shape, np.uint8)
    labels[0, 10:200, 10:200] = 1
    labels[0, 250:300, 20:400] = 2
    labels[2, 100:400, 100:110] = 3  # slice 1 stays empty
    segments = [Segment(f"s{v}", 0, v, (v / 4, 0.5, 0.2)) for v in (1, 2, 3)]
    layers = [labels]
    if values == "gaps":
        labels[labels == 3] = 9
        segments[2] = Segment("s9", 0, 9, (0.1, 0.9, 0.3))
    elif values == "stray":
        labels[0, 0:5, 0:5] = 200
        labels[1, 40:60, 40:60] = 200
    elif values == "two_layers":
        second = np.zeros(shape, np.uint8)
        second[2, 10:50, 300:350] = 1
        layers.append(second)
        segments.append(Segment("other layer", 1, 1, (0.3, 0.3, 0.9)))
    elif values == "uint16":
        layered = many_segments(ct3, 300, 1, seed=5, empty_slice=1)
        layers, segments = layered.layers, layered.segments
    layered = LayeredSegmentation(ct3.geometry, layers, segments)
    options = SegExportOptions(seg_type=SegType.LABELMAP)
    fast = write_seg(layered, ct3, tmp_path / "fast.dcm", options)
    slow = write_seg(layered, ct3, tmp_path / "slow.dcm", options, writer=SegWriter.HIGHDICOM)
    assert fast.compression == "deflate" and (fast.writer, slow.writer) == ("streamed", "highdicom")
    assert_same_seg(fast.seg_path, slow.seg_path)
    ds = pydicom.dcmread(fast.seg_path)
    assert ds.NumberOfFrames == 2 and ds.BitsAllocated == (16 if values == "uint16" else 8)
    assert_dciodvfy_clean([fast.seg_path])
    loaded = load_seg(fast.seg_path)
    kept = [i for i, count in enumerate(layered.voxel_counts()) if count]
    for out_index, in_index in enumerate(kept):
        assert_same_voxels(ct3.geometry, layered.mask(in_index), loaded.layered.geometry,
                           loaded.layered.mask(out_index))


def test_deflated_default_reads_in_dcmqi_and_highdicom(ct3, tmp_path):
    layered = many_segments(ct3, 40, 2, seed=11)
    result = write_seg(layered, ct3, tmp_path / "seg.dcm")
    assert result.seg_type == "binary" and result.compression == "deflate"
    assert pydicom.dcmread(result.seg_path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    kept = [i for i, count in enumerate(layered.voxel_counts()) if count]
    dcmqi = dcmqi_segments(tmp_path / "seg.dcm", tmp_path / "dq")
    assert len(dcmqi) == len(kept)
    seg = hd.seg.segread(result.seg_path)
    for number in (1, len(kept) // 2, len(kept)):
        geometry, mask, label = dcmqi[number]
        assert label == layered.segments[kept[number - 1]].name
        assert_same_voxels(ct3.geometry, layered.mask(kept[number - 1]), geometry, mask)
        volume = seg.get_volume(segment_numbers=[number], allow_missing_positions=True)
        hd_geometry = VolumeGeometry(volume.spatial_shape, np.asarray(volume.affine)[:, [2, 1, 0, 3]])
        assert_same_voxels(ct3.geometry, layered.mask(kept[number - 1]), hd_geometry, volume.array[..., 0] > 0)


def test_validator_sees_inside_deflated_files(ct3, tmp_path):
    """dciodvfy cannot read deflated files: the validator inflates them first, and still catches errors."""
    layered = many_segments(ct3, 10, 1, seed=2)
    result = write_seg(layered, ct3, tmp_path / "seg.dcm")
    assert dciodvfy_errors(result.seg_path) == []
    ds = pydicom.dcmread(result.seg_path)
    del ds.SegmentSequence[0].SegmentLabel  # a required attribute gone
    ds.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert any("SegmentLabel" in e for e in dciodvfy_errors(tmp_path / "broken.dcm"))
    data = (tmp_path / "seg.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 200])
    assert any("does not end" in e for e in dciodvfy_errors(tmp_path / "cut.dcm"))


def test_parallel_deflate_is_one_valid_stream(tmp_path):
    rng = np.random.default_rng(1)
    data = np.repeat(rng.integers(0, 5, 3_000_000, dtype=np.uint8), 4)  # compressible, several blocks
    path = tmp_path / "stream.bin"
    with open(path, "wb") as handle:
        writer = ParallelDeflateWriter(handle, level=2, workers=3, block_bytes=1 << 20)
        writer.write(b"head")
        writer.write(data[:7])  # small writes join the block buffer
        writer.write(memoryview(data[7:]))
        writer.close()
    stream = path.read_bytes()
    assert len(stream) % 2 == 0 and len(stream) < data.nbytes / 4
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    assert inflater.decompress(stream) == b"head" + data.tobytes()
    assert inflater.eof and inflater.unused_data in (b"", b"\x00")


def test_census_counts_slices_rows_and_overlap():
    rng = np.random.default_rng(4)
    layer = rng.integers(0, 7, (5, 16, 24)).astype(np.uint8)
    layer[:, :, :12] = np.repeat(rng.integers(0, 7, (5, 16, 1)), 12, axis=2)  # long runs too
    layer[2, 3, 5] = 9  # a value beyond those counted still sets the largest value
    census = layer_census(layer, 7)
    assert census.max_value == 9
    assert np.array_equal(census.counts[1:], label_counts(layer)[1:7])
    for value in range(1, 7):
        assert np.array_equal(census.on_slice[:, value], (layer == value).any(axis=(1, 2)))
        assert np.array_equal(census.on_row[value], (layer == value).any(axis=(0, 2)))
    geometry = VolumeGeometry(layer.shape, np.eye(4))
    second = np.zeros_like(layer)
    segments = [Segment("a", 0, 1), Segment("b", 1, 2)]
    assert not LayeredSegmentation(geometry, [layer, second], segments).has_overlap()
    second[layer == 1] = 2
    assert LayeredSegmentation(geometry, [layer, second], segments).has_overlap()
    second[...] = 0
    second[layer == 3] = 5  # a value no segment uses does not count
    assert not LayeredSegmentation(geometry, [layer, second], segments).has_overlap()


def test_plain_explicit_file_is_unchanged_by_stream_writer(ct3, tmp_path):
    layered = many_segments(ct3, 12, 1, seed=9)
    result = write_seg(layered, ct3, tmp_path / "seg.dcm", SegExportOptions(compression=Compression.NONE))
    ds = pydicom.dcmread(result.seg_path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    frame_bytes = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
    assert len(ds.PixelData) == int(ds.NumberOfFrames) * frame_bytes + (int(ds.NumberOfFrames) * frame_bytes) % 2


ORGAN = CodedTerm("123037004", "SCT", "Anatomical Structure")
LIVER = CodedTerm("10200004", "SCT", "Liver")
KIDNEY = CodedTerm("64033007", "SCT", "Kidney")
LEFT = CodedTerm("7771000", "SCT", "Left")
ABDOMEN = CodedTerm("818981001", "SCT", "Abdomen")


@pytest.mark.parametrize("seg_type", [SegType.LABELMAP, SegType.BINARY])
def test_fast_writer_equals_highdicom_with_rich_metadata(ct3, tmp_path, seg_type):
    """Non-ASCII names, shared and per-segment codes, modifiers, regions and algorithms: the segment sequence
    encoded piecewise (shared codes encoded once) reads back identical to highdicom's."""
    layered = many_segments(ct3, 24, 1 if seg_type == SegType.LABELMAP else 2, seed=13)
    names = ["Leber (größte)", "肝臓", "rein gauche", "Niere links ½"]
    terms = [SegmentTerminology(ORGAN, LIVER), SegmentTerminology(ORGAN, KIDNEY, type_modifier=LEFT),
             SegmentTerminology(ORGAN, KIDNEY, anatomic_region=ABDOMEN, anatomic_region_modifier=LEFT), None]
    for index, segment in enumerate(layered.segments):
        segment.name = f"{names[index % 4]} {index}"
        segment.terminology = terms[index % 4]
        if index % 3 == 0:
            segment.algorithm_type, segment.algorithm_name = "AUTOMATIC", "TotalSegmentator"
    # text after the spliced segment sequence too (group 0070)
    options = SegExportOptions(seg_type=seg_type, content_description="Lebersegmente, größte zuerst",
                               content_creator_name="Müller^Jörg", series_description="Überblick 肝臓")
    fast = write_seg(layered, ct3, tmp_path / "fast.dcm", options)
    slow = write_seg(layered, ct3, tmp_path / "slow.dcm", options, writer=SegWriter.HIGHDICOM)
    assert_same_seg(fast.seg_path, slow.seg_path)
    assert_dciodvfy_clean([fast.seg_path])
    ds = pydicom.dcmread(fast.seg_path)
    items = [item for item in ds.SegmentSequence if item.SegmentNumber > 0]  # LABELMAP also describes background
    labels = [str(item.SegmentLabel) for item in items]
    assert labels[0].startswith("Leber (größte)") and labels[1].startswith("肝臓")
    kidney = items[1].SegmentedPropertyTypeCodeSequence[0]
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    assert "SegmentedPropertyTypeModifierCodeSequence" not in items[5].SegmentedPropertyTypeCodeSequence[0]
    assert items[2].AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeValue == "7771000"
    assert items[3].SegmentAlgorithmType == "AUTOMATIC" and items[4].SegmentAlgorithmType == "MANUAL"
    assert (ds.ContentDescription, str(ds.ContentCreatorName)) == ("Lebersegmente, größte zuerst", "Müller^Jörg")
    loaded = load_seg(fast.seg_path)
    assert [s.terminology for s in loaded.layered.segments][:3] == terms[:3]


@pytest.mark.parametrize("shape", [(4, 13, 21), (3, 7, 9)])
def test_binary_fast_writer_on_grids_whose_frames_start_mid_byte(tmp_path, shape):
    """Columns not a multiple of 8 (like TotalSegmentator's 1.5 mm grids): frames share bytes in native 1-bit data."""
    from DicomFidelityCommonLib.geometry import affine_from_dicom
    from SegmentationQALib.reference_series import write_reference_series

    geometry = VolumeGeometry(shape, affine_from_dicom([1, 2, 3], [1, 0, 0, 0, 1, 0], [0.8, 0.9], 2.0))
    series = write_reference_series(np.zeros(shape, np.int16), geometry, tmp_path / "ct")
    rng = np.random.default_rng(sum(shape))
    layers = [rng.integers(0, 4, shape).astype(np.uint8), (rng.random(shape) > 0.7).astype(np.uint8)]
    segments = [Segment(f"s{v}", 0, v) for v in (1, 2, 3)] + [Segment("margin", 1, 1)]
    layered = LayeredSegmentation(geometry, layers, segments)
    for compression in (Compression.DEFLATE, Compression.NONE):
        options = SegExportOptions(seg_type=SegType.BINARY, compression=compression)
        fast = write_seg(layered, series, tmp_path / f"fast-{compression.value}.dcm", options)
        slow = write_seg(layered, series, tmp_path / f"slow-{compression.value}.dcm", options,
                         writer=SegWriter.HIGHDICOM)
        assert (fast.writer, slow.writer) == ("streamed", "highdicom")
        assert_same_seg(fast.seg_path, slow.seg_path)
        assert_dciodvfy_clean([fast.seg_path])
        loaded = load_seg(fast.seg_path)
        for index in range(4):
            assert_same_voxels(geometry, layered.mask(index), loaded.layered.geometry, loaded.layered.mask(index))


@pytest.mark.parametrize("deflated", [True, False])
def test_stream_progress_is_reported_on_the_calling_thread(tmp_path, deflated, monkeypatch):
    """A GUI progress dialog may only be touched from its own thread: the tail is produced on another one."""
    import threading
    import time

    from pydicom.dataset import Dataset, FileMetaDataset

    from SegmentationQALib.seg import stream_write as seg_stream

    monkeypatch.setattr(seg_stream, "PROGRESS_SECONDS", 0.01)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.PatientName = "Test^Progress"
    chunk = bytes(range(256)) * 1024

    def slow_tail():  # one OB element (pixel data) arriving slowly
        yield b"\xe0\x7f\x10\x00OB\x00\x00" + (10 * len(chunk)).to_bytes(4, "little")
        for _ in range(10):
            time.sleep(0.02)
            yield chunk

    calls = []
    with open(tmp_path / "stream.dcm", "wb") as handle:
        seg_stream.write_with_tail(ds, slow_tail(), handle, deflated, tail_bytes=10 * len(chunk),
                                   progress=lambda f: calls.append((f, threading.get_ident())))
    assert len(calls) >= 3
    assert {thread for _, thread in calls} == {threading.get_ident()}
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1.0
    again = pydicom.dcmread(tmp_path / "stream.dcm")
    assert again.PatientName == "Test^Progress" and again.PixelData == 10 * chunk


def test_failing_tail_leaves_no_file_and_no_threads(ct3, tmp_path, monkeypatch):
    """An error while frames are produced (on the producer thread) reaches the caller; nothing is written."""
    import threading

    from SegmentationQALib.seg import streamed as seg_fast_write

    def broken(*args):
        yield memoryview(b"\x00" * 8)
        raise MemoryError("simulated")

    monkeypatch.setattr(seg_fast_write, "binary_chunks", broken)
    before = threading.active_count()
    layered = many_segments(ct3, 10, 2, seed=21)
    with pytest.raises(MemoryError, match="simulated"):
        write_seg(layered, ct3, tmp_path / "seg.dcm", SegExportOptions(seg_type=SegType.BINARY))
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() <= before


def test_paused_gc_nests_and_restores():
    import gc

    from DicomFidelityCommonLib.runtime import paused_gc, with_paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()

    @with_paused_gc
    def fails():
        assert not gc.isenabled()
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        fails()
    assert gc.isenabled()


def test_plain_elements_are_encoded_as_pydicom_encodes_them():
    from pydicom.dataelem import DataElement

    from SegmentationQALib.seg.streamed import _encode_element, _plain_element

    utf8, latin1 = ["utf_8"], ["latin_1"]
    cases = [DataElement(0x00620004, "US", 7), DataElement(0x00620004, "US", 65535),
             DataElement(0x0062000D, "US", [0, 32896, 32896]), DataElement(0x00620005, "LO", "liver"),
             DataElement(0x00620005, "LO", "Leber (größte) 1"), DataElement(0x00620005, "LO", "肝臓"),
             DataElement(0x00620005, "LO", "odd"), DataElement(0x00620008, "CS", "MANUAL"),
             DataElement(0x00620006, "SH", "x")]
    for element in cases:
        assert _plain_element(element, utf8) == _encode_element(element, utf8), element
    assert _plain_element(DataElement(0x00620005, "LO", "liver"), latin1) == \
        _encode_element(DataElement(0x00620005, "LO", "liver"), latin1)
    # left to pydicom: another character set with non-ASCII text, several values, empty, other VRs
    for element, encodings in [(DataElement(0x00620005, "LO", "größte"), latin1),
                               (DataElement(0x00620005, "LO", "a\\b"), utf8), (DataElement(0x00620005, "LO", ""), utf8),
                               (DataElement(0x00620004, "US", 70000), utf8),
                               (DataElement(0x00620010, "UI", "1.2.3"), utf8)]:
        assert _plain_element(element, encodings) is None, element
