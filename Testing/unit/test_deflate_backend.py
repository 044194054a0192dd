"""The deflate backend (seg_stream.DeflateBackend): ISA-L when ``isal`` imports, zlib otherwise. Both must write one
standard raw deflate stream that plain zlib inflates to exactly the input, and read any stream; both are run here,
the zlib fallback by replacing seg_stream.BACKEND."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from DicomFidelityCommonLib.dicom import deflate as deflate_module
from DicomFidelityCommonLib.dicom import deflate as seg_stream
from DicomFidelityCommonLib.dicom.deflate import (
    FINAL_BLOCK,
    ISAL_LEVEL_FOR_ZLIB_LEVEL,
    DeflateBackend,
    InflatingReader,
    ParallelDeflateWriter,
)
from DicomFidelityCommonLib.errors import InvalidInputFileError
from SegmentationQALib.seg import stream_read as seg_stream_read
from SegmentationQALib.seg.options import DEFAULT_DEFLATE_LEVEL_BY_TYPE, SegType
from SegmentationQALib.seg.stream_write import write_with_tail


def _isal_zlib():
    return pytest.importorskip("isal.isal_zlib")


@pytest.fixture(params=["isal", "zlib"])
def backend(request, monkeypatch) -> DeflateBackend:
    """Each test runs once with ISA-L and once with the zlib fallback, set in the one place the backend lives."""
    chosen = DeflateBackend(_isal_zlib() if request.param == "isal" else None)
    monkeypatch.setattr(seg_stream, "BACKEND", chosen)
    assert seg_stream.deflate_backend() is chosen
    return chosen


def _labels(size: int, seed: int) -> bytes:
    """Label-like bytes (long runs of a few values) with a random stretch, so blocks compress unevenly."""
    rng = np.random.default_rng(seed)
    runs = np.repeat(rng.integers(0, 6, size // 64 + 1, dtype=np.uint8), 64)[:size]
    runs[size // 3: size // 3 + 50_000] = rng.integers(0, 256, 50_000, dtype=np.uint8)
    return runs.tobytes()


def _parallel_stream(data: bytes, level: int, workers: int, block_bytes: int) -> bytes:
    blocks = seg_stream.BlockList()
    writer = ParallelDeflateWriter(blocks, level=level, workers=workers, block_bytes=block_bytes)
    writer.write(b"head")
    writer.write(data[:5])  # small writes are gathered into one block
    writer.write(memoryview(data)[5:])  # large ones are cut into blocks where they lie
    writer.close(pad=False)
    return b"".join(blocks)


def test_isal_is_the_default_when_installed():
    isal_zlib = _isal_zlib()
    assert seg_stream.BACKEND.name == "isal" and seg_stream.BACKEND.isal is isal_zlib
    assert DEFAULT_DEFLATE_LEVEL_BY_TYPE[SegType.BINARY] in ISAL_LEVEL_FOR_ZLIB_LEVEL
    assert DEFAULT_DEFLATE_LEVEL_BY_TYPE[SegType.LABELMAP] in ISAL_LEVEL_FOR_ZLIB_LEVEL


def test_levels_are_zlib_levels_and_only_the_greedy_ones_go_to_isal():
    isal_zlib = _isal_zlib()
    with_isal, plain = DeflateBackend(isal_zlib), DeflateBackend(None)
    assert type(with_isal.compressobj(3)) is isal_zlib.Compress
    for level in (4, 6, 9):  # nothing in ISA-L is as small as zlib's lazy-matching levels
        assert type(with_isal.compressobj(level)) is type(zlib.compressobj())
    assert all(type(plain.compressobj(level)) is type(zlib.compressobj()) for level in range(1, 10))
    assert set(ISAL_LEVEL_FOR_ZLIB_LEVEL) == {1, 2, 3} and set(ISAL_LEVEL_FOR_ZLIB_LEVEL.values()) <= {0, 1, 2, 3}


def test_isal_flush_modes_match_zlib():
    """The parallel writer relies on Z_SYNC_FLUSH ending a block byte-aligned with an empty stored block, and on
    Z_FINISH of nothing being the constant final block it writes itself."""
    isal_zlib = _isal_zlib()
    assert (isal_zlib.Z_SYNC_FLUSH, isal_zlib.Z_FINISH) == (zlib.Z_SYNC_FLUSH, zlib.Z_FINISH)
    for module, level in ((isal_zlib, 1), (isal_zlib, 2), (zlib, 3), (zlib, 6)):
        packer = module.compressobj(level, module.DEFLATED, -15)
        block = packer.compress(b"segment " * 1000) + packer.flush(module.Z_SYNC_FLUSH)
        assert block.endswith(b"\x00\x00\xff\xff")
        assert zlib.decompress(block + FINAL_BLOCK, -15) == b"segment " * 1000
        assert module.compressobj(level, module.DEFLATED, -15).flush(module.Z_FINISH) == FINAL_BLOCK


@pytest.mark.parametrize("level", [1, 3, 6])
@pytest.mark.parametrize("workers", [1, 3])
def test_parallel_stream_inflates_to_the_input(backend, level, workers):
    data = _labels(1_500_000, seed=level)
    stream = _parallel_stream(data, level, workers, block_bytes=1 << 18)  # six blocks and more
    assert len(stream) < len(data) / 4
    assert zlib.decompress(stream, -15) == b"head" + data
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(stream) == b"head" + data and inflater.eof and inflater.unused_data == b""


def test_empty_and_tiny_streams(backend):
    assert zlib.decompress(_parallel_stream(b"", 3, 2, 1 << 16), -15) == b"head"
    assert zlib.decompress(_parallel_stream(b"x" * 3, 6, 1, 1 << 16), -15) == b"headxxx"


def _tiny_dataset() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.PatientName = "Test^Backend"
    return ds


@pytest.mark.parametrize("level", [3, 6])
def test_write_with_tail_reads_back_with_pydicom_and_our_reader(backend, tmp_path, level, monkeypatch):
    pixels = _labels(3_000_000, seed=7)
    element = b"\xe0\x7f\x10\x00OB\x00\x00" + len(pixels).to_bytes(4, "little")
    path = tmp_path / "tail.dcm"
    with open(path, "wb") as handle:
        write_with_tail(_tiny_dataset(), [element, pixels[:1000], pixels[1000:]], handle, True,
                                   level=level, workers=2)
    assert path.stat().st_size % 2 == 0
    again = pydicom.dcmread(path)  # pydicom inflates with zlib
    assert again.PatientName == "Test^Backend" and again.PixelData == pixels
    monkeypatch.setattr(deflate_module, "COMPRESSED_CHUNK", 4096)  # many small feeds of the inflater
    with seg_stream_read.open_seg_stream(path) as stream:
        assert stream.deflated and stream.pixel_length == len(pixels)
        assert b"".join(stream.read(n) for n in (1, 999, 100_000, len(pixels) - 101_000)) == pixels


@pytest.mark.parametrize("writer", ["isal", "zlib"])
def test_reader_inflates_either_backends_stream(backend, writer, tmp_path):
    """ISA-L reads what zlib wrote and the other way round; corrupt and truncated streams raise our error."""
    data = _labels(2_000_000, seed=11)
    packer = DeflateBackend(_isal_zlib() if writer == "isal" else None).compressobj(3)
    first = packer.compress(data[:1_000_000]) + packer.flush(zlib.Z_SYNC_FLUSH)
    stream = first + packer.compress(data[1_000_000:]) + packer.flush(zlib.Z_FINISH)
    path = tmp_path / "raw.deflate"
    path.write_bytes(stream)
    with open(path, "rb") as raw:
        reader = InflatingReader(raw, path)
        assert reader.read(10) == data[:10]
        reader.keep_history = False
        target = bytearray(len(data) - 10)
        assert reader.readinto(target) == len(target) and bytes(target) == data[10:]
        assert reader.read(5) == b""
    corrupt = bytearray(stream)
    corrupt[len(first)] |= 0x06  # the second block's header: block type 3, which does not exist
    path.write_bytes(bytes(corrupt))
    with open(path, "rb") as raw, pytest.raises(InvalidInputFileError, match="raw.deflate.*corrupt deflate"):
        InflatingReader(raw, path).read(len(data))
    path.write_bytes(stream[: len(stream) // 2])
    with open(path, "rb") as raw, pytest.raises(InvalidInputFileError, match="raw.deflate.*truncated"):
        InflatingReader(raw, path).read(len(data))


def test_without_isal_the_fallback_is_zlib_with_its_own_defaults():
    """A Python where ``isal`` cannot be imported (a Slicer without it): zlib, and BINARY keeps zlib level 6."""
    import os
    import subprocess
    import sys

    script = ("import sys; sys.modules['isal'] = None\n"  # makes `from isal import ...` raise ImportError
              "from DicomFidelityCommonLib.dicom import deflate as seg_stream\n"
              "from SegmentationQALib.seg.options import DEFAULT_DEFLATE_LEVEL_BY_TYPE as d, SegType\n"
              "print(seg_stream.isal_zlib, seg_stream.BACKEND.name, d[SegType.LABELMAP], d[SegType.BINARY])\n")
    repository = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(str(repository / folder) for folder in ("DicomFidelityCommon", "SegmentationQA"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.stdout.split() == ["None", "zlib", "3", "6"]


def test_default_level_keeps_small_binary_segs_small():
    """Small BINARY SEGs keep zlib 6 (ISA-L made the real 122x101x112 TotalSegmentator SEG 1.63x the seg.nrrd);
    large ones and LABELMAP take the backend's default."""
    from SegmentationQALib.seg.options import (
        SMALL_BINARY_FRAME_BYTES,
        ZLIB_DEFLATE_LEVEL_BY_TYPE,
        default_deflate_level,
    )

    assert default_deflate_level(SegType.BINARY, 6 << 20) == ZLIB_DEFLATE_LEVEL_BY_TYPE[SegType.BINARY] == 6
    assert (default_deflate_level(SegType.BINARY, SMALL_BINARY_FRAME_BYTES)
            == DEFAULT_DEFLATE_LEVEL_BY_TYPE[SegType.BINARY])
    assert default_deflate_level(SegType.LABELMAP, 1 << 20) == DEFAULT_DEFLATE_LEVEL_BY_TYPE[SegType.LABELMAP]


def test_gzip_file_is_a_standard_gzip_member(backend, tmp_path, shared_data):
    """What write_volume uses for .nii.gz: Python's gzip reads it back byte for byte, on either backend, and
    SimpleITK reads the NIfTI inside as the one it wrote."""
    import gzip

    import SimpleITK as sitk

    source = tmp_path / "labels.nii"
    image = sitk.ReadImage(str(shared_data / "totalsegmentator/reference_files/example_seg_fast_force_split.nii.gz"))
    sitk.WriteImage(image, str(source))
    target = tmp_path / "labels.nii.gz"
    deflate_module.gzip_file(source, target, chunk=1 << 16)  # several pieces
    assert gzip.decompress(target.read_bytes()) == source.read_bytes()
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(target))), sitk.GetArrayFromImage(image))
    assert target.stat().st_size < source.stat().st_size / 10
