"""Read DICOM headers fast: what ``pydicom.dcmread(path, stop_before_pixels=True)`` gives, 2.5x faster.

A SEG or RTSTRUCT references every slice of its image series, so each export reads 100-1000 headers. pydicom
spends ~0.45 ms on a 54-element CT header (0.09 s for 200 slices: a third of a 117-segment LABELMAP export),
nearly all of it in per-element Python around each 8-byte read. Here the elements of a little-endian file are
located with one ``struct`` call each in a buffer read at once, and handed to pydicom as the same
``RawDataElement`` records its own reader makes: pydicom still converts every value, lazily, on access. Undefined
length sequences are parsed by pydicom's ``read_sequence``, as pydicom's reader does.

Anything this path does not cover goes to pydicom itself, so the result is always pydicom's: no 'DICM' prefix,
big endian, deflated or private transfer syntaxes, command sets, an explicit/implicit VR switch, VRs pydicom
rewrites (UN, unknown), undefined lengths outside sequences, and truncated elements.

``header_values`` then reads the few values a series is sorted, checked and referenced by (UIDs, positions,
orientation, size) straight from those raw elements: pydicom's attribute access converts and validates each value
(5-15 us each), which for 200 slices x 11 values came to as much as reading the headers. ``read_values`` reads
the same values straight from a file, without building a dataset at all (200 CT slices: 0.02 s, against 0.09 s
with dcmread and attribute access): one os.read of the first 4 KB, no file object, one tight loop over the element
headers that stops at the last wanted tag.

For an index, ``read_partial_header`` builds only the top-level elements asked for (steps over the rest, undefined
length sequences by their raw delimiters), and ``RawItem`` reads values from a sequence's items straight from its
raw bytes: an RTSTRUCT's 100s of image references cost 3.5 ms as pydicom Datasets, 0.7 ms this way.
"""

from __future__ import annotations

import codecs
import functools
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom import uid as uids
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

from DicomFidelityCommonLib.dicom.pydicom_internals import (
    EXPLICIT_VR_LENGTH_32,
    DicomBytesIO,
    RawDataElement,
    convert_encodings,
    convert_string,
    default_encoding,
    empty_value_for_VR,
    read_sequence,
)

FIRST_READ_BYTES = 16384  # a typical CT header is 1-8 KB; more is read only when the header is longer
FIRST_VALUES_BYTES = 4096  # read_values: a CT slice's values end within its first 1.5 KB; more is read in 64 KB steps
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # where pydicom's stop_before_pixels stops
UNDEFINED = 0xFFFFFFFF
_TAG = struct.Struct("<HH").unpack_from
_VR_LENGTH = struct.Struct("<2sH").unpack_from
_LONG = struct.Struct("<I").unpack_from
_ITEM = struct.Struct("<HHI").unpack_from  # an implicit VR element's (or an item's) header
_EXPLICIT = struct.Struct("<HH2sH").unpack_from  # an explicit VR element's header
_VALID_VR = {vr.value.encode("ascii"): vr.value for vr in VR if vr.value != "UN"}
_LONG_VR = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_LONG_RAW_VR = frozenset(raw for raw, vr in _VALID_VR.items() if vr in _LONG_VR)
_SHORT_RAW_VR = frozenset(raw for raw, vr in _VALID_VR.items() if vr not in _LONG_VR)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)
_LATIN_1 = codecs.lookup(default_encoding).name == codecs.lookup("latin-1").name  # pydicom's default: iso8859
_SPECIFIC_CHARACTER_SET = 0x00080005


class _NotCovered(Exception):
    """This file is for pydicom's own reader."""


def read_header(path: str | Path) -> FileDataset:
    """``pydicom.dcmread(path, stop_before_pixels=True)``, faster for the usual little-endian files."""
    with open(path, "rb") as handle:
        try:
            return _read(handle)
        except _NotCovered:
            pass
    return pydicom.dcmread(path, stop_before_pixels=True)


