"""The label table some label NIfTI files carry in a header extension (CIFTI/Caret ``<LabelTable>`` XML).

TotalSegmentator writes one into every multi-label output, so the file itself says which class each value is. Read
with the standard library (gzip + struct) from the header only: no NIfTI library and no voxel data needed.
"""

from __future__ import annotations

import gzip
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from DicomFidelityCommonLib.errors import InvalidInputFileError
from SegmentationQALib.labels.description import LabelDescription, LabelEntry

NIFTI1_HEADER_BYTES = 348
MAX_EXTENSION_BYTES = 64 << 20  # a label table is kilobytes; refuse absurd sizes from corrupt headers


def is_nifti_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti_label_table(path: str | Path) -> LabelDescription:
    """Names and colours from the file's embedded label table; an error naming the file when it has none."""
    path = Path(path)
    for text in _extension_texts(path):
        if "<LabelTable" in text:
            return parse_caret_label_table(text, str(path))
    raise InvalidInputFileError("this NIfTI has no embedded label table (CIFTI/Caret LabelTable extension); give "
                                "a label description file or a built-in map such as totalsegmentator:total", path)


def parse_caret_label_table(text: str, source: str = "") -> LabelDescription:
    start, end = text.find("<LabelTable"), text.find("</LabelTable>")
    if start < 0 or end < 0:
        raise InvalidInputFileError("no complete <LabelTable> element", source or None, "NIfTI extension")
    try:
        table = ElementTree.fromstring(text[start:end + len("</LabelTable>")])
    except ElementTree.ParseError as error:
        raise InvalidInputFileError(f"malformed label table XML ({error})", source or None, "NIfTI extension") from None
    entries = []
    for element in table.iter("Label"):
        try:
            label = int(element.get("Key", ""))
            rgb = tuple(int(round(float(element.get(c, "0.5")) * 255)) for c in ("Red", "Green", "Blue"))
        except ValueError:
            raise InvalidInputFileError(f"label attributes are not numeric: {element.attrib}", source or None,
                                        "NIfTI extension") from None
        if label == 0:
            continue
        name = (element.text or "").strip() or f"Segment_{label}"
        entries.append(LabelEntry(label_value=label, name=name, color=(rgb[0], rgb[1], rgb[2])))
    return LabelDescription(entries, source=source)


def _extension_texts(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(NIFTI1_HEADER_BYTES + 4)
            if len(header) < NIFTI1_HEADER_BYTES + 4:
                raise InvalidInputFileError("truncated NIfTI header", path)
            endian = _endianness(header, path)
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            if header[NIFTI1_HEADER_BYTES] == 0:
                return []
            texts, position = [], NIFTI1_HEADER_BYTES + 4
            while position + 8 <= vox_offset:
                size, _code = struct.unpack(endian + "ii", stream.read(8))
                if size < 8 or size > MAX_EXTENSION_BYTES:
                    raise InvalidInputFileError(f"header extension of invalid size {size}", path)
                texts.append(stream.read(size - 8).decode("utf-8", errors="replace"))
                position += size
            return texts
    except (OSError, EOFError, struct.error) as error:
        raise InvalidInputFileError(f"cannot read the NIfTI header ({error})", path) from None


def _endianness(header: bytes, path: Path) -> str:
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", header[:4])[0] == NIFTI1_HEADER_BYTES:
            return endian
    raise InvalidInputFileError("not a NIfTI-1 file (sizeof_hdr is not 348)", path)
