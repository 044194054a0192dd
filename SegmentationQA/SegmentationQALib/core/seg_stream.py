"""Write a DICOM object whose last elements arrive as a stream of bytes (per-frame groups, pixel data).

pydicom encodes the header; the pre-encoded tail is appended without building it in memory. With Deflated
Explicit VR Little Endian (PS3.5 A.5: everything after the file meta is one raw deflate stream) the stream is
compressed in independent blocks on several cores, each ended by a sync flush so the blocks join into one valid
deflate stream (the scheme pigz uses). pydicom instead deflates the whole encoded dataset in one call on one core,
after building it in memory. The deflate (and inflate) backend is ISA-L when the ``isal`` package is importable,
else zlib: see DeflateBackend.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

try:  # ISA-L: a standard raw deflate stream about 10x faster than zlib's (measured in seg_options)
    from isal import isal_zlib
except ImportError:  # e.g. a Slicer whose Python lacks the package: plain zlib, same streams
    isal_zlib = None

# zlib level when the caller does not choose (seg_options.DEFAULT_DEFLATE_LEVEL_BY_TYPE has the measured ones).
DEFAULT_DEFLATE_LEVEL = 3
# zlib level -> the ISA-L level that stands in for it: zlib's greedy levels 1-3 only. On our frames ISA-L 1 and 2
# (equal on this CPU; 2 is ISA-L's default) write 0.95-1.11x zlib 3's size on LABELMAP and half of it on BINARY,
# 10-15x faster (seg_options has the numbers). ISA-L 3 is larger than 2 there and as slow as zlib, and nothing in
# ISA-L is as small as zlib's lazy-matching levels 4-9 (1.2-2.1x larger), so those stay with zlib.
ISAL_LEVEL_FOR_ZLIB_LEVEL = {1: 1, 2: 2, 3: 2}
# The last, empty block of a raw deflate stream (BFINAL, fixed Huffman, end of block): what zlib and ISA-L both
# give for flush(Z_FINISH) with no input.
FINAL_BLOCK = b"\x03\x00"
BLOCK_BYTES = 4 << 20
PROGRESS_SECONDS = 0.2
BytesLike = bytes | bytearray | memoryview


class DeflateBackend:
    """Raw deflate (wbits -15) compressors and decompressors: ISA-L's when ``isal`` (the isal_zlib module) is
    given, else zlib's.

    ``level`` is always a zlib level (1-9) whichever backend runs: ISA-L does the levels in
    ISAL_LEVEL_FOR_ZLIB_LEVEL, zlib the others. Both write standard streams (zlib, pydicom and DCMTK inflate ISA-L's)
    and read any stream; ISA-L inflates our SEGs 4.6-7.7x faster than zlib. ISA-L's flush takes zlib's Z_SYNC_FLUSH
    and Z_FINISH values and, like zlib, ends a sync flush with an empty stored block (00 00 ff ff), byte-aligned, so
    independently compressed blocks join. Both release the GIL while working. ISA-L raises ``isal_zlib.error``, not
    a zlib.error: readers catch ``errors``.
    """

    def __init__(self, isal=None):
        self.isal = isal
        self.name = "zlib" if isal is None else "isal"
        self.errors: tuple[type[Exception], ...] = (zlib.error,) if isal is None else (zlib.error, isal.error)

    def compressobj(self, level: int):
        if self.isal is not None and level in ISAL_LEVEL_FOR_ZLIB_LEVEL:
            return self.isal.compressobj(ISAL_LEVEL_FOR_ZLIB_LEVEL[level], self.isal.DEFLATED, -zlib.MAX_WBITS)
        return zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)

    def decompressobj(self):
        return (zlib if self.isal is None else self.isal).decompressobj(-zlib.MAX_WBITS)


BACKEND = DeflateBackend(isal_zlib)


def deflate_backend() -> DeflateBackend:
    """The one place the backend is chosen (tests replace BACKEND to run the zlib fallback)."""
    return BACKEND


def _deflate_block(block: BytesLike | list[BytesLike], level: int) -> bytes:
    """One independent block of the stream: ``block`` (a buffer, or buffers in order) deflated and sync-flushed."""
    compressor = deflate_backend().compressobj(level)
    pieces = block if isinstance(block, list) else [block]
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)


class ParallelDeflateWriter:
    """File-like sink that raw-deflates what is written, in blocks compressed on ``workers`` threads.

    zlib and ISA-L release the GIL while compressing, so threads scale. Output order is input order; at most
    ``2 * workers`` blocks are in flight, which bounds memory. Written buffers are compressed where they lie, never
    copied (a block is a list of them), so they must not change afterwards.
    """

    def __init__(self, handle: BinaryIO, level: int = DEFAULT_DEFLATE_LEVEL, workers: int | None = None,
                 block_bytes: int = BLOCK_BYTES):
        self._handle = handle
        self._level = level
        self._workers = max(1, workers or min(4, os.cpu_count() or 1))
        self._block_bytes = block_bytes
        self._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None
        self._pending: deque[Future | bytes] = deque()
        self._gathered: list[memoryview] = []  # the next block's buffers
        self._gathered_bytes = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def write(self, data: BytesLike) -> None:
        view = memoryview(data).cast("B")
        self.bytes_in += len(view)
        while len(view):  # blocks of block_bytes, made of (pieces of) the written buffers
            piece = view[: self._block_bytes - self._gathered_bytes]
            view = view[len(piece):]
            self._gathered.append(piece)
            self._gathered_bytes += len(piece)
            if self._gathered_bytes >= self._block_bytes:
                self._submit_gathered()

    def _submit_gathered(self) -> None:
        if self._gathered:
            self._submit(self._gathered)
            self._gathered, self._gathered_bytes = [], 0

    def close(self, pad: bool = True) -> None:
        """Compress what is left and end the stream; ``pad`` to an even length (PS3.5 A.5) when this writer
        holds the whole stream."""
        self._submit_gathered()
        while self._pending:
            self._emit(self._pending.popleft())
        self._emit(FINAL_BLOCK)
        if pad and self.bytes_out % 2:
            self._emit(b"\x00")
        if self._pool is not None:
            self._pool.shutdown()

    def abort(self) -> None:
        """Stop compressing (the write failed): drop pending blocks and release the threads."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _submit(self, block: BytesLike | list[BytesLike]) -> None:
        if self._pool is None:
            self._emit(_deflate_block(block, self._level))
            return
        self._pending.append(self._pool.submit(_deflate_block, block, self._level))
        while len(self._pending) > 2 * self._workers:
            self._emit(self._pending.popleft())

    def _emit(self, item: Future | bytes) -> None:
        data = item.result() if isinstance(item, Future) else item
        self._handle.write(data)
        self.bytes_out += len(data)


def encode_header(dataset: Dataset, spliced: dict[int, bytes] | None = None) -> tuple[bytes, bytes]:
    """(preamble + file meta, dataset body) as explicit VR little endian bytes; ``spliced`` elements (tag: the
    element already encoded) are put in their place among the dataset's own."""
    meta = DicomBytesIO()
    meta.is_implicit_VR, meta.is_little_endian = False, True
    meta.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(meta, dataset.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_implicit_VR, body.is_little_endian = False, True
    if not spliced:
        write_dataset(body, dataset)
        return meta.getvalue(), body.getvalue()
    charset = dataset.get("SpecificCharacterSet") or "ISO_IR 6"
    pending = sorted(spliced)
    group = Dataset()
    for element in dataset:
        while pending and element.tag > pending[0]:
            write_dataset(body, group, parent_encoding=charset)
            body.write(spliced[pending.pop(0)])
            group = Dataset()
        group.add(element)
    write_dataset(body, group, parent_encoding=charset)
    for tag in pending:
        body.write(spliced[tag])
    return meta.getvalue(), body.getvalue()


class _Blocks(list):
    """An in-memory sink: compressed blocks kept in order until they can be written."""

    def write(self, data: bytes) -> None:
        self.append(data)


def write_with_tail(dataset: Dataset, tail: Iterable[BytesLike], handle: BinaryIO, deflated: bool,
                    level: int = DEFAULT_DEFLATE_LEVEL, workers: int | None = None,
                    spliced: dict[int, bytes] | None = None, tail_bytes: int = 0,
                    progress: Callable[[float], None] | None = None) -> None:
    """Write ``dataset`` (with the pre-encoded ``spliced`` elements in place) then the pre-encoded ``tail``
    elements (which must sort after every element of ``dataset``), as Deflated or plain Explicit VR Little Endian.

    Deflated, the tail (frames) is produced and compressed on other threads while pydicom encodes the header on
    this one: with many segments the header (one item per segment) takes as long as the frames. The compressed
    tail is held until the header is written; it is a fraction of the label volume. ``progress`` gets the
    fraction of the ``tail_bytes`` written so far, always on the calling thread (a GUI's progress dialog).
    """
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflated else ExplicitVRLittleEndian
    if not deflated:
        meta, body = encode_header(dataset, spliced)
        handle.write(meta)
        handle.write(body)
        written, reported = 0, time.perf_counter()
        for part in tail:
            handle.write(part)
            written += len(part)
            if progress is not None and tail_bytes and time.perf_counter() - reported > PROGRESS_SECONDS:
                progress(min(1.0, written / tail_bytes))
                reported = time.perf_counter()
        return
    blocks = _Blocks()
    tail_writer = ParallelDeflateWriter(blocks, level, workers)

    def produce() -> None:
        try:
            for part in tail:
                tail_writer.write(part)
            tail_writer.close(pad=False)
        except BaseException:
            tail_writer.abort()
            raise

    with ThreadPoolExecutor(1) as producer:
        produced = producer.submit(produce)
        meta, body = encode_header(dataset, spliced)
        handle.write(meta)
        head = _deflate_block(body, level)
        handle.write(head)
        while True:
            try:
                produced.result(timeout=PROGRESS_SECONDS)  # re-raises anything the tail raised
                break
            except FutureTimeout:
                if progress is not None and tail_bytes:
                    progress(min(1.0, tail_writer.bytes_in / tail_bytes))
    for block in blocks:
        handle.write(block)
    if (len(head) + tail_writer.bytes_out) % 2:
        handle.write(b"\x00")
