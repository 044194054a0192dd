"""RLE Lossless LABELMAP SEGs from the streamed writer (frames encoded by GDCM through pydicom, or pylibjpeg-rle;
encapsulated by pydicom) against highdicom building the same RLE SEG frame by frame: same attributes, segment
metadata, per-frame groups and pixels; decoded by pydicom, highdicom and our reader to the input labels; valid in
dciodvfy. On the real TotalSegmentator labels and on the benchmark's cases (8-bit and 16-bit frames), with each
encoder."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders import RLELosslessDecoder
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from Benchmarks import seg_speed
from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.errors import DicomFidelityError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.reference_series import write_reference_series
from SegmentationQALib.seg import streamed
from SegmentationQALib.seg.options import Compatibility, Compression, SegExportOptions, SegReader, SegType, SegWriter
from SegmentationQALib.seg.read import load_seg
from SegmentationQALib.seg.write import choose_writer, write_seg
from SegmentationQALib.segmentation import LayeredSegmentation, Segment
from segtools import assert_same_seg, assert_same_voxels
from validators import assert_dciodvfy_clean

TOTALSEG = "totalsegmentator/reference_files"
RLE = SegExportOptions(seg_type=SegType.LABELMAP, compression=Compression.RLE)


@pytest.fixture(params=["gdcm", "pylibjpeg-rle"])
def encoder(request, monkeypatch):
    """Each RLE encoder the streamed writer can use (GDCM where python-gdcm is installed)."""
    if request.param == "gdcm":
        import gdcm  # noqa: F401  a dependency (pyproject): never skipped
    chosen = streamed.GDCM_RLE if request.param == "gdcm" else streamed.PYLIBJPEG_RLE
    monkeypatch.setattr(streamed, "RLE_ENCODER", chosen)
    return chosen


@pytest.fixture(scope="module")
def totalseg(shared_data, tmp_path_factory):
    """The 61 TotalSegmentator organs on their own CT grid (as seg_compression_speed.py), the CT as DICOM."""
    ct = sitk.ReadImage(str(shared_data / TOTALSEG / "example_ct.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz")))
    geometry = VolumeGeometry.from_sitk(ct)
    series = write_reference_series(sitk.GetArrayFromImage(ct), geometry, tmp_path_factory.mktemp("ts") / "ct")
    labels = labels.astype(np.uint8)
    values = [int(v) for v in np.unique(labels) if v]
    return series, LayeredSegmentation(geometry, [labels], [Segment(f"organ {v}", 0, v) for v in values])


@pytest.fixture(scope="module")
def bench_cases(shared_data, tmp_path_factory):
    ct_dir, built = seg_speed.build_cases(shared_data, tmp_path_factory.mktemp("bench"), 40, 128, [117, 1000],
                                          ["labelmap"])
    return dicom_series.read_image_series(ct_dir), {case["name"]: case for case in built}


def decoded_equals_input(layered: LayeredSegmentation, path, what: str, sample: int | None = None) -> None:
    """Our reader and highdicom's both give back every segment's voxels (or every ``sample``-th), in patient space."""
    ours = load_seg(path)
    reference = load_seg(path, reader=SegReader.HIGHDICOM)
    for loaded, reader in ((ours, "ours"), (reference, "highdicom")):
        assert [s.name for s in loaded.layered.segments] == [s.name for s in layered.segments], reader
        for index in range(0, len(layered.segments), sample or 1):
            assert_same_voxels(layered.geometry, layered.mask(index), loaded.layered.geometry,
                               loaded.layered.mask(index), f"{what} {reader} segment {index + 1}")


def assert_streamed_rle_equals_highdicom(layered, series, tmp_path, options=RLE):
    fast = write_seg(layered, series, tmp_path / "fast.dcm", options)
    slow = write_seg(layered, series, tmp_path / "slow.dcm", options, writer=SegWriter.HIGHDICOM)
    assert (fast.writer, slow.writer) == ("streamed", "highdicom")
    assert fast.compression == "rle" and fast.transfer_syntax_uid == RLELossless
    assert_same_seg(fast.seg_path, slow.seg_path)  # transfer syntax, every attribute and frame, pydicom's pixels
    ours, theirs = pydicom.dcmread(fast.seg_path), pydicom.dcmread(slow.seg_path)
    frames = list(generate_frames(ours.PixelData, number_of_frames=int(ours.NumberOfFrames)))
    assert len(frames) == int(ours.NumberOfFrames) == len(list(generate_frames(theirs.PixelData,
                                                                               number_of_frames=len(frames))))
    assert "ExtendedOffsetTable" not in ours
    assert_dciodvfy_clean([fast.seg_path])
    return fast, slow


def test_totalsegmentator_rle_equals_highdicom_and_input(totalseg, tmp_path, encoder):
    series, layered = totalseg
    fast, slow = assert_streamed_rle_equals_highdicom(layered, series, tmp_path)
    assert len(fast.segments) == len(layered.segments) == 61
    assert abs(fast.file_size_bytes - slow.file_size_bytes) < 2000  # frames as small (runs may be split apart)
    decoded_equals_input(layered, fast.seg_path, "totalsegmentator")
    seg = hd.seg.segread(fast.seg_path)  # highdicom's volume (its own frame order) holds the input labels
    volume = seg.get_volume(combine_segments=True, relabel=False)
    geometry = VolumeGeometry(volume.spatial_shape, np.asarray(volume.affine)[:, [2, 1, 0, 3]])
    for number in (1, 30, 61):
        value = layered.segments[number - 1].label_value
        assert_same_voxels(layered.geometry, layered.layers[0] == value, geometry, volume.array == number,
                           f"highdicom volume segment {number}")


@pytest.mark.parametrize("name", ["labelmap_117", "labelmap_1000"])
def test_benchmark_cases_rle_equals_highdicom(bench_cases, tmp_path, name, encoder):
    """117 segments: 8-bit frames stored as they lie; 1000 segments: 16-bit frames (two RLE segments each)."""
    series, built = bench_cases
    layered = seg_speed.load_case(built[name]["folder"])
    fast, _ = assert_streamed_rle_equals_highdicom(layered, series, tmp_path)
    assert pydicom.dcmread(fast.seg_path, stop_before_pixels=True).BitsAllocated == (16 if name.endswith("1000")
                                                                                      else 8)
    decoded_equals_input(layered, fast.seg_path, name, sample=None if name.endswith("117") else 37)


def test_repeated_slices_and_looked_up_values(totalseg, tmp_path, encoder):
    """Labels nearest-resampled from thicker slices (consecutive equal frames, encoded once and repeated) and stored
    values that are not the segment numbers (frames built through a lookup table, several per slab); a frame that
    differs from the one before by one voxel is encoded anew."""
    series, layered = totalseg
    labels = layered.layers[0].copy()
    thick = labels[(np.arange(len(labels)) // 3) * 3]  # every third slice repeated three times
    thick[31, 50, 60] = 200  # one stray voxel: a value no segment has, written as background
    thick[34, 50, 60] = 7 if thick[33, 50, 60] != 7 else 8
    values = [int(v) for v in np.unique(thick) if v and v != 200]
    gapped = LayeredSegmentation(layered.geometry, [thick], [Segment(f"organ {v}", 0, v) for v in values])
    fast, _ = assert_streamed_rle_equals_highdicom(gapped, series, tmp_path)
    ds = pydicom.dcmread(fast.seg_path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    assert len(set(frames)) < len(frames) / 2  # repeated frames share their encoding
    decoded_equals_input(gapped, fast.seg_path, "thick slices", sample=5)


def test_extended_offset_table(totalseg, tmp_path, monkeypatch):
    """Past 4 GB of frames the Basic Offset Table cannot point at the last ones: an empty one and the Extended
    Offset Table. Forced here by lowering the limit; pydicom, highdicom and our reader decode it the same."""
    series, layered = totalseg
    monkeypatch.setattr(streamed, "BASIC_OFFSET_TABLE_LIMIT", 1000)
    small = write_seg(layered, series, tmp_path / "basic.dcm", RLE, writer=SegWriter.HIGHDICOM)
    extended = write_seg(layered, series, tmp_path / "extended.dcm", RLE)
    assert extended.writer == "streamed"
    ds = pydicom.dcmread(extended.seg_path)
    frames = int(ds.NumberOfFrames)
    offsets = np.frombuffer(ds.ExtendedOffsetTable, "<u8")
    lengths = np.frombuffer(ds.ExtendedOffsetTableLengths, "<u8")
    assert len(offsets) == len(lengths) == frames and offsets[0] == 0 and offsets[-1] > 1000
    assert np.array_equal(offsets[1:], np.cumsum(lengths[:-1] + 8))
    raw = ds.PixelData
    assert raw[:8] == b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # the Basic Offset Table is empty
    del ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths  # all else as highdicom's, with its Basic table
    ds.save_as(tmp_path / "stripped.dcm", enforce_file_format=True)
    assert_same_seg(tmp_path / "stripped.dcm", small.seg_path)
    assert_dciodvfy_clean([extended.seg_path])
    decoded_equals_input(layered, extended.seg_path, "extended offset table", sample=6)


def test_viewer_compatibility_and_routing(totalseg, tmp_path):
    """--compatibility viewer: LABELMAP + RLE from the streamed writer; overlapping segments stay BINARY
    uncompressed. BINARY + RLE is refused, as before (highdicom, the oracle, writes no 1-bit RLE)."""
    series, layered = totalseg
    viewer = write_seg(layered, series, tmp_path / "viewer.dcm", SegExportOptions(compatibility=Compatibility.VIEWER))
    assert (viewer.seg_type, viewer.compression, viewer.writer) == ("labelmap", "rle", "streamed")
    assert pydicom.dcmread(viewer.seg_path, stop_before_pixels=True).file_meta.TransferSyntaxUID == RLELossless
    margin = (layered.layers[0] == layered.segments[0].label_value).astype(np.uint8)
    overlapping = LayeredSegmentation(layered.geometry, [layered.layers[0], margin],
                                      [*layered.segments[:3], Segment("margin", 1, 1)])
    binary = write_seg(overlapping, series, tmp_path / "binary.dcm",
                       SegExportOptions(compatibility=Compatibility.VIEWER))
    assert (binary.seg_type, binary.compression, binary.writer) == ("binary", "none", "streamed")
    assert pydicom.dcmread(binary.seg_path, stop_before_pixels=True).file_meta.TransferSyntaxUID == \
        ExplicitVRLittleEndian
    with pytest.raises(DicomFidelityError, match="not available for BINARY"):
        write_seg(layered, series, tmp_path / "refused.dcm",
                  SegExportOptions(seg_type=SegType.BINARY, compression=Compression.RLE))
    assert not (tmp_path / "refused.dcm").exists()
    assert choose_writer(layered, SegType.LABELMAP, RLELossless) == SegWriter.STREAMED
    assert choose_writer(layered, SegType.BINARY, RLELossless) == SegWriter.HIGHDICOM
    for other in (Compression.JPEG_LS, Compression.JPEG2000):  # still highdicom's
        assert choose_writer(layered, SegType.LABELMAP, other.transfer_syntax_uid) == SegWriter.HIGHDICOM


def test_encoders_decode_to_the_same_frames(totalseg, monkeypatch):
    """GDCM and pylibjpeg-rle may choose different PackBits runs; pydicom's own (pure Python) RLE decoder gives
    back every real frame, 8-bit and 16-bit, from both. GDCM is the one chosen wherever it is installed."""
    import gdcm  # noqa: F401  a dependency (pyproject): never skipped
    monkeypatch.setattr(streamed, "RLE_ENCODER", None)
    assert streamed.rle_encoder() is streamed.GDCM_RLE
    _, layered = totalseg
    labels = layered.layers[0]
    rows, columns = labels.shape[1:]
    differ = 0
    for volume in (labels, labels.astype(np.uint16) * 257 + 3):
        bits = volume.dtype.itemsize * 8
        for k in range(0, len(volume), 7):
            frame = volume[k]
            encoded = [encoder.encode(frame.tobytes(), rows, columns, bits)
                       for encoder in (streamed.GDCM_RLE, streamed.PYLIBJPEG_RLE)]
            differ += encoded[0] != encoded[1]
            for data in encoded:
                decoded = RLELosslessDecoder.as_array(
                    encapsulate([data]), decoding_plugin="pydicom", rows=rows, columns=columns, samples_per_pixel=1,
                    bits_allocated=bits, bits_stored=bits, pixel_representation=0,
                    photometric_interpretation="MONOCHROME2", number_of_frames=1)[0]
                assert np.array_equal(decoded, frame), (k, bits)
    assert differ > 0  # two independent encoders, not one library twice