class _Buffer:
    """The file's bytes from its start, read in one piece and extended (to the end) only when needed."""

    def __init__(self, handle):
        self.handle = handle
        self.data = handle.read(FIRST_READ_BYTES)
        self.complete = len(self.data) < FIRST_READ_BYTES

    def ensure(self, end: int) -> bool:
        """Whether bytes up to ``end`` exist, reading the rest of the file if they are not in memory yet."""
        if end > len(self.data) and not self.complete:
            self.data += self.handle.read()
            self.complete = True
        return end <= len(self.data)


def _dataset_start(buffer: _Buffer) -> tuple[dict, int, bool]:
    """The file meta's raw elements, where the data set starts, and whether it is implicit VR; _NotCovered for
    anything but a little-endian, non-deflated, registered transfer syntax that the data set really uses."""
    if buffer.data[128:132] != b"DICM":
        raise _NotCovered
    meta_elements, position, _ = _walk(buffer, 132, implicit=False, meta=True)
    syntax = meta_elements.get(0x00020010)
    if syntax is None or not syntax.value:
        raise _NotCovered
    implicit = _implicit_syntax(bytes(syntax.value))
    if implicit is None:
        raise _NotCovered
    if buffer.ensure(position + 6):
        raw_vr = buffer.data[position + 4:position + 6]
        if (not (0x40 < raw_vr[0] < 0x5B and 0x40 < raw_vr[1] < 0x5B)) != implicit:
            raise _NotCovered  # pydicom's VR-switch heuristic would apply
    return meta_elements, position, implicit


@functools.lru_cache(maxsize=64)
def _implicit_syntax(raw: bytes) -> bool | None:
    """Whether a transfer syntax (its raw UID value) is implicit VR; None for one this reader leaves to pydicom.
    Cached: every slice of a series names the same one, and pydicom's UID properties cost microseconds each."""
    syntax = uids.UID(raw.decode(default_encoding, errors="replace").strip(" \x00"))
    if (not syntax.is_transfer_syntax or not syntax.is_little_endian or syntax.is_deflated
            or syntax in uids.PrivateTransferSyntaxes):
        return None
    return syntax == uids.ImplicitVRLittleEndian


@functools.lru_cache(maxsize=64)
def _wanted_tags(keywords: tuple[str, ...]) -> tuple[dict[int, int], int, list[tuple[str, bytes]]]:
    """tag -> index of the keywords read_values looks for (the same few tuples, for every slice of a series), the
    largest of those tags (where the walk stops), and each keyword's dictionary VR (as text and as in a file)."""
    wanted = {int(_tag(keyword)[0]): index for index, keyword in enumerate(keywords)}
    expected = [(vr, vr.encode("ascii")) for vr in (_tag(keyword)[1] for keyword in keywords)]
    return wanted, max(wanted, default=UNDEFINED), expected  # none wanted: to the pixel data, as _walk goes


def _read(handle) -> FileDataset:
    buffer = _Buffer(handle)
    meta_elements, position, implicit = _dataset_start(buffer)
    file_meta = FileMetaDataset(meta_elements)
    file_meta.set_original_encoding(False, True, default_encoding)
    elements, _, encoding = _walk(buffer, position, implicit=implicit, meta=False)
    if elements and next(iter(elements)) < 0x00080000:
        raise _NotCovered  # a command set or stray group 0002/0004 elements
    result = FileDataset(handle, elements, buffer.data[:128], file_meta, implicit, True)
    result.set_original_encoding(implicit, True, encoding)
    return result


def _element_header(data: bytes, position: int, implicit: bool, limit: int) -> tuple[bytes | None, int, int]:
    """(raw VR, None when implicit; value length; where the value starts) of the element at ``position``.
    _NotCovered for a VR pydicom's reader must judge (UN, unknown) or a long header reaching past ``limit``."""
    if implicit:
        return None, _LONG(data, position + 4)[0], position + 8
    raw_vr, length = _VR_LENGTH(data, position + 4)
    if raw_vr in _SHORT_RAW_VR:
        return raw_vr, length, position + 8
    if raw_vr not in _LONG_RAW_VR or position + 12 > limit:
        raise _NotCovered
    return raw_vr, _LONG(data, position + 8)[0], position + 12


