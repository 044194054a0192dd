"""Write a DICOM object whose last elements arrive as a stream of bytes (per-frame groups, pixel data).

pydicom encodes the header; the pre-encoded tail is appended without building it in memory. With Deflated
Explicit VR Little Endian (PS3.5 A.5: everything after the file meta is one raw deflate stream) the stream is
compressed in independent blocks on several cores, each ended by a sync flush so the blocks join into one valid
deflate stream (the scheme pigz uses). pydicom instead deflates the whole encoded dataset in one call on one core,
after building it in memory. Deflating is DicomFidelityCommonLib.dicom.deflate's (ISA-L or zlib).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from DicomFidelityCommonLib.dicom.deflate import (
    DEFAULT_DEFLATE_LEVEL,
    BlockList,
    BytesLike,
    ParallelDeflateWriter,
    deflate_block,
)
from DicomFidelityCommonLib.dicom.pydicom_internals import DicomBytesIO, write_dataset, write_file_meta_info

PROGRESS_SECONDS = 0.2


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
    blocks = BlockList()
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
        head = deflate_block(body, level)
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
