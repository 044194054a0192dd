"""Write a LayeredSegmentation as a DICOM SEG that references an image series (highdicom builds the object, whole
or as a one-plane template the streamed writer completes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO

import highdicom as hd
import numpy as np
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from DicomFidelityCommonLib.dicom.sanitize import sanitized
from DicomFidelityCommonLib.dicom.series import ImageSeries
from DicomFidelityCommonLib.errors import (
    DicomFidelityError,
    EmptySegmentationError,
    FrameOfReferenceMismatchError,
    GeometryError,
    OverlapError,
)
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DicomFidelityCommonLib.runtime import with_paused_gc
from DicomFidelityCommonLib.safe_write import atomic_output_file
from SegmentationQALib.seg.census import segmentation_census
from SegmentationQALib.seg.describe import segment_description
from SegmentationQALib.seg.options import (
    Compression,
    SegExportOptions,
    SegExportResult,
    SegmentReport,
    SegType,
    SegWriter,
    default_compression,
    default_deflate_level,
)
from SegmentationQALib.seg.stream_write import encode_header, write_with_tail
from SegmentationQALib.seg.streamed import (
    ENCAPSULATED_SYNTAXES,
    StreamTail,
    fast_path_supported,
    finish_seg,
    iterate_tail,
    template_pixels,
)
from SegmentationQALib.segmentation import LayeredSegmentation

# highdicom >= 0.28 validates the character set it copies from the source (an empty one fails); older ones
# (Slicer 5.12 bundles 0.27) take no such argument.
CHARACTER_SET_ARGUMENT = (
    {"specific_character_set": "ISO_IR 192"}
    if tuple(int(p) for p in hd.__version__.split(".")[:2]) >= (0, 28) else {}
)

def choose_writer(layered: LayeredSegmentation, seg_type: SegType, transfer_syntax_uid: str,
                  requested: SegWriter | None = None) -> SegWriter:
    """The one place a writer is chosen: the streamed writer wherever it builds the object (native pixel data,
    uncompressed or deflated; RLE Lossless LABELMAP), highdicom for the other encapsulated syntaxes (JPEG-LS,
    JPEG 2000) or when asked for."""
    if requested == SegWriter.HIGHDICOM:
        return SegWriter.HIGHDICOM
    supported = fast_path_supported(layered, seg_type.value.upper(), transfer_syntax_uid)
    return SegWriter.STREAMED if supported else SegWriter.HIGHDICOM


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


def _build(layered, reference, options, seg_type, descriptions, transfer_syntax, fast,
           first_source) -> hd.seg.Segmentation:
    """highdicom's Segmentation: of one template plane on the fast path, else of every frame. ``first_source`` is
    the first reference header with invalid patient and study values fixed (highdicom copies them from it)."""
    if fast:
        pixels, sources = template_pixels(layered, seg_type.value.upper()), [first_source]
    else:
        pixels = build_pixel_input(layered, seg_type)
        sources = [first_source] + [sanitized(source)[0] for source in reference.datasets[1:]]
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


def write_encapsulated(seg: hd.seg.Segmentation, tail: StreamTail, handle: BinaryIO, transfer_syntax: str,
                       spliced: dict[int, bytes]) -> None:
    """The streamed writer's SEG with encapsulated pixel data: the header as explicit VR little endian (as every
    encapsulated syntax is), then the tail as it is (its frames already encoded, by finish_seg)."""
    seg.file_meta.TransferSyntaxUID = transfer_syntax
    meta, body = encode_header(seg, spliced)
    handle.write(meta)
    handle.write(body)
    for part in iterate_tail(tail):
        handle.write(part)


@with_paused_gc
def write_seg(
    layered: LayeredSegmentation,
    reference: ImageSeries,
    output_path: str | Path,
    options: SegExportOptions | None = None,
    progress: ProgressCallback | None = None,
    writer: SegWriter | None = None,
) -> SegExportResult:
    """Export ``layered`` (already on the reference grid) as one DICOM SEG file, atomically.

    ``writer`` None lets choose_writer pick (the streamed writer wherever it applies); SegWriter.HIGHDICOM forces
    highdicom's full build, the reference the streamed writer is tested against.
    """
    options = options or SegExportOptions()
    progress = progress or no_progress
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
    requested, chosen_compression = options.seg_type, None
    if options.seg_type == SegType.AUTO:  # the readers the user must reach choose what auto leaves open
        requested, chosen_compression = options.compatibility.choose(SegType.AUTO, overlapping)
    seg_type = resolve_seg_type(requested, overlapping, str(output_path))
    compression = options.compression or chosen_compression or default_compression(seg_type)
    if not compression.supports(seg_type):
        raise DicomFidelityError(f"compression {compression.value!r} is not available for {seg_type.value.upper()} "
                                 "SEG (1-bit frames); use 'deflate', 'none' or 'jpeg2000'", output_path)
    timings["analyse"] = time.perf_counter() - start
    progress(0.1, "describing segments")

    descriptions, reports, shared = [], [], {}
    for number, (segment, count) in enumerate(zip(layered.segments, counts), start=1):
        description, segment_warnings = segment_description(number, segment, options, shared)
        descriptions.append(description)
        reports.append(SegmentReport(number, str(description.SegmentLabel), count, segment.segment_id,
                                     segment_warnings))
        warnings.extend(segment_warnings)

    first_source, source_warnings = sanitized(reference.datasets[0], "the reference series")
    warnings.extend(source_warnings)
    progress(0.2, "encoding frames")
    t = time.perf_counter()
    transfer_syntax = compression.transfer_syntax_uid
    fast = choose_writer(layered, seg_type, transfer_syntax, writer) == SegWriter.STREAMED
    seg = _build(layered, reference, options, seg_type, descriptions, transfer_syntax, fast, first_source)
    finished = finish_seg(seg, layered, reference, census, overlapping, transfer_syntax) if fast else None
    if finished is not None:
        seg, tail, spliced = finished
    elif fast:  # a layout the streamed writer does not build: highdicom builds all of it
        fast = False
        seg = _build(layered, reference, options, seg_type, descriptions, transfer_syntax, fast, first_source)
    timings["build"] = time.perf_counter() - t
    progress(0.5 if fast else 0.8, "writing file")
    t = time.perf_counter()
    output_path = Path(output_path)
    with atomic_output_file(output_path) as tmp:
        if fast and transfer_syntax in ENCAPSULATED_SYNTAXES:
            with open(tmp, "wb") as handle:
                write_encapsulated(seg, tail, handle, transfer_syntax, spliced)
        elif fast:
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
        writer=(SegWriter.STREAMED if fast else SegWriter.HIGHDICOM).value,
    )