def _undefined_length_is_sequence(tag: int, raw_vr: bytes | None) -> bool:
    """Only sequences may have an undefined length here (implicit VR: the dictionary says; unknown tag: pydicom)."""
    if raw_vr is not None:
        return raw_vr == b"SQ"
    try:
        return dictionary_VR(BaseTag(tag)) == "SQ"
    except KeyError:
        raise _NotCovered from None


def _walk(buffer: _Buffer, position: int, implicit: bool, meta: bool,
          keep: frozenset[int] | None = None) -> tuple[dict, int, str | list[str]]:
    """Raw elements from ``position`` until the file meta ends (``meta``), pixel data, or the end of the file;
    also where it stopped and the character set the elements are encoded in.

    With ``keep``, only those elements (and the character set) become elements; the others are stepped over
    (undefined-length sequences by their raw items and delimiters), so what is kept is what the full walk would
    have made of it. (``_scan`` is this walk for a few values, without elements.)
    """
    elements: dict = {}
    encoding = default_encoding
    data = buffer.data
    while True:
        if position + 12 > len(data):  # 12: the longest element header
            buffer.ensure(position + 12)
            data = buffer.data
            if position + 8 > len(data):
                if position == len(data):
                    return elements, position, encoding
                raise _NotCovered  # a truncated element header
        group, number = _TAG(data, position)
        tag = group << 16 | number
        if (group != 2) if meta else tag in PIXEL_TAGS:
            return elements, position, encoding
        raw_vr, length, start = _element_header(data, position, implicit, len(data))
        vr = None if raw_vr is None else _VALID_VR[raw_vr]
        if tag == 0xFFFEE00D or (group == 2 and not meta):
            raise _NotCovered
        if length == UNDEFINED:
            tag = BaseTag(tag)
            if meta or not _undefined_length_is_sequence(tag, raw_vr):
                raise _NotCovered
            vr = "SQ"
            buffer.ensure(len(data) + 1)  # the whole file: the sequence ends at a delimiter
            data = buffer.data
            if keep is not None and tag not in keep:
                position = _skip_sequence(data, start, implicit)
                continue
            stream = DicomBytesIO(data)
            stream.seek(start)
            sequence = read_sequence(stream, implicit, True, UNDEFINED, encoding)
            elements[tag] = DataElement(tag, vr, sequence, start, is_undefined_length=True)
            position = stream.tell()
            continue
        code = tag
        position = start + length
        if position > len(data):
            if not buffer.ensure(position):
                raise _NotCovered  # truncated value
            data = buffer.data
        if keep is not None and code not in keep and code != _SPECIFIC_CHARACTER_SET:
            continue
        tag = BaseTag(code)  # comparisons stay on the plain int: BaseTag's are Python-level
        value = data[start:position] if length else empty_value_for_VR(vr, raw=True)
        if code == _SPECIFIC_CHARACTER_SET:
            encoding = convert_encodings(convert_string(value or b"", True))  # as pydicom's reader does
        elements[tag] = RawDataElement(tag, vr, length, value, start, implicit, True)


