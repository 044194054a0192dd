"""Raw deflate for Deflated Explicit VR Little Endian (PS3.5 A.5), for readers and writers alike.

One backend is chosen here: ISA-L (package ``isal``) when it can be imported, else zlib; both write standard streams
that any inflater reads. ``ParallelDeflateWriter`` compresses independent blocks on several threads and joins them
with sync flushes into one valid stream (the scheme pigz uses); ``InflatingReader`` is a file-like view of a deflate
stream that pydicom can parse from, holding only a window of the inflated bytes.
"""

from __future__ import annotations

import io
import os
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from DicomFidelityCommonLib.errors import InvalidInputFileError

try:  # ISA-L: a standard raw deflate stream about 10x faster than zlib's (Docs/benchmarks.md)
    from isal import isal_zlib
except ImportError:  # e.g. a Slicer whose Python lacks the package: plain zlib, same streams
    isal_zlib = None

# zlib level when the caller does not choose (seg.options has the defaults, Docs/benchmarks.md the measurements).
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

    def compressobj(self, level: int, wbits: int = -zlib.MAX_WBITS):
        """Raw deflate by default; ``wbits`` as zlib's (GZIP_WBITS: a gzip member)."""
        if self.isal is not None and level in ISAL_LEVEL_FOR_ZLIB_LEVEL:
            return self.isal.compressobj(ISAL_LEVEL_FOR_ZLIB_LEVEL[level], self.isal.DEFLATED, wbits)
        return zlib.compressobj(level, zlib.DEFLATED, wbits)

    def decompressobj(self):
        return (zlib if self.isal is None else self.isal).decompressobj(-zlib.MAX_WBITS)


BACKEND = DeflateBackend(isal_zlib)


def deflate_backend() -> DeflateBackend:
    """The one place the backend is chosen (tests replace BACKEND to run the zlib fallback)."""
    return BACKEND


GZIP_WBITS = 16 + zlib.MAX_WBITS


def gzip_file(source: str | Path, target: str | Path, level: int = 1, chunk: int = 1 << 22) -> None:
    """``source`` gzipped into ``target`` (a standard gzip member any reader inflates), on ISA-L when installed.

    For ``.nii.gz`` outputs: ITK's NIfTI writer gzips at zlib's default level whatever it is asked, which made the
    compression most of a cohort case's write time; ISA-L at level 1 is several times faster for a few % more size.
    """
    compressor = deflate_backend().compressobj(level, GZIP_WBITS)
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while piece := reader.read(chunk):
            writer.write(compressor.compress(piece))
        writer.write(compressor.flush())


def deflate_block(block: BytesLike | list[BytesLike], level: int) -> bytes:
    """One independent block of the stream: ``block`` (a buffer, or buffers in order) deflated and sync-flushed."""
    compressor = deflate_backend().compressobj(level)
    pieces = block if isinstance(block, list) else [block]
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)


class BlockList(list):
    """An in-memory sink: compressed blocks kept in order until they can be written."""

    def write(self, data: bytes) -> None:
        self.append(data)


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
            self._emit(deflate_block(block, self._level))
            return
        self._pending.append(self._pool.submit(deflate_block, block, self._level))
        while len(self._pending) > 2 * self._workers:
            self._emit(self._pending.popleft())

    def _emit(self, item: Future | bytes) -> None:
        data = item.result() if isinstance(item, Future) else item
        self._handle.write(data)
        self.bytes_out += len(data)


COMPRESSED_CHUNK = 1 << 20  # bytes of deflated input fed to the inflater at a time
KEEP_BEHIND = 256  # inflated bytes kept behind the read position for pydicom's small rewinds
LARGE_READ = 4 << 20  # reads above this bypass the look-behind buffer


