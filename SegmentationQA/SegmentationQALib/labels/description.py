"""What each label value of a label volume means: name, colour, coded terminology, algorithm.

A label NIfTI says nothing about its labels; without a description a DICOM SEG gets "Segment_N" coded as "Tissue",
which no reader can match across models. ``LabelDescription`` is the one in-memory form every reader produces and
every writer consumes, so formats convert through it and ``apply_label_description`` is written once.
Colours are kept as 0..255 integers because every file format stores them so; that keeps round trips exact.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError
from DicomFidelityCommonLib.safe_write import atomic_output_file
from SegmentationQALib.segmentation import CodedTerm, LayeredSegmentation, Segment, SegmentTerminology

JSON_FORMAT_NAME = "dicomfidelity-label-description"  # marks our own to_json() files so the loader can recognise them
MAX_LISTED_LABELS = 20  # labels named in the "no description" warning before it says "and N more"

TERMINOLOGY_PARTS = ("category", "type", "type_modifier", "anatomic_region", "anatomic_region_modifier")


class UnknownLabelMapError(DicomFidelityError):
    """A built-in label map name (``totalsegmentator:<task>``, ``moose:<model>``) that we do not have."""


class AlgorithmType(str, enum.Enum):
    """DICOM SegmentAlgorithmType (the str values are the DICOM terms)."""

    MANUAL = "MANUAL"
    SEMIAUTOMATIC = "SEMIAUTOMATIC"
    AUTOMATIC = "AUTOMATIC"

    @classmethod
    def parse(cls, text: str | None, source: str = "",
              field_name: str = "SegmentAlgorithmType") -> AlgorithmType | None:
        if text is None or str(text).strip() == "":
            return None
        try:
            return cls(str(text).strip().upper())
        except ValueError:
            raise InvalidInputFileError(f"algorithm type {text!r} is not one of MANUAL, SEMIAUTOMATIC, AUTOMATIC",
                                        source or None, field_name) from None


@dataclass(frozen=True)
class LabelEntry:
    """One label value (in one input layer) and what it means. None means "not said": applying leaves it as is."""

    label_value: int
    name: str
    color: tuple[int, int, int] | None = None  # RGB 0..255
    terminology: SegmentTerminology | None = None
    algorithm_type: AlgorithmType | None = None
    algorithm_name: str | None = None
    description: str | None = None  # dcmqi SegmentDescription (free text); kept so dcmqi round trips are exact
    layer: int = 0  # input file index for descriptions of several label files (dcmqi's list of lists)

    def to_json(self) -> dict:
        return {
            "label_value": self.label_value,
            "layer": self.layer,
            "name": self.name,
            "color": list(self.color) if self.color is not None else None,
            "terminology": self.terminology.to_json() if self.terminology is not None else None,
            "algorithm_type": self.algorithm_type.value if self.algorithm_type is not None else None,
            "algorithm_name": self.algorithm_name,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "", where: str = "") -> LabelEntry:
        try:
            color = data.get("color")
            return cls(
                label_value=int(data["label_value"]),
                name=str(data["name"]),
                color=tuple(int(c) for c in color) if color is not None else None,
                terminology=terminology_from_json(data.get("terminology"), source, where),
                algorithm_type=AlgorithmType.parse(data.get("algorithm_type"), source, f"{where}.algorithm_type"),
                algorithm_name=data.get("algorithm_name"),
                description=data.get("description"),
                layer=int(data.get("layer", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputFileError(f"malformed label entry ({error})", source or None, where or None) from None


@dataclass
class LabelDescription:
    """Label value -> meaning for one label volume (or, with ``layer``, for the several files dcmqi takes)."""

    entries: list[LabelEntry]
    source: str = field(default="", compare=False)  # file or built-in name it came from, for messages
    series_attributes: dict = field(default_factory=dict)  # dcmqi's top-level fields (SeriesDescription, ...)

    def __post_init__(self):
        seen: dict[tuple[int, int], str] = {}
        for entry in self.entries:
            where = f"label {entry.label_value}"
            if not isinstance(entry.label_value, int) or isinstance(entry.label_value, bool) or entry.label_value < 1:
                raise InvalidInputFileError(f"label value must be a positive integer, not {entry.label_value!r}",
                                            self.source or None, where)
            if not entry.name or not entry.name.strip():
                raise InvalidInputFileError("label has an empty name", self.source or None, where)
            if entry.color is not None and (len(entry.color) != 3 or any(not 0 <= c <= 255 for c in entry.color)):
                raise InvalidInputFileError(f"colour {entry.color!r} is not three values 0..255", self.source or None,
                                            where)
            key = (entry.layer, entry.label_value)
            if key in seen:
                raise InvalidInputFileError(f"label {entry.label_value} is described twice ({seen[key]!r} and "
                                            f"{entry.name!r})", self.source or None, where)
            seen[key] = entry.name

    def __len__(self) -> int:
        return len(self.entries)

    def layers(self) -> list[int]:
        return sorted({entry.layer for entry in self.entries})

    def find(self, label_value: int, layer: int = 0) -> LabelEntry | None:
        """The entry for a label in a layer; falls back to the label value alone when it is unique across layers
        (a dcmqi JSON written for three one-label files still describes one three-label volume)."""
        exact = [e for e in self.entries if e.label_value == label_value and e.layer == layer]
        if exact:
            return exact[0]
        loose = [e for e in self.entries if e.label_value == label_value]
        return loose[0] if len(loose) == 1 else None

    def by_name(self) -> dict[str, LabelEntry]:
        return {entry.name: entry for entry in self.entries}

    def to_json(self) -> dict:
        return {
            "format": JSON_FORMAT_NAME,
            "version": 1,
            "source": self.source,
            "series_attributes": dict(self.series_attributes),
            "labels": [entry.to_json() for entry in sorted(self.entries, key=lambda e: (e.layer, e.label_value))],
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "") -> LabelDescription:
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT_NAME:
            raise InvalidInputFileError(f"not a {JSON_FORMAT_NAME} JSON", source or None, "format")
        labels = data.get("labels")
        if not isinstance(labels, list):
            raise InvalidInputFileError("'labels' must be a list", source or None, "labels")
        entries = [LabelEntry.from_json(item, source, f"labels[{i}]") for i, item in enumerate(labels)]
        return cls(entries, source=source or data.get("source", ""),
                   series_attributes=data.get("series_attributes") or {})


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Every writer here: the text is built first (errors raise before the file is touched), then renamed into
    place, so a failure never leaves a half-written description beside a label volume."""
    path = Path(path)
    with atomic_output_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def coded_term_from_json(data: dict | None, source: str = "", where: str = "") -> CodedTerm | None:
    if data is None:
        return None
    try:
        term = CodedTerm(value=str(data["value"]), scheme=str(data["scheme"]), meaning=str(data["meaning"]))
    except (KeyError, TypeError):
        raise InvalidInputFileError("coded term needs value, scheme and meaning", source or None,
                                    where or None) from None
    return check_coded_term(term, source, where)