def _skip_sequence(data: bytes, position: int, implicit: bool) -> int:
    """Where the undefined-length sequence whose items start at ``position`` ends (after its delimiter), from its
    raw items without building them; _NotCovered for anything unusual, which pydicom's reader then judges."""
    size = len(data)
    while True:
        if position + 8 > size:
            raise _NotCovered
        group, number, length = _ITEM(data, position)
        position += 8
        if group != 0xFFFE:
            raise _NotCovered
        if number == 0xE0DD:  # sequence delimiter
            return position
        if number != 0xE000:
            raise _NotCovered
        if length != UNDEFINED:
            position += length
            if position > size:
                raise _NotCovered
            continue
        while True:  # an undefined-length item: its elements up to the item delimiter
            if position + 8 > size:
                raise _NotCovered
            group, number = _TAG(data, position)
            if group == 0xFFFE:
                if number != 0xE00D:
                    raise _NotCovered
                position += 8
                break
            raw_vr, length, start = _element_header(data, position, implicit, size)
            if length == UNDEFINED:
                if not _undefined_length_is_sequence(group << 16 | number, raw_vr):
                    raise _NotCovered
                position = _skip_sequence(data, start, implicit)
            else:
                position = start + length
                if position > size:
                    raise _NotCovered


def read_partial_header(path: str | Path, keywords: Sequence[str]) -> FileDataset | None:
    """``read_header`` holding only the top-level elements of ``keywords`` (and the character set), each exactly
    as there; the others are stepped over, not built: an RTSTRUCT's contours or a SEG's per-frame groups cost
    more than everything an index needs from the file. None when the file needs pydicom's own reader."""
    keep = _keep_tags(tuple(keywords))
    with open(path, "rb") as handle:
        try:
            buffer = _Buffer(handle)
            meta_elements, position, implicit = _dataset_start(buffer)
            if buffer.ensure(position + 4) and _TAG(buffer.data, position)[0] < 8:
                raise _NotCovered  # a command set or stray group 0002/0004 elements
            elements, _, encoding = _walk(buffer, position, implicit=implicit, meta=False, keep=keep)
        except _NotCovered:
            return None
        file_meta = FileMetaDataset(meta_elements)
        file_meta.set_original_encoding(False, True, default_encoding)
        result = FileDataset(handle, elements, buffer.data[:128], file_meta, implicit, True)
    result.set_original_encoding(implicit, True, encoding)
    return result


@functools.lru_cache(maxsize=16)
def _keep_tags(keywords: tuple[str, ...]) -> frozenset[int]:
    return frozenset(int(_tag(keyword)[0]) for keyword in keywords)


# ------------------------------------------------------------------------------------------------ raw values
class _FileBytes:
    """A file's first bytes, read with one os.read, extended in large steps only when a header is longer: no
    buffered file object, which cost as much as the parse of a CT header."""

    __slots__ = ("data", "fd")

    def __init__(self, fd: int):
        self.fd = fd
        self.data = os.read(fd, FIRST_VALUES_BYTES)

    def ensure(self, end: int) -> bool:
        """Whether bytes up to ``end`` exist, reading on (from where the last read stopped) if needed."""
        while end > len(self.data):
            more = os.read(self.fd, max(end - len(self.data), 65536))
            if not more:
                return False
            self.data += more
        return True


def _values_start(buffer: _FileBytes) -> tuple[int, bool]:
    """Where the data set starts and whether it is implicit VR: ``_dataset_start`` without building the file
    meta's elements (only its transfer syntax matters here), with the same rules and the same refusals."""
    if buffer.data[128:132] != b"DICM":
        raise _NotCovered
    position, syntax = 132, None
    data = buffer.data
    size = len(data)
    while True:
        if position + 12 > size:
            buffer.ensure(position + 12)
            data = buffer.data
            size = len(data)
            if position + 8 > size:
                if position == size:
                    break
                raise _NotCovered
        group, number, vr, length = _EXPLICIT(data, position)
        if group != 2:
            break
        if vr in _SHORT_RAW_VR:
            start = position + 8
        elif vr in _LONG_RAW_VR:
            if position + 12 > size:
                raise _NotCovered
            length = _LONG(data, position + 8)[0]
            start = position + 12
        else:
            raise _NotCovered
        if length == UNDEFINED:
            raise _NotCovered
        position = start + length
        if position > size:
            if not buffer.ensure(position):
                raise _NotCovered
            data = buffer.data
            size = len(data)
        if number == 0x0010:
            syntax = data[start:position]
    if not syntax:
        raise _NotCovered
    implicit = _implicit_syntax(syntax)
    if implicit is None:
        raise _NotCovered
    if buffer.ensure(position + 6):
        raw_vr = buffer.data[position + 4:position + 6]
        if (not (0x40 < raw_vr[0] < 0x5B and 0x40 < raw_vr[1] < 0x5B)) != implicit:
            raise _NotCovered  # pydicom's VR-switch heuristic would apply
    return position, implicit


