"""Which segment of each model is the same structure: by coded concept first, by normalised name second.

The concept is the property type plus its modifier (so left and right kidney stay apart); a laterality given only as
the anatomic region modifier counts as the modifier. When one model has several segments with the same concept, the
category, then the anatomic region, then the name tell them apart (for every model alike). A segment that carries
no code (or Slicer's generic 'Tissue' default) takes the code its name has in the built-in label maps
(SegmentationQALib.labels: TotalSegmentator, MOOSE), so 'kidney_left' meets 'Kidney, left' coded by another model.
Segments whose concept no other model shares, or that have no code at all, are matched by normalised name.
Whatever is still alone is listed per model: nothing is dropped silently.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from SegmentationQALib.segmentation import CodedTerm, LayeredSegmentation, Segment

_SIDE_WORDS = {"l": "left", "lt": "left", "links": "left", "gauche": "left", "r": "right", "rt": "right",
               "rechts": "right", "droit": "right", "droite": "right"}


class MatchMethod(enum.Enum):
    CODE = "code"
    NAME = "name"
    SINGLE = "single"  # present in one model only


@dataclass
class MatchedStructure:
    """One structure across models: the index of its segment in each model that has it."""

    key: str
    label: str
    code: str  # 'scheme:value[/modifier]' or '' when matched by name
    method: MatchMethod
    members: dict[str, int]  # model name -> segment index
    missing_in: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"key": self.key, "label": self.label, "code": self.code, "method": self.method.value,
                "members": dict(self.members), "missing_in": list(self.missing_in)}


@dataclass
class MatchingResult:
    """Structures present in at least two models, and per model the segments no other model has."""

    models: list[str]
    structures: list[MatchedStructure]
    unmatched: dict[str, list[str]]  # model -> segment names found in that model only

    def to_json(self) -> dict:
        return {"models": list(self.models), "structures": [s.to_json() for s in self.structures],
                "unmatched": {k: list(v) for k, v in self.unmatched.items()}}


def normalise_name(name: str) -> str:
    """Case, accents, separators, word order and side abbreviations do not matter: 'Kidney_L' == 'left kidney'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    words = [w for w in re.split(r"[^a-z0-9]+", text) if w]
    return " ".join(sorted(_SIDE_WORDS.get(w, w) for w in words))


def _term(term: CodedTerm | None) -> str:
    return f"{term.scheme}:{term.value}" if term is not None else ""


def concept_key(segment: Segment) -> str | None:
    """'scheme:type[/scheme:modifier]', or None when the segment carries no usable code; a segment without one
    takes the code its name has in the built-in label maps."""
    terminology = segment.terminology
    if terminology is None or terminology.is_generic_default() or not terminology.type.value:
        return _codes_by_name().get(normalise_name(segment.name))
    modifier = terminology.type_modifier or terminology.anatomic_region_modifier
    return _term(terminology.type) + (f"/{_term(modifier)}" if modifier is not None else "")


@functools.lru_cache(maxsize=1)
def _codes_by_name() -> dict[str, str]:
    """Normalised structure name -> concept key, from every built-in label map (names that two maps code
    differently are left out: a name is matched by code only when the maps agree)."""
    from SegmentationQALib.labels import available_model_maps, load_model_map

    codes: dict[str, set[str]] = defaultdict(set)
    for name in available_model_maps():
        for entry in load_model_map(name).entries:
            if entry.terminology is not None:
                key = concept_key(Segment(entry.name, 0, 1, terminology=entry.terminology))
                if key:
                    codes[normalise_name(entry.name)].add(key)
    return {name: next(iter(keys)) for name, keys in codes.items() if len(keys) == 1}


def _refined_key(segment: Segment, level: int) -> str:
    terminology = segment.terminology
    parts = [concept_key(segment) or ""]
    if level >= 1:
        parts.append(_term(terminology.category) if terminology is not None else "")
    if level >= 2:
        parts.append(_term(terminology.anatomic_region) if terminology is not None else "")
    if level >= 3:
        parts.append(normalise_name(segment.name))
    return "|".join(parts)


def match_structures(models: Sequence[tuple[str, LayeredSegmentation]]) -> MatchingResult:
    """Group the segments of all models into structures (see the module docstring for the rules)."""
    names = [name for name, _ in models]
    taken: dict[str, set[int]] = {name: set() for name in names}
    structures: list[MatchedStructure] = []

    # Pass 1: coded concepts, refined per concept until no model has two segments with the same key.
    by_concept: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for model, seg in models:
        for index, segment in enumerate(seg.segments):
            key = concept_key(segment)
            if key is not None:
                by_concept[key][model].append(index)
    for concept, per_model in by_concept.items():
        level = 0
        while level < 3 and any(
                len({_refined_key(seg_of(models, m).segments[i], level) for i in idx}) < len(idx)
                for m, idx in per_model.items()):
            level += 1
        groups: dict[str, dict[str, int]] = defaultdict(dict)
        for model, indices in per_model.items():
            segments = seg_of(models, model).segments
            for index in indices:
                groups[_refined_key(segments[index], level)].setdefault(model, index)
        for key, members in groups.items():
            if len(members) < 2:
                continue
            first_model, first_index = next(iter(members.items()))
            segment = seg_of(models, first_model).segments[first_index]
            structures.append(MatchedStructure(key=key, label=_display(segment), code=concept, method=MatchMethod.CODE,
                                               members=dict(members)))
            for model, index in members.items():
                taken[model].add(index)

    # Pass 2: normalised names among what is left.
    by_name: dict[str, dict[str, int]] = defaultdict(dict)
    for model, seg in models:
        for index, segment in enumerate(seg.segments):
            if index not in taken[model]:
                by_name[normalise_name(segment.name)].setdefault(model, index)
    for key, members in by_name.items():
        if len(members) < 2 or not key:
            continue
        first_model, first_index = next(iter(members.items()))
        segment = seg_of(models, first_model).segments[first_index]
        structures.append(MatchedStructure(key=f"name:{key}", label=segment.name, code=concept_key(segment) or "",
                                           method=MatchMethod.NAME, members=dict(members)))
        for model, index in members.items():
            taken[model].add(index)

    for structure in structures:
        structure.missing_in = [m for m in names if m not in structure.members]
    unmatched = {model: [s.name for i, s in enumerate(seg.segments) if i not in taken[model]] for model, seg in models}
    counts: dict[str, int] = defaultdict(int)
    for structure in structures:
        counts[structure.label] += 1
    for structure in structures:  # the same concept told apart by category, region or name: say so in the label
        if counts[structure.label] > 1:
            model, index = next(iter(structure.members.items()))
            structure.label = f"{structure.label} ({seg_of(models, model).segments[index].name})"
    structures.sort(key=lambda s: s.label.lower())
    return MatchingResult(names, structures, unmatched)


def seg_of(models: Sequence[tuple[str, LayeredSegmentation]], name: str) -> LayeredSegmentation:
    for model, seg in models:
        if model == name:
            return seg
    raise KeyError(name)


def _display(segment: Segment) -> str:
    terminology = segment.terminology
    if terminology is None:
        return segment.name
    modifier = terminology.type_modifier or terminology.anatomic_region_modifier
    meaning = terminology.type.meaning + (f" {modifier.meaning.lower()}" if modifier is not None else "")
    return meaning or segment.name
