"""Read a native SEG's header with pydicom and its pixel data as a stream, never the whole file at once.

``pydicom.dcmread`` inflates a Deflated Explicit VR Little Endian file into one bytes object and then copies the
pixel data out of it; for plain files it reads the whole PixelData value. Here the preamble and file meta are read
with pydicom, the dataset is parsed up to the top-level PixelData (7FE0,0010) from either the plain file or an
inflating reader, and the pixel bytes are then handed out in the pieces the caller asks for (one segment's frames,
a batch of LABELMAP frames). Encapsulated (compressed) transfer syntaxes return None: the caller reads them whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from DicomFidelityCommonLib.dicom.deflate import InflatingReader
from DicomFidelityCommonLib.dicom.pydicom_internals import (
    character_set,
    read_dataset,
    read_file_meta_info,
    read_preamble,
)
from DicomFidelityCommonLib.errors import InvalidInputFileError

PIXEL_DATA_TAG = 0x7FE00010
# transfer syntax -> is implicit VR (all little endian, native pixel data)
STREAMABLE = {ExplicitVRLittleEndian: False, DeflatedExplicitVRLittleEndian: False, ImplicitVRLittleEndian: True}
READ_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError)


def _at_top_level_pixel_data(tag, vr, length) -> bool:
    return tag == PIXEL_DATA_TAG


class SegStream:
    """A native SEG opened for streaming: ``ds`` is the header (no PixelData), the pixel value is read in pieces."""

    def __init__(self, path: Path, raw, reader, ds: FileDataset, pixel_vr: str | None, pixel_length: int | None):
        self.path = path
        self._raw = raw
        self._reader = reader
        self.ds = ds
        self.pixel_vr = pixel_vr
        self.pixel_length = pixel_length  # None: the file has no top-level PixelData
        self.consumed = 0  # pixel bytes handed out so far
        self.pixel_element_start = reader.tell() - (8 if pixel_vr is None else 12) if pixel_length is not None else None
        self._complete = False

    @property
    def deflated(self) -> bool:
        return isinstance(self._reader, InflatingReader)

    def _short(self, got: int):
        return InvalidInputFileError(f"pixel data truncated: the file ends after {self.consumed + got} of the "
                                     f"{self.pixel_length} pixel data bytes it declares", self.path, "PixelData")

    def available_pixel_bytes(self) -> int:
        """Pixel bytes the file declares; for a plain file, no more than it still holds (a deflated file's
        inflated length is only known once read)."""
        if self.pixel_length is None:
            return 0
        if self.deflated:
            return self.pixel_length
        return min(self.pixel_length, os.fstat(self._raw.fileno()).st_size - self._raw.tell())

    def read(self, size: int) -> bytes:
        """Exactly the next ``size`` pixel bytes, or InvalidInputFileError if the file ends before them."""
        data = self._reader.read(size) if size else b""
        if len(data) < size:
            raise self._short(len(data))
        self.consumed += size
        return data

    def read_array(self, size: int) -> np.ndarray:
        """The next ``size`` pixel bytes in a new uint8 array (read into it directly: one copy in memory)."""
        out = np.empty(size, dtype=np.uint8)
        filled = self._reader.readinto(out) if size else 0
        if filled < size:
            raise self._short(filled)
        self.consumed += size
        return out

    def dataset(self) -> FileDataset:
        """The complete dataset, as dcmread gives it: PixelData and anything after it read from where it starts."""
        if self._complete:
            return self.ds
        if self.consumed:
            raise RuntimeError("pixel data already partly consumed; reopen the file for the whole dataset")
        if self.pixel_length is not None:
            implicit, little, encoding = self.ds.original_encoding + (character_set(self.ds),)
            try:
                self._reader.seek(self.pixel_element_start)
                rest = read_dataset(self._reader, implicit, little, parent_encoding=encoding)
            except READ_ERRORS as exc:
                raise InvalidInputFileError(f"not a readable DICOM file ({exc})", self.path) from exc
            self.ds.update(rest)
        self._complete = True
        return self.ds

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> SegStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_seg_stream(path: str | Path) -> SegStream | None:
    """The file's header parsed up to the top-level PixelData, positioned at its value; None if not native.

    Raises InvalidInputFileError for unreadable files (not DICOM, corrupt or truncated deflate stream).
    """
    path = Path(path)
    raw = open(path, "rb")  # noqa: SIM115 - owned by the returned SegStream
    try:
        try:
            preamble = read_preamble(raw, False)
            file_meta = read_file_meta_info(raw)
        except READ_ERRORS as exc:
            raise InvalidInputFileError(f"not a readable DICOM file ({exc})", path) from exc
        syntax = file_meta.get("TransferSyntaxUID")
        if syntax not in STREAMABLE:
            raw.close()
            return None
        implicit = STREAMABLE[syntax]
        reader = InflatingReader(raw, path) if syntax == DeflatedExplicitVRLittleEndian else raw
        try:
            dataset = read_dataset(reader, implicit, True, stop_when=_at_top_level_pixel_data)
            pixel_vr, pixel_length = _read_pixel_data_header(reader, implicit)
        except READ_ERRORS as exc:
            raise InvalidInputFileError(f"not a readable DICOM file ({exc})", path) from exc
        except MemoryError:  # a header element (pixel data excluded) never needs this much: a corrupt length
            raise InvalidInputFileError("not a readable DICOM file (a header element claims more bytes than memory "
                                        "holds: corrupt length)", path) from None
        ds = FileDataset(str(path), dataset, preamble, file_meta, implicit, True)
        ds.set_original_encoding(implicit, True, character_set(dataset))
        stream = SegStream(path, raw, reader, ds, pixel_vr, pixel_length)
        if isinstance(reader, InflatingReader):
            reader.forget_history()
        if pixel_length is None:
            stream._complete = True
        return stream
    except BaseException:
        raw.close()
        raise


def _read_pixel_data_header(reader, implicit: bool) -> tuple[str | None, int | None]:
    """(VR, length) of the PixelData element the reader is positioned at, leaving it at the value; (None, None)
    at the end of the dataset. Undefined length (encapsulated in a native syntax) is an error."""
    start = reader.tell()
    head = reader.read(8)
    if len(head) < 8 or int.from_bytes(head[:2], "little") != 0x7FE0 or int.from_bytes(head[2:4], "little") != 0x0010:
        reader.seek(start)
        return None, None
    if implicit:
        vr, length = None, int.from_bytes(head[4:8], "little")
    else:
        vr = head[4:6].decode("ascii", "replace")
        extra = reader.read(4)
        if len(extra) < 4:
            raise EOFError("file ends inside the PixelData element header")
        length = int.from_bytes(extra, "little")
    if length == 0xFFFFFFFF:
        raise ValueError("PixelData has undefined length in a native transfer syntax")
    return vr, length


def frames_dtype(ds: Dataset) -> np.dtype | None:
    """numpy dtype of native 8/16-bit single-sample unsigned frames whose stored bits fill the allocated bits."""
    bits = int(ds.get("BitsAllocated", 0))
    if bits not in (8, 16) or int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("PixelRepresentation", 0)) != 0:
        return None
    if int(ds.get("BitsStored", bits)) != bits:
        return None
    return np.dtype(np.uint8 if bits == 8 else "<u2")