def _scan(buffer: _FileBytes, position: int, implicit: bool, wanted: dict[int, int], last: int) -> dict:
    """``_walk`` for a few values, as one tight loop: (VR, raw value) by key of the wanted elements, up to the last
    wanted tag; the same stops (pixel data, the end) and the same refusals (_NotCovered) as ``_walk``, and an
    undefined length before the last wanted tag is one. Implicit VR (most CT) has a loop of its own."""
    found: dict = {}
    data = buffer.data
    size = len(data)
    pixels = PIXEL_TAGS if last >= min(PIXEL_TAGS) else ()  # below them, ``tag > last`` stops first
    if implicit:
        item = _ITEM  # locals: this loop runs ~40 times per file
        while True:
            if position + 12 > size:
                buffer.ensure(position + 12)
                data = buffer.data
                size = len(data)
                if position + 8 > size:
                    if position == size:
                        return found
                    raise _NotCovered  # a truncated element header
            group, number, length = item(data, position)
            tag = group << 16 | number
            if tag > last or tag in pixels:
                return found
            if group == 2 or length == UNDEFINED or tag == 0xFFFEE00D:
                raise _NotCovered
            start = position + 8
            position = start + length
            if position > size:
                if not buffer.ensure(position):
                    raise _NotCovered  # truncated value
                data = buffer.data
                size = len(data)
            if tag in wanted:
                found[wanted[tag]] = (None, data[start:position])
    explicit_header, long_length, long_vrs, short_vrs = _EXPLICIT, _LONG, _LONG_RAW_VR, _SHORT_RAW_VR
    while True:
        if position + 12 > size:
            buffer.ensure(position + 12)
            data = buffer.data
            size = len(data)
            if position + 8 > size:
                if position == size:
                    return found
                raise _NotCovered
        group, number, vr, length = explicit_header(data, position)
        tag = group << 16 | number
        if tag > last or tag in pixels:
            return found
        if vr in long_vrs:
            if position + 12 > size:
                raise _NotCovered
            length = long_length(data, position + 8)[0]
            start = position + 12
        elif vr in short_vrs:
            start = position + 8
        else:
            raise _NotCovered  # UN, or not a VR
        if group == 2 or length == UNDEFINED or tag == 0xFFFEE00D:
            raise _NotCovered
        position = start + length
        if position > size:
            if not buffer.ensure(position):
                raise _NotCovered
            data = buffer.data
            size = len(data)
        if tag in wanted:
            found[wanted[tag]] = (vr, data[start:position])


# ------------------------------------------------------------------------------------------------ values
class Numbers(tuple):
    """A DS value as floats, keeping the strings the file holds (``texts``): positions copied into a derived
    object are written exactly as the source states them, as pydicom writes back what it read."""

    texts: tuple[str, ...]

    def __new__(cls, values, texts):
        numbers = super().__new__(cls, values)
        numbers.texts = tuple(texts)
        return numbers


_UNPARSED = object()
_TAGS: dict[str, tuple[BaseTag, str]] = {}
_ASCII_VRS = frozenset({"UI", "CS"})  # no character set applies to these


def _tag(keyword: str) -> tuple[BaseTag, str]:
    """The tag of ``keyword`` and its dictionary VR."""
    entry = _TAGS.get(keyword)
    if entry is None:
        tag = BaseTag(pydicom.datadict.tag_for_keyword(keyword))
        entry = _TAGS[keyword] = (tag, dictionary_VR(tag))
    return entry