def check_coded_term(term: CodedTerm, source: str = "", where: str = "") -> CodedTerm:
    """A coded term with all three parts: DICOM requires them and a partial code cannot be matched or displayed."""
    if not term.value.strip() or not term.scheme.strip() or not term.meaning.strip():
        raise InvalidInputFileError(f"coded term ({term.value!r}, {term.scheme!r}, {term.meaning!r}) has an empty "
                                    "part: CodeValue, CodingSchemeDesignator and CodeMeaning are all required",
                                    source or None, where or None)
    return term


def terminology_from_json(data: dict | None, source: str = "", where: str = "") -> SegmentTerminology | None:
    if data is None:
        return None
    parts = {name: coded_term_from_json(data.get(name), source, f"{where}.terminology.{name}")
             for name in TERMINOLOGY_PARTS}
    if parts["category"] is None or parts["type"] is None:
        raise InvalidInputFileError("terminology needs a category and a type", source or None, f"{where}.terminology")
    return SegmentTerminology(**parts)


def color_to_255(color: Iterable[float]) -> tuple[int, int, int]:
    """Segment colours (0..1 floats) to the 0..255 integers files store."""
    values = tuple(int(round(max(0.0, min(1.0, float(c))) * 255)) for c in color)
    return values[0], values[1], values[2]


