"""Segment descriptions, both ways: our Segment -> highdicom SegmentDescription (what we write) and a SegmentSequence
item -> Segment (what we read). Names, colours (CIELab), coded terminology and algorithm identification."""

from __future__ import annotations

import highdicom as hd

from SegmentationQALib.seg.options import SegExportOptions
from SegmentationQALib.segmentation import CodedTerm, Segment, SegmentTerminology

# Used when a segment has no terminology: what Slicer itself assigns to a new segment.
DEFAULT_CATEGORY = CodedTerm("85756007", "SCT", "Tissue")
DEFAULT_TYPE = CodedTerm("85756007", "SCT", "Tissue")
MAX_LO_LENGTH = 64
ALGORITHM_FAMILY = hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence")  # CID 7162


def _code(term: CodedTerm, shared: dict | None = None) -> hd.sr.CodedConcept:
    """The code for ``term``; with ``shared``, one object per distinct term across an export's segments (cheaper
    to build, and encoded once: seg_fast_write.encode_segment_sequence). Never modified once made."""
    key = (term.value, term.scheme, term.meaning[:MAX_LO_LENGTH])
    if shared is not None and key in shared:
        return shared[key]
    code = hd.sr.CodedConcept(value=term.value, scheme_designator=term.scheme, meaning=term.meaning[:MAX_LO_LENGTH])
    if shared is not None:
        shared[key] = code
    return code


def rgb_to_cielab(color) -> hd.color.CIELabColor:
    rgb = tuple(int(round(min(1.0, max(0.0, float(c))) * 255)) for c in color[:3])
    return (hd.color.CIELabColor.from_rgb(*rgb) if hasattr(hd.color.CIELabColor, "from_rgb")
            else hd.color.CIELabColor(*rgb))


def segment_description(number: int, segment: Segment, options: SegExportOptions,
                        shared: dict | None = None) -> tuple[hd.seg.SegmentDescription, list[str]]:
    """Highdicom description of one segment, and the warnings its defaults caused. ``shared`` (one dict per
    export) lets segments with the same codes or algorithm share those items."""
    warnings = []
    label = segment.name or f"Segment {number}"
    if len(label) > MAX_LO_LENGTH:
        warnings.append(f"segment {number} name truncated to {MAX_LO_LENGTH} characters")
        label = label[:MAX_LO_LENGTH]
    terminology = segment.terminology
    if terminology is None or terminology.is_generic_default():  # Slicer's placeholder means "not chosen"
        warnings.append(f"segment {number} ({label!r}) has no terminology; exported as {DEFAULT_TYPE.meaning} "
                        f"({DEFAULT_TYPE.scheme} {DEFAULT_TYPE.value})")
        category, type_, modifier, region, region_modifier = DEFAULT_CATEGORY, DEFAULT_TYPE, None, None, None
    else:
        category, type_ = terminology.category, terminology.type
        modifier, region = terminology.type_modifier, terminology.anatomic_region
        region_modifier = terminology.anatomic_region_modifier
    algorithm_type = hd.seg.SegmentAlgorithmTypeValues((segment.algorithm_type or options.algorithm_type).upper())
    algorithm = None
    if algorithm_type != hd.seg.SegmentAlgorithmTypeValues.MANUAL:
        name = (segment.algorithm_name or options.algorithm_name)[:MAX_LO_LENGTH]
        key = ("algorithm", name, options.algorithm_version)
        algorithm = shared.get(key) if shared is not None else None
        if algorithm is None:
            algorithm = hd.AlgorithmIdentificationSequence(name=name, version=options.algorithm_version,
                                                           family=ALGORITHM_FAMILY)
            if shared is not None:
                shared[key] = algorithm
    # A code that gets a modifier below is this segment's own: shared items are never modified.
    type_code = _code(type_, None if modifier is not None else shared)
    region_code = None
    if region is not None:
        region_code = _code(region, None if region_modifier is not None else shared)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=_code(category, shared),
        segmented_property_type=type_code,
        algorithm_type=algorithm_type,
        algorithm_identification=algorithm,
        anatomic_regions=[region_code] if region_code is not None else None,
        display_color=rgb_to_cielab(segment.color),
    )
    if modifier is not None:
        # highdicom has no argument for the type modifier; it is a plain sub-sequence of the property type.
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _code(modifier, shared)]
    if region_code is not None and region_modifier is not None:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_code(region_modifier, shared)]
    return description, warnings


def _term(item) -> CodedTerm:
    return CodedTerm(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))


def segment_from_description(item, layer: int, label_value: int) -> Segment:
    """Name, colour, terminology and algorithm of one SegmentSequence item."""
    category = _term(item.SegmentedPropertyCategoryCodeSequence[0])
    type_item = item.SegmentedPropertyTypeCodeSequence[0]
    modifier = None
    if "SegmentedPropertyTypeModifierCodeSequence" in type_item and type_item.SegmentedPropertyTypeModifierCodeSequence:
        modifier = _term(type_item.SegmentedPropertyTypeModifierCodeSequence[0])
    region = region_modifier = None
    if "AnatomicRegionSequence" in item and item.AnatomicRegionSequence:
        region_item = item.AnatomicRegionSequence[0]
        region = _term(region_item)
        if "AnatomicRegionModifierSequence" in region_item and region_item.AnatomicRegionModifierSequence:
            region_modifier = _term(region_item.AnatomicRegionModifierSequence[0])
    color = (0.5, 0.5, 0.5)
    if "RecommendedDisplayCIELabValue" in item:
        rgb = hd.color.CIELabColor.from_dicom_value(list(item.RecommendedDisplayCIELabValue)).to_rgb()
        color = tuple(float(c) / 255.0 for c in rgb)
    algorithm_name = str(item.get("SegmentAlgorithmName", "") or "") or None  # what highdicom writes (Type 1C)
    if algorithm_name is None and item.get("SegmentationAlgorithmIdentificationSequence"):
        algorithm_name = str(item.SegmentationAlgorithmIdentificationSequence[0].get("AlgorithmName", "")) or None
    number = int(item.SegmentNumber)
    return Segment(
        name=str(item.get("SegmentLabel", f"Segment {number}")),
        layer=layer,
        label_value=label_value,
        color=color,
        terminology=SegmentTerminology(category, _term(type_item), modifier, region, region_modifier),
        segment_id=f"Segment_{number}",
        algorithm_type=str(item.get("SegmentAlgorithmType", "MANUAL")),
        algorithm_name=algorithm_name,
    )