def _parse(expected: str, raw: bytes):
    """A raw little-endian value of VR ``expected``: first string of UI/CS, Numbers for DS, int for US; None when
    empty; _UNPARSED for other VRs and anything pydicom should judge (an invalid number, a wrong length)."""
    if expected in _ASCII_VRS:
        if _LATIN_1:  # one byte, one character: split and strip the bytes, decode once (the codec's fast path)
            cut = raw.find(b"\\")
            return (raw if cut < 0 else raw[:cut]).strip(b" \x00").decode("latin-1") or None
        return raw.decode(default_encoding, errors="replace").split("\\")[0].strip(" \x00") or None
    if expected == "DS":
        text = (raw.decode("latin-1") if _LATIN_1 else raw.decode(default_encoding, errors="replace")).strip(" \x00")
        if not text:
            return None
        texts = [part.strip(" ") for part in text.split("\\")]
        try:
            return Numbers([float(part) for part in texts], texts)
        except ValueError:
            return _UNPARSED
    if expected == "US" and len(raw) == 2:
        return int.from_bytes(raw, "little")
    return None if not raw else _UNPARSED


def header_values(dataset: Dataset, keywords: Sequence[str]) -> list:
    """Values of ``keywords`` in ``dataset``, None where absent or empty: UI/CS as str (first value), DS as
    Numbers, US as int, others as pydicom's value (str of the first value for strings). Raw little-endian elements
    are parsed directly (tested equal to pydicom's conversion on every file in the test data); converted or
    unusual ones come from pydicom."""
    return [_value(dataset, keyword) for keyword in keywords]


def _value(dataset: Dataset, keyword: str):
    tag, expected = _tag(keyword)
    element = dataset.get_item(tag)
    if element is None:
        return None
    if isinstance(element, RawDataElement) and element.is_little_endian and element.VR in (None, expected) \
            and element.value is not None:
        value = _parse(expected, element.value)
        if value is not _UNPARSED:
            return value
    value = dataset[tag].value
    if value is None or value == "":
        return None
    if expected == "DS":
        values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        return Numbers([float(v) for v in values], [str(v) for v in values])
    if expected == "US":
        return int(value)
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else ""
    return str(value) or None


class NotRaw(Exception):
    """A raw sequence item holds something ``RawItem`` leaves to pydicom's conversion."""


class RawItem:
    """One item of a sequence, read from the sequence's raw bytes without building a dataset: pydicom's
    conversion of the 100s of image references of an RTSTRUCT (a Dataset per item) cost more than reading the
    rest of the file. Values as ``header_values`` gives them; NotRaw for anything pydicom should judge."""

    __slots__ = ("elements", "implicit")

    def __init__(self, elements: dict[int, tuple[bytes | None, bytes, bool]], implicit: bool):
        self.elements, self.implicit = elements, implicit

    def items(self, keyword: str) -> list[RawItem]:
        """The items of the sequence ``keyword`` (none when absent or empty)."""
        entry = self.elements.get(int(_tag(keyword)[0]))
        if entry is None:
            return []
        vr, raw, undefined = entry
        if vr not in (None, b"SQ"):
            raise NotRaw(keyword)
        try:
            return [RawItem(elements, self.implicit) for elements in _raw_items(raw, self.implicit, undefined)]
        except (_NotCovered, struct.error):
            raise NotRaw(keyword) from None

    def get(self, keyword: str):
        """``header_values`` of one keyword (UI, CS, DS, US); IS as int."""
        tag, expected = _tag(keyword)
        entry = self.elements.get(int(tag))
        if entry is None:
            return None
        vr, raw, _ = entry
        if vr is not None and vr != expected.encode("ascii"):
            raise NotRaw(keyword)
        if expected == "IS":
            text = raw.decode("latin-1").strip(" \x00")
            if not text:
                return None
            digits = text[1:] if text[0] in "+-" else text
            if not (digits.isascii() and digits.isdigit()):
                raise NotRaw(keyword)  # a multi-valued or decimal IS: pydicom's rules
            return int(text)
        value = _parse(expected, raw)
        if value is _UNPARSED:
            raise NotRaw(keyword)
        return value