def color_from_255(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return color[0] / 255.0, color[1] / 255.0, color[2] / 255.0


def apply_label_description(layered: LayeredSegmentation,
                            description: LabelDescription) -> tuple[LayeredSegmentation, list[str]]:
    """Name, colour, code and attribute each segment from the description (a new segmentation; arrays are shared).

    Labels the description does not cover keep what they had; they are reported in ONE warning, so a 117-class map
    on a 61-label file does not print 56 lines, and a wrong map (nothing matches) is obvious from one message."""
    segments: list[Segment] = []
    missing: list[str] = []
    multi_layer = len(layered.layers) > 1
    for segment in layered.segments:
        entry = description.find(segment.label_value, segment.layer)
        if entry is None:
            missing.append(f"{segment.layer}:{segment.label_value}" if multi_layer else str(segment.label_value))
            segments.append(segment)
            continue
        changes: dict = {"name": entry.name}
        if entry.color is not None:
            changes["color"] = color_from_255(entry.color)
        if entry.terminology is not None:
            changes["terminology"] = entry.terminology
        if entry.algorithm_type is not None:
            changes["algorithm_type"] = entry.algorithm_type.value
        if entry.algorithm_name is not None:
            changes["algorithm_name"] = entry.algorithm_name
        segments.append(dataclasses.replace(segment, **changes))
    warnings = []
    if missing:
        listed = ", ".join(missing[:MAX_LISTED_LABELS])
        more = f" and {len(missing) - MAX_LISTED_LABELS} more" if len(missing) > MAX_LISTED_LABELS else ""
        noun = "label has" if len(missing) == 1 else "labels have"
        origin = f" in {description.source}" if description.source else ""
        warnings.append(f"{len(missing)} {noun} no description{origin}: {listed}{more}")
    return LayeredSegmentation(layered.geometry, layered.layers, segments), warnings


def description_from_segmentation(layered: LayeredSegmentation, source: str = "") -> LabelDescription:
    """The reverse of ``apply_label_description``: what a segmentation says about its labels, for the writers."""
    entries = [
        LabelEntry(
            label_value=int(segment.label_value),
            name=segment.name,
            color=color_to_255(segment.color),
            terminology=segment.terminology,
            algorithm_type=AlgorithmType.parse(segment.algorithm_type, source),
            algorithm_name=segment.algorithm_name,
            layer=int(segment.layer),
        )
        for segment in layered.segments
    ]
    return LabelDescription(entries, source=source)


# SNOMED CT laterality, and the SNOMED-RT codes older SEGs (dcmqi's own test files among them) still carry
LATERALITY_CODES = {"left": {("7771000", "SCT"), ("G-A101", "SRT")}, "right": {("24028007", "SCT"), ("G-A100", "SRT")}}


def check_label_description(description: LabelDescription) -> list[str]:
    """Problems a reader of the exported SEG would trip over, one line each (empty when none):
    a name that says left/right without the laterality code (or with the opposite one), no terminology or only the
    generic 'Tissue', and two labels coded as the same structure (same type, modifier, region, region modifier) —
    which makes matching structures across segmentations by code ambiguous."""
    problems = []
    seen: dict[tuple, str] = {}
    for entry in description.entries:
        term = entry.terminology
        if term is None or term.is_generic_default():
            problems.append(f"label {entry.label_value} ({entry.name}): no terminology beyond the generic 'Tissue'")
            continue
        sides = {side for side in LATERALITY_CODES if side in entry.name.lower().replace("-", "_").replace(" ", "_")
                 .split("_")}
        codes = {(t.value, t.scheme) for t in (term.type_modifier, term.anatomic_region_modifier) if t is not None}
        coded = {side for side, lateral in LATERALITY_CODES.items() if lateral & codes}
        if len(sides) == 1:
            side = next(iter(sides))
            intrinsic = side in term.type.meaning.lower()  # "Left atrium", "Middle lobe of right lung"
            if coded - sides:
                problems.append(f"label {entry.label_value} ({entry.name}): name says {side} but the code says "
                                f"{', '.join(sorted(coded - sides))}")
            elif side not in coded and not intrinsic:
                problems.append(f"label {entry.label_value} ({entry.name}): name says {side} but no laterality "
                                "modifier (SCT 7771000 Left / 24028007 Right) is coded")
        key = tuple((t.value, t.scheme) if t is not None else None
                    for t in (term.type, term.type_modifier, term.anatomic_region, term.anatomic_region_modifier))
        if key in seen:
            problems.append(f"label {entry.label_value} ({entry.name}) has the same structure code as {seen[key]}")
        else:
            seen[key] = f"label {entry.label_value} ({entry.name})"
    return problems
