"""Write a LayeredSegmentation as a DICOM SEG that references an image series (highdicom builds the object)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from DicomFidelityCommonLib.dicom.series import ImageSeries
from DicomFidelityCommonLib.errors import (
    DicomFidelityError,
    EmptySegmentationError,
    FrameOfReferenceMismatchError,
    GeometryError,
    OverlapError,
)
from DicomFidelityCommonLib.runtime import with_paused_gc
from DicomFidelityCommonLib.safe_write import atomic_output_file
from SegmentationQALib.seg.census import segmentation_census
from SegmentationQALib.seg.options import (
    Compression,
    SegExportOptions,
    SegExportResult,
    SegmentReport,
    SegType,
    default_compression,
    default_deflate_level,
)
from SegmentationQALib.seg.stream_write import write_with_tail
from SegmentationQALib.seg.streamed import fast_path_supported, finish_seg, iterate_tail, template_pixels
from SegmentationQALib.segmentation import CodedTerm, LayeredSegmentation, Segment

ProgressCallback = Callable[[float, str], None]

# Used when a segment has no terminology: what Slicer itself assigns to a new segment.
DEFAULT_CATEGORY = CodedTerm("85756007", "SCT", "Tissue")
DEFAULT_TYPE = CodedTerm("85756007", "SCT", "Tissue")
MAX_LO_LENGTH = 64
# highdicom >= 0.28 validates the character set it copies from the source (an empty one fails); older ones
# (Slicer 5.12 bundles 0.27) take no such argument.
CHARACTER_SET_ARGUMENT = (
    {"specific_character_set": "ISO_IR 192"}
    if tuple(int(p) for p in hd.__version__.split(".")[:2]) >= (0, 28) else {}
)
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
    return hd.color.CIELabColor.from_rgb(*rgb) if hasattr(hd.color.CIELabColor, "from_rgb") else hd.color.CIELabColor(*rgb)


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


def resolve_seg_type(requested: SegType, overlapping: bool, path_hint: str | None = None) -> SegType:
    if requested == SegType.LABELMAP and overlapping:
        raise OverlapError("LABELMAP was requested but segments overlap; use BINARY (or auto) to keep every segment",
                           path_hint)
    if requested == SegType.AUTO:
        return SegType.BINARY if overlapping else SegType.LABELMAP
    return requested


def check_reference(layered: LayeredSegmentation, reference: ImageSeries, options: SegExportOptions) -> None:
    if not layered.geometry.is_close(reference.geometry, atol_mm=1e-2):
        raise GeometryError(
            f"segmentation grid {layered.geometry.shape} does not match the reference series grid "
            f"{reference.geometry.shape}; resample it onto the reference first", reference.paths[0])
    expected = options.expected_frame_of_reference_uid
    actual = reference.frame_of_reference_uid
    if expected and actual and expected != actual:
        raise FrameOfReferenceMismatchError(
            f"segmentation is in frame of reference {expected} but the reference series is in {actual}",
            reference.paths[0], "FrameOfReferenceUID")


def build_pixel_input(layered: LayeredSegmentation, seg_type: SegType) -> np.ndarray:
    """What highdicom takes: segment numbers per voxel when segments do not overlap, else one mask per segment."""
    if seg_type == SegType.LABELMAP or not layered.has_overlap():
        labelmap, _ = layered.as_single_labelmap()
        return labelmap
    stack = np.zeros((*layered.geometry.shape, len(layered.segments)), dtype=bool)
    for index in range(len(layered.segments)):
        stack[..., index] = layered.mask(index)
    return stack


def _build(layered, reference, options, seg_type, descriptions, transfer_syntax, fast) -> hd.seg.Segmentation:
    """highdicom's Segmentation: of one template plane on the fast path, else of every frame."""
    if fast:
        pixels, sources = template_pixels(layered, seg_type.value.upper()), reference.datasets[:1]
    else:
        pixels, sources = build_pixel_input(layered, seg_type), list(reference.datasets)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues(seg_type.value.upper()),
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=options.series_number,
        sop_instance_uid=hd.UID(),
        instance_number=options.instance_number,
        manufacturer=options.manufacturer,
        manufacturer_model_name=options.manufacturer_model_name,
        software_versions=options.software_versions,
        device_serial_number=options.device_serial_number,
        content_label=options.content_label,
        content_description=options.content_description,
        content_creator_name=options.content_creator_name,
        series_description=options.series_description,
        # highdicom does not write Deflated: it builds explicit VR little endian, which pydicom then deflates
        transfer_syntax_uid=ExplicitVRLittleEndian if fast or transfer_syntax == DeflatedExplicitVRLittleEndian
        else transfer_syntax,
        omit_empty_frames=True,
        **CHARACTER_SET_ARGUMENT,
    )
    # UTF-8 always: segment names may be in any language, and some sources carry an empty, invalid value.
    seg.SpecificCharacterSet = "ISO_IR 192"
    return seg