def raw_items(dataset: Dataset, keyword: str) -> list[RawItem] | None:
    """The items of the sequence ``keyword`` of ``dataset`` as RawItem, when pydicom has not converted it yet (a
    defined-length little-endian sequence, as read_header leaves it); None when pydicom's conversion should be
    used."""
    element = dataset.get_item(_tag(keyword)[0])
    if not (isinstance(element, RawDataElement) and element.is_little_endian and element.VR in (None, "SQ")
            and isinstance(element.value, bytes) and element.length != UNDEFINED):
        return None
    try:
        return [RawItem(elements, element.is_implicit_VR)
                for elements in _raw_items(element.value, element.is_implicit_VR, False)]
    except (_NotCovered, struct.error):
        return None


def _raw_items(data: bytes, implicit: bool, undefined: bool) -> list[dict[int, tuple[bytes | None, bytes, bool]]]:
    """The items of a sequence value (``undefined``: up to its delimiter) as {tag: (raw VR or None, raw value,
    undefined length)}; nested sequences stay raw until asked for. _NotCovered for anything unusual."""
    items: list[dict] = []
    position, size = 0, len(data)
    while position < size:
        if position + 8 > size:
            raise _NotCovered
        group, number, length = _ITEM(data, position)
        position += 8
        if group != 0xFFFE:
            raise _NotCovered
        if number == 0xE0DD and undefined:
            return items
        if number != 0xE000:
            raise _NotCovered
        end = size if length == UNDEFINED else position + length
        if end > size:
            raise _NotCovered
        elements: dict = {}
        while True:
            if position == end and length != UNDEFINED:
                break
            if position + 8 > end:
                raise _NotCovered
            group, number = _TAG(data, position)
            if group == 0xFFFE:
                if number != 0xE00D or length != UNDEFINED:
                    raise _NotCovered
                position += 8
                break
            vr, value_length, start = _element_header(data, position, implicit, end)
            tag = group << 16 | number
            if value_length == UNDEFINED:
                if not _undefined_length_is_sequence(tag, vr):
                    raise _NotCovered
                position = _skip_sequence(data, start, implicit)
                elements[tag] = (vr, data[start:position], True)
            else:
                position = start + value_length
                if position > end:
                    raise _NotCovered
                elements[tag] = (vr, data[start:position], False)
        items.append(elements)
    if undefined:
        raise _NotCovered  # no sequence delimiter
    return items


def read_values(path: str | Path, keywords: Sequence[str]) -> tuple[list, set[str]] | None:
    """``header_values`` of the file's header, and which keywords it holds (empty or not), read straight from the
    file without building a dataset: for the slices of a series, of which only these values are needed. None when
    the file needs the full reader (pydicom's rules: see read_header), and then for any value this cannot parse or
    an undefined length before the last keyword."""
    keywords = tuple(keywords)
    entries, last, expected = _wanted_tags(keywords)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        buffer = _FileBytes(fd)
        position, implicit = _values_start(buffer)
        found = _scan(buffer, position, implicit, entries, last)
    except _NotCovered:
        return None
    finally:
        os.close(fd)
    values: list = [None] * len(keywords)
    for index, (raw_vr, raw) in found.items():
        vr, raw_expected = expected[index]
        if raw_vr is not None and raw_vr != raw_expected:
            return None
        if vr == "UI" and _LATIN_1:  # most of them: _parse's first branch, without the call
            cut = raw.find(b"\\")
            values[index] = (raw if cut < 0 else raw[:cut]).strip(b" \x00").decode("latin-1") or None
            continue
        value = _parse(vr, raw)
        if value is _UNPARSED:
            return None
        values[index] = value
    return values, {keywords[index] for index in found}
