"""Fast path for writing BINARY and LABELMAP SEGs with native pixel data (uncompressed or deflated), and LABELMAP
SEGs with RLE Lossless pixel data.

highdicom needs one boolean volume per segment at once for BINARY ((slices, rows, columns, segments): 52 GB for
1000 segments on a 512x512x200 grid), builds a pydicom Dataset per frame, and encodes the frames one by one.
Here highdicom still builds and validates everything that is not per-frame (segment descriptions, shared
functional groups, dimension index, patient/study, references), from a one-plane template. The per-frame
functional groups are assembled as bytes from pre-encoded pieces, and the frames are streamed straight from the
label layers: LABELMAP slices as they are (or through a lookup table when the stored values are not the segment
numbers); BINARY frames bit-packed per segment, touching only the rows the segment occupies. RLE Lossless: each
LABELMAP frame encoded by GDCM or pylibjpeg-rle (rle_encoder), encapsulated one fragment per frame by pydicom.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless
from pydicom.valuerep import format_number_as_ds

from DicomFidelityCommonLib.dicom.pydicom_internals import DicomBytesIO, convert_encodings, write_data_element
from DicomFidelityCommonLib.dicom.series import ImageSeries
from SegmentationQALib.seg.census import SegmentationCensus
from SegmentationQALib.segmentation import SLAB_SLICES, LayeredSegmentation

PER_FRAME_TAG = Tag("PerFrameFunctionalGroupsSequence")
SEGMENT_SEQUENCE_TAG = Tag("SegmentSequence")
ITEM_TAG = b"\xfe\xff\x00\xe0"
SEGMENT_POINTER = Tag("ReferencedSegmentNumber")
POSITION_POINTER = Tag("ImagePositionPatient")
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
ENCAPSULATED_SYNTAXES = (RLELossless,)  # LABELMAP only: highdicom (the oracle) encodes no 1-bit frames as RLE
# The last frame's offset a Basic Offset Table (32-bit offsets) can hold; past it, an Extended Offset Table.
BASIC_OFFSET_TABLE_LIMIT = 2**32 - 1
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
FRAMES_PER_CHUNK = 64  # BINARY frames packed at once (2 MB for 512x512): bounds the memory of the stream


def fast_path_supported(layered: LayeredSegmentation, seg_type: str, transfer_syntax_uid: str) -> bool:
    """Native pixel data (uncompressed or deflated), or RLE Lossless for LABELMAP; and a plane big enough for the
    one-plane template."""
    rows, columns = layered.geometry.shape[1:]
    if transfer_syntax_uid in ENCAPSULATED_SYNTAXES:
        return seg_type == "LABELMAP" and rows * columns >= len(layered.segments)
    return transfer_syntax_uid in NATIVE_SYNTAXES and (seg_type == "BINARY" or rows * columns >= len(layered.segments))


def _encode(element_dataset: Dataset, keyword: str, encodings: list[str] | None = None) -> bytes:
    return _encode_element(element_dataset[keyword], encodings)


def _encode_element(element, encodings: list[str] | None = None) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_data_element(buffer, element, encodings)
    return buffer.getvalue()


def encode_segment_sequence(template: Dataset) -> bytes:
    """SegmentSequence as bytes, each distinct piece encoded once.

    pydicom encodes every element of every item (about 0.25 s for 1000 segments, as long as everything else in
    a LABELMAP export); the coded sequences and most plain values repeat across segments (one category, one
    algorithm), so they are encoded once and reused. Sequences count as the same only when they hold the very
    same item objects (seg_export shares each distinct code), so nothing is guessed.
    """
    encodings = convert_encodings(template.get("SpecificCharacterSet"))
    cache: dict[tuple, bytes] = {}
    items = []
    for item in template.SegmentSequence:
        body = []
        for element in item:
            if element.VR == "SQ":
                key = (element.tag, tuple(id(entry) for entry in element.value))
            elif isinstance(element.value, str):
                key = (element.tag, element.VR, element.value)
            else:
                key = None
            encoded = cache.get(key) if key is not None else None
            if encoded is None:
                encoded = _plain_element(element, encodings) or _encode_element(element, encodings)
                if key is not None:
                    cache[key] = encoded
            body.append(encoded)
        body = b"".join(body)
        items.append(ITEM_TAG + len(body).to_bytes(4, "little") + body)
    return _sequence_element(int(SEGMENT_SEQUENCE_TAG), items)


def _plain_element(element, encodings: list[str]) -> bytes | None:
    """A segment's own US and LO/SH/CS values (number, colour, label) encoded directly, as pydicom does: 16-bit
    little-endian numbers; text in the data set's character set (UTF-8 or plain ASCII) padded with a space to
    even length. None for anything else (pydicom encodes it). pydicom took ~20 us an element, 60 ms for the
    3000 of a 1000-segment export."""
    value, vr = element.value, element.VR
    if vr == "US":
        numbers = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        if not numbers or not all(isinstance(n, int) and 0 <= n <= 0xFFFF for n in numbers):
            return None
        encoded = struct.pack(f"<{len(numbers)}H", *numbers)
    elif vr in ("LO", "SH", "CS") and isinstance(value, str) and value and "\\" not in value:
        if value.isascii():
            encoded = value.encode("ascii")
        elif encodings == ["utf_8"]:
            encoded = value.encode("utf-8")
        else:
            return None
        encoded += b" " * (len(encoded) % 2)
    else:
        return None
    if len(encoded) > 0xFFFF:
        return None
    return _short_element(int(element.tag), vr.encode("ascii"), encoded)


def _sequence(keyword: str, items: list[Dataset]) -> Dataset:
    holder = Dataset()
    setattr(holder, keyword, Sequence(items))
    return holder


def template_pixels(layered: LayeredSegmentation, seg_type: str) -> np.ndarray:
    """One plane for highdicom to describe every segment from cheaply. LABELMAP: one voxel per segment (the
    stored values decide the bit depth). BINARY: one voxel of segment 1 only, so highdicom builds one frame
    rather than one per segment (the others are described without frames; ours come later)."""
    rows, columns = layered.geometry.shape[1:]
    plane = np.zeros((1, rows, columns), dtype=np.uint16 if len(layered.segments) > 255 else np.uint8)
    flat = plane.reshape(-1)
    if seg_type == "BINARY":
        flat[0] = 1
    else:
        flat[: len(layered.segments)] = np.arange(1, len(layered.segments) + 1)
    return plane


def dimension_kinds(template: Dataset) -> list[str] | None:
    """The frame dimensions in DimensionIndexValues order ("segment", "plane"); None if not the usual ones."""
    kinds = []
    for item in template.DimensionIndexSequence:
        pointer = Tag(item.DimensionIndexPointer)
        if pointer == SEGMENT_POINTER:
            kinds.append("segment")
        elif pointer == POSITION_POINTER:
            kinds.append("plane")
        else:
            return None
    return kinds


def _tag_bytes(tag: int) -> bytes:
    return (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")


def _short_element(tag: int, vr: bytes, value: bytes, pad: bytes = b" ") -> bytes:
    """An explicit VR element with a 2-byte length, ``value`` padded to even length (space; NUL for UI)."""
    value += pad * (len(value) % 2)
    return _tag_bytes(tag) + vr + len(value).to_bytes(2, "little") + value


def _uid_element(tag: int, uid: str) -> bytes:
    return _short_element(tag, b"UI", str(uid).encode("ascii"), b"\x00")


def _item(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(encoded for _, encoded in sorted(elements, key=lambda pair: pair[0]))
    return ITEM_TAG + len(body).to_bytes(4, "little") + body


def _sequence_element(tag: int, items: list[bytes]) -> bytes:
    body = b"".join(items)
    return _tag_bytes(tag) + b"SQ\x00\x00" + len(body).to_bytes(4, "little") + body


def _constant_elements(item: Dataset, skip: tuple[str, ...]) -> list[tuple[int, bytes]]:
    return [(int(element.tag), _encode(item, element.keyword)) for element in item if element.keyword not in skip]


def derivation_elements(template_item: Dataset, reference: ImageSeries, planes) -> dict[int, bytes]:
    """Per plane, the encoded DerivationImageSequence: the template's, with the plane's source image UIDs."""
    derivation = template_item.DerivationImageSequence[0]
    source = derivation.SourceImageSequence[0]
    derivation_constant = _constant_elements(derivation, ("SourceImageSequence",))
    planes = list(planes)
    result = {}
    for k, source_item in zip(planes, _reference_items(source, reference, planes)):
        source_sequence = _sequence_element(int(Tag("SourceImageSequence")), [source_item])
        item = _item(derivation_constant + [(int(Tag("SourceImageSequence")), source_sequence)])
        result[k] = _sequence_element(int(Tag("DerivationImageSequence")), [item])
    return result


def plane_position_elements(template_item: Dataset, reference: ImageSeries, planes) -> dict[int, bytes]:
    """Per plane, the encoded PlanePositionSequence: the template's, with the plane's ImagePositionPatient
    written as the source image states it (highdicom keeps a source's DS strings; so does pydicom)."""
    item = template_item.PlanePositionSequence[0]
    constant = _constant_elements(item, ("ImagePositionPatient",))
    position_tag, sequence_tag = int(POSITION_POINTER), int(Tag("PlanePositionSequence"))
    positions = reference.keys.column("ImagePositionPatient")  # dicom_headers.Numbers: floats and their texts
    return {k: _sequence_element(sequence_tag, [_item(constant + [(position_tag, _short_element(
        position_tag, b"DS", "\\".join(positions[k].texts).encode("ascii")))])]) for k in planes}


def reference_sequences(template: Dataset, reference: ImageSeries) -> dict[int, bytes]:
    """ReferencedSeriesSequence (and SourceImageSequence, if the template has one) for every source image,
    encoded from the template's one-image items, by tag; the template's own are removed.

    highdicom makes a pydicom item per source image for each and pydicom encodes them one by one: a third of a
    117-segment LABELMAP export once the frames were streamed.
    """
    spliced = {}
    series_tag, instances_tag = int(Tag("ReferencedSeriesSequence")), int(Tag("ReferencedInstanceSequence"))
    (series_item,) = template.ReferencedSeriesSequence  # the template's one source image: one series
    if str(series_item.SeriesInstanceUID) != reference.series_instance_uid:
        raise ValueError("the template does not reference the reference series")
    instances = _sequence_element(instances_tag, _reference_items(series_item.ReferencedInstanceSequence[0], reference))
    constant = _constant_elements(series_item, ("ReferencedInstanceSequence",))
    series_items = [_item(constant + [(instances_tag, instances)])]
    spliced[series_tag] = _sequence_element(series_tag, series_items)
    del template.ReferencedSeriesSequence
    if "SourceImageSequence" in template:
        source_tag = int(Tag("SourceImageSequence"))
        items = _reference_items(template.SourceImageSequence[0], reference)
        spliced[source_tag] = _sequence_element(source_tag, items)
        del template.SourceImageSequence
    return spliced


def _reference_items(template_item: Dataset, reference: ImageSeries, images=None) -> list[bytes]:
    """The template's reference item once per source image (``images``: their indices, default all), with that
    image's SOP class and instance UIDs."""
    uid_keywords = ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID")
    constant = _constant_elements(template_item, uid_keywords)
    class_tag, instance_tag = (int(Tag(keyword)) for keyword in uid_keywords)
    classes, instances = reference.sop_class_uids, reference.sop_instance_uids
    return [_item(constant + [(class_tag, _uid_element(class_tag, classes[k])),
                              (instance_tag, _uid_element(instance_tag, instances[k]))])
            for k in (range(len(classes)) if images is None else images)]


def per_frame_sequence(template_item: Dataset, kinds: list[str], reference: ImageSeries,
                       frames: list[tuple[int, int]], plane_index: dict[int, int]) -> bytes:
    """The bytes of PerFrameFunctionalGroupsSequence items for ``frames`` ((segment number, slice) pairs),
    assembled from the template item's elements, encoded once per plane or segment."""
    pieces: dict[str, dict[int, bytes]] = {
        "DerivationImageSequence": derivation_elements(template_item, reference, plane_index),
        "PlanePositionSequence": plane_position_elements(template_item, reference, plane_index),
    }
    content = copy.deepcopy(template_item.FrameContentSequence[0])
    placeholders = [0x7FFFFFF1 + n for n in range(len(kinds))]
    content.DimensionIndexValues = placeholders if len(placeholders) > 1 else placeholders[0]
    content_bytes = _encode(_sequence("FrameContentSequence", [content]), "FrameContentSequence")
    values_offset = content_bytes.index(placeholders[0].to_bytes(4, "little"))
    content_head, content_tail = content_bytes[:values_offset], content_bytes[values_offset + 4 * len(kinds):]
    segment_bytes, number_offset = b"", 0
    if "SegmentIdentificationSequence" in template_item:
        segment_id = Dataset()
        segment_id.ReferencedSegmentNumber = 0x7FF1
        segment_bytes = _encode(_sequence("SegmentIdentificationSequence", [segment_id]),
                                "SegmentIdentificationSequence")
        number_offset = segment_bytes.index((0x7FF1).to_bytes(2, "little"))
    order = [element.keyword for element in template_item]  # ascending tags: the order they are written in
    constant = {keyword: _encode(template_item, keyword) for keyword in order
                if keyword not in ("DerivationImageSequence", "PlanePositionSequence", "FrameContentSequence",
                                   "SegmentIdentificationSequence")}
    split = order.index("FrameContentSequence")
    parts = []
    segment_part = b""
    last_number = None
    for number, k in frames:
        if segment_bytes and number != last_number:
            segment_part = (segment_bytes[:number_offset] + number.to_bytes(2, "little")
                            + segment_bytes[number_offset + 2:])
            last_number = number
        values = b"".join((number if kind == "segment" else plane_index[k]).to_bytes(4, "little") for kind in kinds)
        body = []
        for position, keyword in enumerate(order):
            if position == split:
                body.append(content_head + values + content_tail)
            elif keyword in pieces:
                body.append(pieces[keyword][k])
            elif keyword == "SegmentIdentificationSequence":
                body.append(segment_part)
            else:
                body.append(constant[keyword])
        body = b"".join(body)
        parts.append(ITEM_TAG + len(body).to_bytes(4, "little") + body)
    return b"".join(parts)


def labelmap_chunks(layered: LayeredSegmentation, slices: list[int], dtype,
                    maxima: list[int] | None = None) -> Iterator[memoryview]:
    """LABELMAP frames (segment numbers per pixel) of ``slices`` in that order, a slab at a time (``maxima``: each
    layer's largest value, from the census)."""
    tables = layered.segment_number_tables(dtype, maxima)
    if tables[0] is None and layered.layers[0].flags.c_contiguous:  # stored as segment numbers: the slices as
        for k in slices:  # they lie, in any order, without a copy (a descending slab view would need one)
            yield memoryview(layered.layers[0][k]).cast("B")
        return
    for start in range(0, len(slices), SLAB_SLICES):
        chunk = slices[start:start + SLAB_SLICES]
        first, last = chunk[0], chunk[-1]
        if last - first + 1 == len(chunk):
            pick = slice(first, last + 1)  # ascending run: a view
        elif first - last + 1 == len(chunk):
            pick = slice(first, last - 1 if last > 0 else None, -1)  # descending run
        else:
            pick = np.asarray(chunk)
        yield memoryview(np.ascontiguousarray(layered.segment_numbers(tables, pick))).cast("B")


def binary_chunks(layered: LayeredSegmentation, census: SegmentationCensus,
                  slices_per_segment: list[np.ndarray]) -> Iterator[memoryview]:
    """1-bit frames, segment after segment, little-endian bit order; only the occupied rows are packed."""
    rows, columns = layered.geometry.shape[1:]
    if columns % 8:
        yield from _unaligned_binary_chunks(layered, slices_per_segment)
        return
    row_bytes = columns // 8
    for segment, slices in zip(layered.segments, slices_per_segment):
        layer = layered.layers[segment.layer]
        r0, r1 = census.row_range(segment)
        for start in range(0, len(slices), FRAMES_PER_CHUNK):
            chunk = slices[start:start + FRAMES_PER_CHUNK]
            if chunk[-1] - chunk[0] + 1 == len(chunk):
                band = layer[int(chunk[0]):int(chunk[-1]) + 1, r0:r1, :]
            else:
                band = layer[chunk, r0:r1, :]
            packed = np.zeros((len(chunk), rows, row_bytes), dtype=np.uint8)
            packed[:, r0:r1, :] = np.packbits(band == segment.label_value, axis=-1, bitorder="little")
            yield memoryview(packed).cast("B")


def _unaligned_binary_chunks(layered: LayeredSegmentation, slices_per_segment: list[np.ndarray]
                             ) -> Iterator[memoryview]:
    """1-bit frames for a grid whose rows do not fill whole bytes: native pixel data runs frame after frame with
    no padding, so frames start mid-byte; the bits left over from one chunk lead the next one."""
    carry = np.zeros(0, dtype=bool)
    for segment, slices in zip(layered.segments, slices_per_segment):
        layer = layered.layers[segment.layer]
        for start in range(0, len(slices), FRAMES_PER_CHUNK):
            chunk = layer[slices[start:start + FRAMES_PER_CHUNK]] == segment.label_value
            bits = np.concatenate([carry, chunk.ravel()])
            whole = len(bits) - len(bits) % 8
            carry = bits[whole:]
            yield memoryview(np.packbits(bits[:whole], bitorder="little")).cast("B")
    if len(carry):
        yield memoryview(np.packbits(carry, bitorder="little")).cast("B")  # zero bits complete the last byte


class RleEncoder(NamedTuple):
    """Encodes one little-endian frame (bytes; rows, columns, bits allocated) as an RLE Lossless frame."""

    name: str
    encode: Callable[[bytes, int, int, int], bytes]


def _gdcm_encode(frame: bytes, rows: int, columns: int, bits_allocated: int) -> bytes:
    from pydicom.pixels.encoders import RLELosslessEncoder

    return RLELosslessEncoder.encode(
        frame, encoding_plugin="gdcm", rows=rows, columns=columns, samples_per_pixel=1, bits_allocated=bits_allocated,
        bits_stored=bits_allocated, pixel_representation=0, photometric_interpretation="MONOCHROME2",
        number_of_frames=1)


def _pylibjpeg_rle_encode(frame: bytes, rows: int, columns: int, bits_allocated: int) -> bytes:
    from rle import encode_pixel_data

    return encode_pixel_data(frame, rows=rows, columns=columns, samples_per_pixel=1, bits_allocated=bits_allocated,
                             byteorder="<")


GDCM_RLE = RleEncoder("gdcm", _gdcm_encode)  # through pydicom's RLE encoder: ~10x pylibjpeg-rle on label frames
PYLIBJPEG_RLE = RleEncoder("pylibjpeg-rle", _pylibjpeg_rle_encode)
RLE_ENCODER: RleEncoder | None = None  # chosen on first use (rle_encoder); tests set it


def rle_encoder() -> RleEncoder:
    """GDCM (package python-gdcm) when pydicom can use it, else pylibjpeg-rle (a dependency). Both encode each row
    as PackBits runs (PS3.5 G.3.1), not always the same runs; decoded, the frames are the same (tested)."""
    global RLE_ENCODER
    if RLE_ENCODER is None:
        from pydicom.pixels.encoders import RLELosslessEncoder

        RLE_ENCODER = GDCM_RLE if "gdcm" in RLELosslessEncoder.available_plugins else PYLIBJPEG_RLE
    return RLE_ENCODER


def rle_frames(chunks: Iterator[memoryview], rows: int, columns: int, bits_allocated: int) -> list[bytes]:
    """RLE Lossless frames (PS3.5 Annex G) of the LABELMAP ``chunks`` (whole little-endian frames), each encoded by
    rle_encoder's library. A frame equal to the one before it (labels nearest-resampled from thicker slices) is
    encoded once."""
    encode = rle_encoder().encode
    frame_bytes = rows * columns * bits_allocated // 8
    encoded: list[bytes] = []
    previous = None
    for chunk in chunks:
        for start in range(0, len(chunk), frame_bytes):
            piece = chunk[start:start + frame_bytes]
            frame = np.frombuffer(piece, dtype=np.uint8)
            if previous is None or not np.array_equal(frame, previous):
                last = encode(bytes(piece), rows, columns, bits_allocated)  # bytes: pylibjpeg-rle copies views slowly
                previous = frame
            encoded.append(last)
    return encoded


def rle_pixel_data(frames: list[bytes]) -> list[bytes]:
    """The encapsulated Pixel Data element of encoded ``frames`` (PS3.5 A.4), one fragment per frame, as pydicom
    encapsulates them: with a Basic Offset Table, or, when the last frame's offset does not fit its 32 bits, an
    empty one and the Extended Offset Table elements (PS3.3 C.7.6.3) ahead of the pixel data."""
    last_offset = sum(len(frame) + len(frame) % 2 + 8 for frame in frames[:-1])
    elements = []
    if last_offset > BASIC_OFFSET_TABLE_LIMIT:
        fragments, offsets, lengths = encapsulate_extended(frames)
        table = Dataset()
        table.ExtendedOffsetTable = offsets
        table.ExtendedOffsetTableLengths = lengths
        elements += [_encode(table, "ExtendedOffsetTable"), _encode(table, "ExtendedOffsetTableLengths")]
    else:
        fragments = encapsulate(frames)
    pixel_head = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"  # undefined length: encapsulated
    return [*elements, pixel_head, fragments, SEQUENCE_DELIMITER]


def finish_seg(template: Dataset, layered: LayeredSegmentation, reference: ImageSeries, census: SegmentationCensus,
               overlapping: bool, transfer_syntax_uid: str = ExplicitVRLittleEndian
               ) -> tuple[Dataset, StreamTail, dict[int, bytes]] | None:
    """Turn highdicom's one-plane template into the full SEG, its pixel data in ``transfer_syntax_uid`` (native:
    explicit VR little endian, deflated or not; or RLE Lossless, whose frames are encoded here).

    Returns the dataset without its segment sequence, per-frame functional groups and pixel data; the last two
    as a stream of bytes to append (they are the last elements of a SEG, with the Extended Offset Table when one
    is needed); and the segment sequence encoded, by tag, to be put in its place. None when the template has a
    layout this path does not build (the caller then lets highdicom build everything).
    """
    kinds = dimension_kinds(template)
    binary = str(template.SegmentationType) == "BINARY"
    if kinds is None or "plane" not in kinds or (binary != ("segment" in kinds)):
        return None
    encapsulated = transfer_syntax_uid in ENCAPSULATED_SYNTAXES
    if encapsulated and binary:
        return None
    template_item = template.PerFrameFunctionalGroupsSequence[0]
    positions = reference.keys.positions
    rank = plane_rank(positions, reference)
    slices_per_segment = [slices[np.argsort(rank[slices], kind="stable")] for slices in census.slices(layered)]
    used = sorted({int(k) for slices in slices_per_segment for k in slices}, key=lambda k: rank[k])
    if binary:
        frames = [(number, int(k)) for number, slices in enumerate(slices_per_segment, start=1) for k in slices]
    else:
        frames = [(0, k) for k in used]
    plane_index = {k: n for n, k in enumerate(used, start=1)}  # position index: rank among the planes used
    sequence_bytes = per_frame_sequence(template_item, kinds, reference, frames, plane_index)
    del template[PER_FRAME_TAG]
    if "PixelData" in template:
        del template.PixelData
    later = [tag for tag in template.keys() if tag > PER_FRAME_TAG]
    if later:
        raise ValueError(f"unexpected elements after the per-frame functional groups: {later}")
    template.NumberOfFrames = len(frames)
    _volume_attributes(template, reference, positions, used, binary and len(slices_per_segment) > 1)
    template.SegmentsOverlap = "YES" if overlapping else "NO"
    spliced = reference_sequences(template, reference)
    rows, columns = layered.geometry.shape[1:]
    if binary:
        pixel_bytes = (len(frames) * rows * columns + 7) // 8
        chunks = binary_chunks(layered, census, slices_per_segment)
    else:
        dtype = np.uint16 if int(template.BitsAllocated) == 16 else np.uint8
        pixel_bytes = len(frames) * rows * columns * np.dtype(dtype).itemsize
        chunks = labelmap_chunks(layered, used, dtype, [layer.max_value for layer in census.layers])
    head = (b"\x00\x52\x30\x92SQ\x00\x00" + len(sequence_bytes).to_bytes(4, "little"))
    if encapsulated:
        encoded = rle_frames(chunks, rows, columns, int(template.BitsAllocated))
        if len(encoded) != len(frames):
            raise ValueError(f"{len(encoded)} RLE frames encoded for {len(frames)} frames")
        pixel_parts = rle_pixel_data(encoded)
        tail = StreamTail([head, sequence_bytes, *pixel_parts],
                          len(head) + len(sequence_bytes) + sum(len(part) for part in pixel_parts))
    else:
        vr = b"OW" if int(template.BitsAllocated) > 8 else b"OB"
        padded = pixel_bytes + pixel_bytes % 2
        pixel_head = b"\xe0\x7f\x10\x00" + vr + b"\x00\x00" + padded.to_bytes(4, "little")
        tail = StreamTail([head, sequence_bytes, pixel_head, chunks, b"\x00" * (padded - pixel_bytes)],
                          len(head) + len(sequence_bytes) + len(pixel_head) + padded)
    spliced[int(SEGMENT_SEQUENCE_TAG)] = encode_segment_sequence(template)
    del template[SEGMENT_SEQUENCE_TAG]
    return template, tail, spliced


def plane_rank(positions: np.ndarray, reference: ImageSeries) -> np.ndarray:
    """Rank of each reference plane in highdicom's frame order (along its normal, VOLUME_INDEX_CONVENTION)."""
    from highdicom.spatial import VOLUME_INDEX_CONVENTION, get_plane_sort_index

    orientation = reference.keys.array("ImageOrientationPatient", 6)[0].tolist()
    order = np.asarray(get_plane_sort_index(positions, orientation, index_convention=VOLUME_INDEX_CONVENTION))
    rank = np.empty(len(positions), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _volume_attributes(template: Dataset, reference: ImageSeries, positions: np.ndarray, used: list[int],
                       several_segments: bool) -> None:
    """What highdicom derives from every plane, which a one-plane template cannot know: the spacing between
    slices (from all source positions, unless the source states it) and the "3D" dimension organization (frames
    of one segment, or a LABELMAP, on regularly spaced planes)."""
    from highdicom.spatial import get_volume_positions

    shared = template.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    measures = shared.PixelMeasuresSequence[0]
    if "SpacingBetweenSlices" not in reference.datasets[0]:
        spacing, _ = get_volume_positions(image_positions=positions, image_orientation=orientation)
        if spacing is not None:
            measures.SpacingBetweenSlices = format_number_as_ds(spacing)
        elif "SpacingBetweenSlices" in measures:
            del measures.SpacingBetweenSlices
    three_d = False
    if len(used) > 1 and not several_segments:
        spacing, _ = get_volume_positions(image_positions=positions[used], image_orientation=orientation, sort=False)
        three_d = spacing is not None and spacing > 0.0
    if three_d:
        template.DimensionOrganizationType = "3D"
    elif "DimensionOrganizationType" in template:
        del template.DimensionOrganizationType


class StreamTail(NamedTuple):
    """The elements after the header, as bytes and iterators of buffers, and how many bytes they make."""

    parts: list
    nbytes: int


def iterate_tail(tail: StreamTail) -> Iterator:
    """Flatten the tail of finish_seg into buffers."""
    for part in tail.parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            if len(part):
                yield part
        else:
            yield from part