@with_paused_gc
def write_seg(
    layered: LayeredSegmentation,
    reference: ImageSeries,
    output_path: str | Path,
    options: SegExportOptions | None = None,
    progress: ProgressCallback | None = None,
    fast: bool = True,
) -> SegExportResult:
    """Export ``layered`` (already on the reference grid) as one DICOM SEG file, atomically.

    ``fast`` streams native (uncompressed or deflated) frames through seg_fast_write; otherwise, and for the
    encapsulated syntaxes, highdicom builds every frame. Both write the same object (tested).
    """
    options = options or SegExportOptions()
    progress = progress or (lambda fraction, message: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    check_reference(layered, reference, options)

    census = segmentation_census(layered)
    counts = census.voxel_counts(layered)
    kept = [i for i, count in enumerate(counts) if count > 0]
    warnings = [f"segment {layered.segments[i].name!r} is empty and was not exported" for i in range(len(counts))
                if counts[i] == 0]
    if not kept:
        raise EmptySegmentationError("nothing to export: every segment is empty", output_path)
    layered = layered.subset(kept)
    counts = [counts[i] for i in kept]
    overlapping = layered.has_overlap()
    seg_type = resolve_seg_type(options.seg_type, overlapping, str(output_path))
    compression = options.compression or default_compression(seg_type)
    if not compression.supports(seg_type):
        raise DicomFidelityError(f"compression {compression.value!r} is not available for {seg_type.value.upper()} "
                                 "SEG (1-bit frames); use 'deflate', 'none' or 'jpeg2000'", output_path)
    timings["analyse"] = time.perf_counter() - start
    progress(0.1, "describing segments")

    descriptions, reports, shared = [], [], {}
    for number, (segment, count) in enumerate(zip(layered.segments, counts), start=1):
        description, segment_warnings = segment_description(number, segment, options, shared)
        descriptions.append(description)
        reports.append(SegmentReport(number, str(description.SegmentLabel), count, segment.segment_id, segment_warnings))
        warnings.extend(segment_warnings)

    progress(0.2, "encoding frames")
    t = time.perf_counter()
    transfer_syntax = compression.transfer_syntax_uid
    fast = fast and fast_path_supported(layered, seg_type.value.upper(), transfer_syntax)
    seg = _build(layered, reference, options, seg_type, descriptions, transfer_syntax, fast)
    finished = finish_seg(seg, layered, reference, census, overlapping) if fast else None
    if finished is not None:
        seg, tail, spliced = finished
    elif fast:  # a layout the streamed writer does not build: highdicom builds all of it
        fast = False
        seg = _build(layered, reference, options, seg_type, descriptions, transfer_syntax, fast)
    timings["build"] = time.perf_counter() - t
    progress(0.5 if fast else 0.8, "writing file")
    t = time.perf_counter()
    output_path = Path(output_path)
    with atomic_output_file(output_path) as tmp:
        if fast:
            with open(tmp, "wb") as handle:
                write_with_tail(seg, iterate_tail(tail), handle, deflated=compression == Compression.DEFLATE,
                                level=options.deflate_level or default_deflate_level(seg_type, tail.nbytes),
                                spliced=spliced, tail_bytes=tail.nbytes,
                                progress=lambda fraction: progress(0.5 + 0.45 * fraction, "writing frames"))
        else:
            seg.file_meta.TransferSyntaxUID = transfer_syntax
            seg.save_as(tmp, enforce_file_format=True)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    progress(1.0, "done")
    return SegExportResult(
        seg_path=str(output_path),
        seg_type=seg_type.value,
        compression=compression.value,
        transfer_syntax_uid=str(transfer_syntax),
        segments=reports,
        reference_series_uid=reference.series_instance_uid,
        warnings=warnings,
        timings=timings,
        file_size_bytes=output_path.stat().st_size,
        writer="streamed" if fast else "highdicom",
    )
