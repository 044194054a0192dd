"""Slicer colour tables: the CSV table (``.csv`` / ``.labels.csv``, with terminology) and the text table (``.ctbl``).

Format as Slicer reads and writes it (Libs/MRML/Core/vtkMRMLColorTableStorageNode.cxx, Docs/developer_guide/modules/
colors.md):
- CSV: header ``LabelValue,Name,Color_R,Color_G,Color_B,Color_A`` then 15 terminology columns
  ``{Category,Type,TypeModifier,Region,RegionModifier}_{CodingScheme,CodeValue,CodeMeaning}``; colours 0..255;
  ``Color_A`` and ``Name`` optional; empty terminology cells mean "none", but category and type come together.
  This is the only Slicer colour table that carries terminology, so it is what we write by default.
- Text (``.ctbl``/``.txt``): ``#`` comment lines, then ``id name r g b a`` separated by blanks. Slicer stores spaces
  in names as ``_`` and turns every ``_`` back into a space on reading (a lone ``_`` is the empty name); we do the
  same so a file means here what it means in Slicer. It has no terminology column.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError
from SegmentationQALib.labels.description import (
    LabelDescription,
    LabelEntry,
    check_coded_term,
    write_text_atomically,
)
from SegmentationQALib.segmentation import CodedTerm, SegmentTerminology

COLOR_COLUMNS = ("Color_R", "Color_G", "Color_B", "Color_A")
# Slicer's column prefix -> our SegmentTerminology field
TERM_PREFIXES = {
    "Category": "category",
    "Type": "type",
    "TypeModifier": "type_modifier",
    "Region": "anatomic_region",
    "RegionModifier": "anatomic_region_modifier",
}
TERM_COLUMNS = [f"{prefix}_{part}" for prefix in TERM_PREFIXES for part in ("CodingScheme", "CodeValue", "CodeMeaning")]
CSV_HEADER = ["LabelValue", "Name", *COLOR_COLUMNS, *TERM_COLUMNS]


def is_slicer_csv_text(text: str) -> bool:
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    return "LabelValue" in [cell.strip().strip('"') for cell in first.replace("\t", ",").split(",")]


def is_ctbl_text(text: str) -> bool:
    """Slicer text colour table: a '# Color table file' header, or data lines of int, name, 4 numbers."""
    lines = [line for line in text.splitlines() if line.strip()]
    if any(line.startswith("# Color table file") for line in lines[:3]):
        return True
    data = [line for line in lines if not line.startswith("#")]
    if not data:
        return False
    for line in data[:5]:
        tokens = line.split()
        if len(tokens) not in (5, 6) or not _is_int(tokens[0]) or not all(_is_number(t) for t in tokens[2:]):
            return False
    return True


def read_slicer_color_table(path: str | Path) -> LabelDescription:
    """Either table kind, chosen by extension (``.csv``/``.tsv`` vs ``.ctbl``/``.txt``), else by content."""
    path = Path(path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv") or (suffix not in (".ctbl", ".txt") and is_slicer_csv_text(text)):
        return parse_slicer_csv(text, str(path), delimiter="\t" if suffix == ".tsv" else ",")
    return parse_ctbl(text, str(path))


def parse_slicer_csv(text: str, source: str = "", delimiter: str = ",") -> LabelDescription:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter)
    rows = list(reader)
    if not rows:
        raise InvalidInputFileError("empty colour table", source or None)
    header = [cell.strip() for cell in rows[0]]
    if "LabelValue" not in header:
        raise InvalidInputFileError("no 'LabelValue' column in the header (line 1)", source or None, "LabelValue")
    column = {name: index for index, name in enumerate(header)}
    entries = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue

        def cell(name: str, row=row) -> str:
            index = column.get(name)
            return row[index].strip() if index is not None and index < len(row) else ""

        where = f"line {line_number}"
        value_text = cell("LabelValue")
        if not _is_int(value_text) or int(value_text) < 0:
            raise InvalidInputFileError(f"LabelValue {value_text!r} is not a non-negative integer", source or None,
                                        where)
        label = int(value_text)
        if label == 0:
            continue  # background
        color = []
        for name in COLOR_COLUMNS[:3]:
            component = cell(name)
            if component == "":
                color = None
                break
            if not _is_number(component) or not 0 <= float(component) <= 255:
                raise InvalidInputFileError(f"{name} {component!r} is not a number 0..255", source or None,
                                            f"{where}, {name}")
            color.append(int(round(float(component))))
        entries.append(LabelEntry(
            label_value=label,
            name=cell("Name") or f"Segment_{label}",
            color=(color[0], color[1], color[2]) if color else None,
            terminology=_terminology_from_cells(cell, source, where),
        ))
    return LabelDescription(entries, source=source)


def parse_ctbl(text: str, source: str = "") -> LabelDescription:
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            if line.startswith("# Color procedural file"):
                raise InvalidInputFileError("a procedural colour file, not a label table", source or None,
                                            f"line {line_number}")
            continue
        tokens = line.split()
        where = f"line {line_number}"
        if len(tokens) < 5 or not _is_int(tokens[0]):
            raise InvalidInputFileError(f"expected 'id name r g b [a]', got {line.strip()!r}", source or None, where)
        if not all(_is_number(t) for t in tokens[2:5]):
            raise InvalidInputFileError(f"colour is not numeric in {line.strip()!r}", source or None, where)
        label = int(tokens[0])
        if label == 0:
            continue  # background
        rgb = [int(round(min(255.0, max(0.0, float(t))))) for t in tokens[2:5]]  # Slicer clamps
        name = "" if tokens[1] == "_" else tokens[1].replace("_", " ").strip("'")
        entries.append(LabelEntry(label_value=label, name=name or f"Segment_{label}", color=(rgb[0], rgb[1], rgb[2])))
    return LabelDescription(entries, source=source)


def slicer_csv_text(description: LabelDescription) -> str:
    """The CSV colour table (single layer: label values must be unique)."""
    _require_single_layer(description)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for entry in sorted(description.entries, key=lambda e: e.label_value):
        if '"' in entry.name:
            raise DicomFidelityError(f"name {entry.name!r} contains a quotation mark, which Slicer's CSV reader "
                                     "cannot read", description.source or None, f"label {entry.label_value}")
        color = list(entry.color) if entry.color is not None else ["", "", ""]
        alpha = 255 if entry.color is not None else ""
        terms = []
        for field_name in TERM_PREFIXES.values():
            term = getattr(entry.terminology, field_name) if entry.terminology is not None else None
            terms += [term.scheme, term.value, term.meaning] if term is not None else ["", "", ""]
        writer.writerow([entry.label_value, entry.name, *color, alpha, *terms])
    return out.getvalue()


def ctbl_text(description: LabelDescription, file_name: str = "null") -> str:
    """The text colour table (no terminology; spaces in names become ``_`` as Slicer writes them)."""
    _require_single_layer(description)
    lines = [f"# Color table file {file_name}", f"# {max((e.label_value for e in description.entries), default=0) + 1}"
             " values"]
    for entry in sorted(description.entries, key=lambda e: e.label_value):
        name = entry.name.replace(" ", "_") or "_"
        r, g, b = entry.color if entry.color is not None else (128, 128, 128)
        lines.append(f"{entry.label_value} {name} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


def write_slicer_color_table(description: LabelDescription, path: str | Path) -> Path:
    """``.ctbl``/``.txt`` write the text table; anything else (``.csv``, ``.labels.csv``) the CSV with terminology."""
    path = Path(path)
    if path.suffix.lower() in (".ctbl", ".txt"):
        text = ctbl_text(description, str(path))
    else:
        text = slicer_csv_text(description)
    return write_text_atomically(path, text)


def _terminology_from_cells(cell, source: str, where: str) -> SegmentTerminology | None:
    parts = {}
    for prefix, field_name in TERM_PREFIXES.items():
        scheme, value, meaning = (cell(f"{prefix}_CodingScheme"), cell(f"{prefix}_CodeValue"),
                                  cell(f"{prefix}_CodeMeaning"))
        if not (scheme or value or meaning):
            parts[field_name] = None
            continue
        parts[field_name] = check_coded_term(CodedTerm(value, scheme, meaning), source, f"{where}, {prefix}_*")
    if parts["category"] is None and parts["type"] is None:
        if any(parts.values()):
            raise InvalidInputFileError("modifier or region given without category and type", source or None, where)
        return None
    for prefix in ("Category", "Type"):
        if parts[TERM_PREFIXES[prefix]] is None:
            raise InvalidInputFileError(f"{prefix}_* columns are empty but the other code is given (Slicer needs "
                                        "both)", source or None, f"{where}, {prefix}_*")
    return SegmentTerminology(**parts)


def _require_single_layer(description: LabelDescription) -> None:
    if len(description.layers()) > 1:
        raise DicomFidelityError("a colour table describes one label volume; this description has "
                                 f"{len(description.layers())} layers (write one table per layer)",
                                 description.source or None)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as error:
        raise InvalidInputFileError(f"cannot read ({error})", path) from None


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
