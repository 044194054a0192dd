"""dcmqi's segmentation metadata JSON (input of ``itkimage2segimage``, output of ``segimage2itkimage``).

Schema: https://github.com/QIICR/dcmqi/blob/master/doc/schemas/seg-schema.json. ``segmentAttributes`` is a list of
lists, one inner list per input label file, so an entry's ``layer`` is the index of its inner list. Top-level fields
(SeriesDescription, ContentCreatorName, ...) are kept in ``series_attributes`` so a file we read is written back whole.
"""

from __future__ import annotations

import json
from pathlib import Path

from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError
from SegmentationQALib.labels.description import (
    AlgorithmType,
    LabelDescription,
    LabelEntry,
    check_coded_term,
    write_text_atomically,
)
from SegmentationQALib.segmentation import CodedTerm, SegmentTerminology

SCHEMA_URL = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/seg-schema.json#"
TISSUE = CodedTerm("85756007", "SCT", "Tissue")  # dcmqi's default category and type
LO_MAX = 64  # SegmentLabel and SegmentAlgorithmName are LO: dcmqi rejects longer values

# our terminology field -> dcmqi key
CODE_KEYS = {
    "category": "SegmentedPropertyCategoryCodeSequence",
    "type": "SegmentedPropertyTypeCodeSequence",
    "type_modifier": "SegmentedPropertyTypeModifierCodeSequence",
    "anatomic_region": "AnatomicRegionSequence",
    "anatomic_region_modifier": "AnatomicRegionModifierSequence",
}


def looks_like_dcmqi(data) -> bool:
    return isinstance(data, dict) and "segmentAttributes" in data


def read_dcmqi_json(path: str | Path) -> LabelDescription:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputFileError(f"cannot read ({error})", path) from None
    except json.JSONDecodeError as error:
        raise InvalidInputFileError(f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
                                    path) from None
    return parse_dcmqi_json(data, str(path))


def parse_dcmqi_json(data: dict, source: str = "") -> LabelDescription:
    if not looks_like_dcmqi(data):
        raise InvalidInputFileError("not a dcmqi segmentation metadata JSON", source or None, "segmentAttributes")
    groups = data["segmentAttributes"]
    if not isinstance(groups, list) or not all(isinstance(group, list) for group in groups):
        raise InvalidInputFileError("must be a list of lists (one list per input label file)", source or None,
                                    "segmentAttributes")
    entries = []
    for layer, group in enumerate(groups):
        for index, item in enumerate(group):
            where = f"segmentAttributes[{layer}][{index}]"
            if not isinstance(item, dict):
                raise InvalidInputFileError("must be an object", source or None, where)
            label = item.get("labelID")
            if isinstance(label, bool) or not isinstance(label, int):
                raise InvalidInputFileError(f"labelID must be an integer, not {label!r}", source or None,
                                            f"{where}.labelID")
            if label == 0:
                continue  # a LABELMAP SEG read back by dcmqi may describe its background as segment 0
            entries.append(LabelEntry(
                label_value=label,
                name=str(item.get("SegmentLabel") or f"Segment_{label}"),
                color=_parse_rgb(item.get("recommendedDisplayRGBValue"), source, f"{where}.recommendedDisplayRGBValue"),
                terminology=_parse_terminology(item, source, where),
                algorithm_type=AlgorithmType.parse(item.get("SegmentAlgorithmType"), source,
                                                   f"{where}.SegmentAlgorithmType"),
                algorithm_name=item.get("SegmentAlgorithmName") or None,
                description=item.get("SegmentDescription") or None,
                layer=layer,
            ))
    series = {key: value for key, value in data.items() if key not in ("segmentAttributes", "@schema")}
    return LabelDescription(entries, source=source, series_attributes=series)


def dcmqi_json_from_description(description: LabelDescription) -> dict:
    """The dcmqi metadata dict: one inner list per layer, in layer order (the order of itkimage2segimage's inputs).

    Labels without terminology get dcmqi's own default (Tissue/Tissue) because the schema requires both codes."""
    data: dict = {"@schema": SCHEMA_URL}
    data.update(description.series_attributes)
    groups = []
    for layer in description.layers():
        group = []
        for entry in sorted((e for e in description.entries if e.layer == layer), key=lambda e: e.label_value):
            group.append(_segment_attributes(entry, description.source))
        groups.append(group)
    data["segmentAttributes"] = groups
    return data


def write_dcmqi_json(description: LabelDescription, path: str | Path) -> Path:
    text = json.dumps(dcmqi_json_from_description(description), indent=2, ensure_ascii=False)
    return write_text_atomically(path, text + "\n")


def _segment_attributes(entry: LabelEntry, source: str) -> dict:
    for field_name, value in (("SegmentLabel", entry.name), ("SegmentAlgorithmName", entry.algorithm_name)):
        if value is not None and len(value) > LO_MAX:
            raise DicomFidelityError(f"{field_name} {value!r} is longer than {LO_MAX} characters (DICOM LO)",
                                     source or None, f"label {entry.label_value}")
    algorithm_type = entry.algorithm_type or AlgorithmType.MANUAL
    if algorithm_type is not AlgorithmType.MANUAL and not entry.algorithm_name:
        raise DicomFidelityError(f"SegmentAlgorithmName is required when SegmentAlgorithmType is {algorithm_type.value}"
                                 " (DICOM type 1C; itkimage2segimage refuses the file)", source or None,
                                 f"label {entry.label_value}")
    item: dict = {"labelID": entry.label_value, "SegmentLabel": entry.name}
    if entry.description is not None:
        item["SegmentDescription"] = entry.description
    terminology = entry.terminology or SegmentTerminology(TISSUE, TISSUE)
    for field_name, key in CODE_KEYS.items():
        term = getattr(terminology, field_name)
        if term is not None:
            item[key] = {"CodeValue": term.value, "CodingSchemeDesignator": term.scheme, "CodeMeaning": term.meaning}
    item["SegmentAlgorithmType"] = algorithm_type.value
    if entry.algorithm_name is not None:
        item["SegmentAlgorithmName"] = entry.algorithm_name
    if entry.color is not None:
        item["recommendedDisplayRGBValue"] = list(entry.color)
    return item


def _parse_code(value, source: str, where: str) -> CodedTerm | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputFileError("must be an object with CodeValue, CodingSchemeDesignator, CodeMeaning",
                                    source or None, where)
    missing = [k for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning") if k not in value]
    if missing:
        raise InvalidInputFileError(f"missing {', '.join(missing)}", source or None, where)
    term = CodedTerm(str(value["CodeValue"]), str(value["CodingSchemeDesignator"]), str(value["CodeMeaning"]))
    return check_coded_term(term, source, where)


def _parse_terminology(item: dict, source: str, where: str) -> SegmentTerminology | None:
    parts = {name: _parse_code(item.get(key), source, f"{where}.{key}") for name, key in CODE_KEYS.items()}
    if parts["category"] is None and parts["type"] is None:
        if any(parts.values()):
            raise InvalidInputFileError("modifier or region given without category and type", source or None, where)
        return None
    for name in ("category", "type"):
        if parts[name] is None:
            raise InvalidInputFileError("required with the other code", source or None, f"{where}.{CODE_KEYS[name]}")
    return SegmentTerminology(**parts)


def _parse_rgb(value, source: str, where: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
        raise InvalidInputFileError(f"must be three numbers 0..255, not {value!r}", source or None, where)
    return int(round(value[0])), int(round(value[1])), int(round(value[2]))
