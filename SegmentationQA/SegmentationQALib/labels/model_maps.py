"""Built-in label maps of segmentation models: ``totalsegmentator:total``, ``moose:clin_ct_organs``, ...

The tables are data files we author (``maps/*.csv``, sources cited in each file's header): one row per label with the
class name, DICOM category/type/modifier/region codes and a display colour. Paired structures are one type code plus
a laterality modifier (SCT 7771000 Left / 24028007 Right), which is what lets left and right kidneys of two models be
matched by code instead of by spelling.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from DicomFidelityCommonLib.errors import InvalidInputFileError
from SegmentationQALib.labels.description import (
    AlgorithmType,
    LabelDescription,
    LabelEntry,
    UnknownLabelMapError,
    check_coded_term,
)
from SegmentationQALib.segmentation import CodedTerm, SegmentTerminology

MAPS_DIR = Path(__file__).with_name("maps")
TERM_FIELDS = {
    "category": "category",
    "type": "type",
    "modifier": "type_modifier",
    "region": "anatomic_region",
    "region_modifier": "anatomic_region_modifier",
}


@dataclass(frozen=True)
class ModelMap:
    """One built-in map: where its table is and which algorithm produced the labels."""

    name: str  # "<model>:<task>"
    file_name: str
    algorithm_name: str
    summary: str

    def to_json(self) -> dict:
        return {"name": self.name, "file": self.file_name, "algorithm_name": self.algorithm_name,
                "summary": self.summary}


MODEL_MAPS = {
    m.name: m for m in (
        ModelMap("totalsegmentator:total", "totalsegmentator_total.csv", "TotalSegmentator",
                 "TotalSegmentator v2 task 'total' (117 classes; also --fast)"),
        ModelMap("moose:clin_ct_organs", "moose_clin_ct_organs.csv", "MOOSE", "MOOSE clin_ct_organs (19 classes)"),
        ModelMap("moose:clin_ct_cardiac", "moose_clin_ct_cardiac.csv", "MOOSE", "MOOSE clin_ct_cardiac (13 classes)"),
        ModelMap("moose:clin_ct_digestive", "moose_clin_ct_digestive.csv", "MOOSE",
                 "MOOSE clin_ct_digestive (4 classes)"),
        ModelMap("moose:clin_ct_lungs", "moose_clin_ct_lungs.csv", "MOOSE", "MOOSE clin_ct_lungs (5 classes)"),
        ModelMap("moose:clin_ct_muscles", "moose_clin_ct_muscles.csv", "MOOSE", "MOOSE clin_ct_muscles (10 classes)"),
        ModelMap("moose:clin_ct_ribs", "moose_clin_ct_ribs.csv", "MOOSE", "MOOSE clin_ct_ribs (27 classes)"),
        ModelMap("moose:clin_ct_vertebrae", "moose_clin_ct_vertebrae.csv", "MOOSE",
                 "MOOSE clin_ct_vertebrae (28 classes)"),
    )
}
# Other spellings users type: the task names TotalSegmentator's --fast runs use, MOOSE sets without "clin_ct_".
ALIASES = {
    "totalsegmentator": "totalsegmentator:total",
    "totalsegmentator:total_fast": "totalsegmentator:total",
    "totalsegmentator:fast": "totalsegmentator:total",
    "totalsegmentator:v2": "totalsegmentator:total",
    **{f"moose:{name.split(':', 1)[1][len('clin_ct_'):]}": name for name in MODEL_MAPS if name.startswith("moose:")},
}


def available_model_maps() -> list[str]:
    return sorted(MODEL_MAPS)


def is_model_map_name(spec: str) -> bool:
    """Looks like ``<model>:<task>`` (not a path: no separators, and not a Windows drive letter)."""
    model, sep, task = spec.partition(":")
    return (bool(sep) and len(model) > 1 and model.isidentifier() and task.replace("-", "_").isidentifier()
            and "/" not in spec and "\\" not in spec) or spec.lower() in ALIASES


def resolve_model_map_name(spec: str) -> ModelMap:
    key = spec.strip().lower()
    key = ALIASES.get(key, key)
    if key not in MODEL_MAPS:
        raise UnknownLabelMapError(f"unknown built-in label map {spec!r}; "
                                   f"available: {', '.join(available_model_maps())}")
    return MODEL_MAPS[key]


def load_model_map(spec: str) -> LabelDescription:
    """The built-in map as a LabelDescription (a fresh copy; the parsed table is cached)."""
    model_map = resolve_model_map_name(spec)
    entries = _load_table(model_map.file_name, model_map.algorithm_name)
    return LabelDescription(list(entries), source=model_map.name)


@functools.cache
def _load_table(file_name: str, algorithm_name: str) -> tuple[LabelEntry, ...]:
    path = MAPS_DIR / file_name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InvalidInputFileError(f"built-in label map is missing from the installation ({error})", path) from None
    numbered = [(number, line) for number, line in enumerate(lines, start=1)
                if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(line for _, line in numbered)
    entries = []
    for (line_number, _), row in zip(numbered[1:], reader):
        where = f"line {line_number}"
        terms = {}
        for prefix, field_name in TERM_FIELDS.items():
            scheme, value, meaning = (row.get(f"{prefix}_scheme") or "", row.get(f"{prefix}_value") or "",
                                      row.get(f"{prefix}_meaning") or "")
            terms[field_name] = (check_coded_term(CodedTerm(value, scheme, meaning), str(path), f"{where}, {prefix}")
                                 if (scheme or value or meaning) else None)
        if terms["category"] is None or terms["type"] is None:
            raise InvalidInputFileError("category and type are required", path, where)
        try:
            label = int(row["label"])
            color = (int(row["r"]), int(row["g"]), int(row["b"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInputFileError("label and r, g, b must be integers", path, where) from None
        entries.append(LabelEntry(label_value=label, name=row["name"], color=color,
                                  terminology=SegmentTerminology(**terms), algorithm_type=AlgorithmType.AUTOMATIC,
                                  algorithm_name=algorithm_name))
    return tuple(entries)


def identify_model_map(description: LabelDescription) -> str | None:
    """The built-in map whose class names sit at exactly these label values (e.g. the label table TotalSegmentator
    embeds in its NIfTI output), or None. Every entry must agree, so a look-alike table is never taken for a model."""
    if not description.entries:
        return None
    pairs = {(e.label_value, e.name) for e in description.entries}
    for name in available_model_maps():
        model_map = MODEL_MAPS[name]
        table = {(e.label_value, e.name) for e in _load_table(model_map.file_name, model_map.algorithm_name)}
        if pairs <= table:
            return name
    return None


def enrich_from_model_map(description: LabelDescription, map_name: str) -> LabelDescription:
    """Fill what the description does not say (terminology, algorithm, colour) from a built-in map, for the entries
    whose label value and name both agree with it; what the description says is kept."""
    reference = {(e.label_value, e.name): e for e in load_model_map(map_name).entries}
    entries = []
    for entry in description.entries:
        known = reference.get((entry.label_value, entry.name))
        if known is not None:
            entry = dataclasses.replace(
                entry,
                color=entry.color if entry.color is not None else known.color,
                terminology=entry.terminology or known.terminology,
                algorithm_type=entry.algorithm_type or known.algorithm_type,
                algorithm_name=entry.algorithm_name or known.algorithm_name,
            )
        entries.append(entry)
    return LabelDescription(entries, source=description.source, series_attributes=dict(description.series_attributes))
