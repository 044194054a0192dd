"""ITK-SNAP label description files (Segmentation > Export/Import Label Descriptions).

Each data line is ``IDX R G B A VIS MSH "LABEL"``: colour 0..255, opacity 0..1, visibility and mesh flags, the name in
double quotes; ``#`` lines are comments and label 0 ("Clear Label") is the background. No terminology.
"""

from __future__ import annotations

import re
from pathlib import Path

from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError
from SegmentationQALib.labels.description import LabelDescription, LabelEntry, write_text_atomically

HEADER = """################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""
LINE = re.compile(r'^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(".*")\s*$')


def is_itksnap_text(text: str) -> bool:
    if "ITK-SnAP Label Description" in text[:2000] or "ITK-SNAP Label Description" in text[:2000]:
        return True
    data = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return bool(data) and all(LINE.match(line) for line in data[:5])


def read_itksnap_labels(path: str | Path) -> LabelDescription:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InvalidInputFileError(f"cannot read ({error})", path) from None
    return parse_itksnap_labels(text, str(path))


def parse_itksnap_labels(text: str, source: str = "") -> LabelDescription:
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"line {line_number}"
        match = LINE.match(line)
        if match is None:
            raise InvalidInputFileError(f'expected IDX R G B A VIS MSH "LABEL", got {line.strip()!r}', source or None,
                                        where)
        try:
            rgb = [int(float(match.group(i))) for i in (2, 3, 4)]
            float(match.group(5))
        except ValueError:
            raise InvalidInputFileError(f"colour or opacity is not numeric in {line.strip()!r}", source or None,
                                        where) from None
        if any(not 0 <= c <= 255 for c in rgb):
            raise InvalidInputFileError(f"colour {rgb} is not 0..255", source or None, where)
        label = int(match.group(1))
        if label == 0:
            continue  # "Clear Label"
        name = match.group(8)[1:-1]  # ITK-SNAP writes the name between quotes, unescaped
        entries.append(LabelEntry(label_value=label, name=name or f"Segment_{label}", color=(rgb[0], rgb[1], rgb[2])))
    return LabelDescription(entries, source=source)


def itksnap_text(description: LabelDescription) -> str:
    if len(description.layers()) > 1:
        raise DicomFidelityError("an ITK-SNAP label file describes one label volume", description.source or None)
    lines = [HEADER.rstrip("\n"), '    0     0    0    0        0  0  0    "Clear Label"']
    for entry in sorted(description.entries, key=lambda e: e.label_value):
        if '"' in entry.name:
            raise DicomFidelityError(f"name {entry.name!r} contains a quotation mark", description.source or None,
                                     f"label {entry.label_value}")
        r, g, b = entry.color if entry.color is not None else (128, 128, 128)
        lines.append(f'{entry.label_value:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{entry.name}"')
    return "\n".join(lines) + "\n"


def write_itksnap_labels(description: LabelDescription, path: str | Path) -> Path:
    return write_text_atomically(path, itksnap_text(description))