class InflatingReader:
    """Read-only file-like view of a raw-deflate stream: read(n), readinto, tell, and seek within what was inflated.

    While ``keep_history`` is set (header parsing) every inflated byte is kept, so pydicom can rewind anywhere in
    the header; afterwards only ``KEEP_BEHIND`` bytes are kept behind the position. A deflate stream that ends
    early or is corrupt raises InvalidInputFileError naming the file. Inflates with the one backend, ISA-L when
    installed (4.6-7.7x faster than zlib on our SEGs: Docs/benchmarks.md).
    """

    def __init__(self, raw, path: str | Path):
        self._raw = raw
        self._path = path
        backend = deflate_backend()
        self._inflate = backend.decompressobj()
        self._errors = backend.errors
        self._buffer = bytearray()
        self._start = 0  # stream offset of _buffer[0]
        self._position = 0
        self.keep_history = True
        self.name = str(path)

    @property
    def _end(self) -> int:
        return self._start + len(self._buffer)

    def _inflate_some(self, wanted: int) -> bytes:
        """Up to ``wanted`` (>0) more inflated bytes; b"" only at the end of the deflate stream."""
        while not self._inflate.eof:
            data = self._inflate.unconsumed_tail or self._raw.read(COMPRESSED_CHUNK)
            try:
                out = self._inflate.decompress(data, wanted)
            except self._errors as exc:
                raise InvalidInputFileError(f"corrupt deflate stream at inflated offset {self._end} ({exc})",
                                            self._path) from exc
            if out:
                return out
            if not data:
                raise InvalidInputFileError(f"deflate stream truncated: the file ends after {self._end} inflated "
                                            "bytes without the end of the deflated dataset", self._path)
        return b""

    def _fill(self, end: int) -> None:
        while self._end < end:
            out = self._inflate_some(max(end - self._end, 1 << 16))
            if not out:
                return
            self._buffer += out

    def _trim(self, threshold: int = COMPRESSED_CHUNK) -> None:
        drop = self._position - self._start - KEEP_BEHIND
        if not self.keep_history and drop > threshold:
            del self._buffer[:drop]
            self._start += drop

    def forget_history(self) -> None:
        """From now on keep only ``KEEP_BEHIND`` bytes behind the position (the header is parsed)."""
        self.keep_history = False
        self._trim(0)
        self._buffer = bytearray(self._buffer)  # release the header-sized allocation

    def _chunks(self, size: int):
        """The next ``size`` bytes (fewer at the end of the stream) as pieces, inflating past the buffer directly."""
        buffered = min(size, max(0, self._end - self._position))
        if buffered:
            offset = self._position - self._start
            yield bytes(self._buffer[offset: offset + buffered])  # a copy: the buffer is cleared below
            self._position += buffered
        remaining = size - buffered
        if remaining:
            self._buffer.clear()
            self._start = self._position
        while remaining:
            out = self._inflate_some(min(remaining, 16 << 20))
            if not out:
                return
            self._position += len(out)
            self._start = self._position
            remaining -= len(out)
            yield out

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            out = io.BytesIO()
            while True:
                piece = self.read(LARGE_READ)
                out.write(piece)
                if len(piece) < LARGE_READ:
                    return out.getvalue()
        if size > LARGE_READ and not self.keep_history:
            out = io.BytesIO()  # getvalue() hands over its buffer: one copy of the value in memory, not two
            for piece in self._chunks(size):
                out.write(piece)
            return out.getvalue()
        self._fill(self._position + size)
        offset = self._position - self._start
        with memoryview(self._buffer) as view:
            data = bytes(view[offset: offset + size])
        self._position += len(data)
        self._trim()
        return data

    def readinto(self, target) -> int:
        view = memoryview(target).cast("B")
        filled = 0
        for piece in self._chunks(len(view)):
            view[filled: filled + len(piece)] = piece
            filled += len(piece)
        self._trim()
        return filled

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset + (self._position if whence == io.SEEK_CUR else 0)
        if whence == io.SEEK_END:
            raise OSError("seek from the end of a deflate stream is not supported")
        if target < self._start:
            raise OSError(f"cannot seek back to {target} in a deflate stream (kept from {self._start})")
        self._fill(target)
        self._position = min(target, self._end)
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True
