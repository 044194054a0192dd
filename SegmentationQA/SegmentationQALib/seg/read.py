"""Read a DICOM SEG (BINARY, LABELMAP, FRACTIONAL) into a LayeredSegmentation in patient space."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from DicomFidelityCommonLib.dicom.series import check_orientation, check_pixel_spacing
from DicomFidelityCommonLib.errors import GeometryError, InvalidInputFileError, MissingTagError, WrongModalityError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.memory import require_memory, voxel_bytes
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DicomFidelityCommonLib.runtime import with_paused_gc
from SegmentationQALib.seg.describe import segment_from_description
from SegmentationQALib.seg.fast_read import expected_pixel_bytes, load_binary_fast, load_labelmap_fast
from SegmentationQALib.seg.options import SegmentReport, SegReader
from SegmentationQALib.seg.stream_read import READ_ERRORS, SegStream, open_seg_stream
from SegmentationQALib.segmentation import LayeredSegmentation, LayerPlacer

SEGMENTATION_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}
FRACTIONAL_THRESHOLD = 0.5
SEGMENTATION_TYPES = ("BINARY", "LABELMAP", "FRACTIONAL")


@dataclass
class LoadedSeg:
    """A SEG read back: the segments on their grid plus what the file said about them."""

    layered: LayeredSegmentation
    seg_type: str
    frame_of_reference_uid: str | None
    referenced_series_uid: str | None
    series_description: str = ""
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def segment_reports(self) -> list[SegmentReport]:
        counts = self.layered.voxel_counts()
        return [SegmentReport(number, s.name, count, s.segment_id)
                for number, (s, count) in enumerate(zip(self.layered.segments, counts), start=1)]


def read_seg_file(path: str | Path) -> pydicom.Dataset:
    """The whole SEG as a pydicom Dataset, after checking it is one and that its pixel data is complete.

    Native files (explicit/implicit VR little endian, deflated) are read through the streaming reader, so a
    deflated file's pixel data is held once rather than inside a copy of the whole inflated dataset.
    """
    stream = open_seg_header(path)
    if stream is None:
        return _read_whole(path)
    with stream:
        check_stream_pixel_length(stream, path)
        ds = stream.dataset()
    check_pixel_data_length(ds, path)
    return ds


def _read_whole(path: str | Path) -> pydicom.Dataset:
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except READ_ERRORS as exc:
        raise InvalidInputFileError(f"not a readable DICOM file ({exc})", path) from exc
    check_is_seg(ds, path)
    check_seg_header(ds, path)
    check_pixel_data_length(ds, path)
    return ds


def check_is_seg(ds: pydicom.Dataset, path) -> None:
    if "SOPClassUID" not in ds:
        raise InvalidInputFileError("corrupt or not a DICOM object (no SOPClassUID)", path)
    if str(ds.get("SOPClassUID", "")) not in SEGMENTATION_SOP_CLASSES:
        raise WrongModalityError(f"not a DICOM Segmentation (Modality {ds.get('Modality', '?')}, "
                                 f"SOPClassUID {ds.get('SOPClassUID', '?')})", path, "SOPClassUID")


def check_seg_header(ds: pydicom.Dataset, path) -> None:
    """Refuse, before any pixel is read or allocated, a header that describes no volume of segments."""
    kind = str(ds.get("SegmentationType", ""))
    if kind not in SEGMENTATION_TYPES:
        raise InvalidInputFileError(f"SegmentationType {kind!r} is not one of {', '.join(SEGMENTATION_TYPES)}", path,
                                    "SegmentationType")
    if not ds.get("SegmentSequence"):
        raise MissingTagError("no segment is described (SegmentSequence missing or empty)", path, "SegmentSequence")
    for keyword in ("Rows", "Columns", "NumberOfFrames"):
        value = ds.get(keyword)
        if value is None or int(value) < 1:
            raise InvalidInputFileError(f"{keyword} is {value}, not a positive number", path, keyword)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        raise MissingTagError("required attribute is missing", path, "PerFrameFunctionalGroupsSequence")
    frames, rows, columns = int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
    # the frames unpacked to one byte a pixel (LABELMAP: 1 or 2), and the volume they are placed in
    require_memory(voxel_bytes((frames, rows, columns), 2 * (2 if int(ds.get("BitsAllocated") or 1) > 8 else 1)),
                   f"{frames} segmentation frames of {rows}x{columns}", path)
    shared = ds.get("SharedFunctionalGroupsSequence")
    groups = shared[0] if shared else None
    measures = groups.get("PixelMeasuresSequence") if groups is not None else None
    if measures and "PixelSpacing" in measures[0]:
        check_pixel_spacing(measures[0].PixelSpacing, path)
    planes = groups.get("PlaneOrientationSequence") if groups is not None else None
    if planes and "ImageOrientationPatient" in planes[0]:
        check_orientation(planes[0].ImageOrientationPatient, path)


def open_seg_header(path: str | Path) -> SegStream | None:
    """A checked SEG header with its pixel data still unread (seg_stream_read), or None for encapsulated syntaxes."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputFileError("no such file", path)
    stream = open_seg_stream(path)
    if stream is None:
        return None
    try:
        check_is_seg(stream.ds, path)
        check_seg_header(stream.ds, path)
    except BaseException:
        stream.close()
        raise
    return stream


def check_stream_pixel_length(stream: SegStream, path) -> None:
    """The PixelData a streamed file declares (and, for a plain file, what it still holds) covers every frame."""
    if stream.pixel_length is None:
        return
    _check_pixel_bytes(stream.ds, stream.available_pixel_bytes(), path)


def read_seg_dataset(path: str | Path, ds: pydicom.Dataset | None = None) -> hd.seg.Segmentation:
    """The SEG as a highdicom Segmentation (the reference path)."""
    ds = ds if ds is not None else read_seg_file(path)
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # malformed sequences surface as many types
        raise InvalidInputFileError(f"cannot read segmentation ({exc})", path) from exc


def check_pixel_data_length(seg, path) -> None:
    """Native (uncompressed) pixel data must hold every frame: catch truncated files with a clear message."""
    if seg.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in seg:
        return
    _check_pixel_bytes(seg, len(seg.PixelData), path)


def _check_pixel_bytes(seg, actual: int, path) -> None:
    frames = int(seg.get("NumberOfFrames", 1))
    expected = expected_pixel_bytes(seg)
    if actual < expected:
        raise InvalidInputFileError(f"pixel data truncated: {actual} bytes for {frames} frames of "
                                    f"{seg.Rows}x{seg.Columns} ({expected} bytes expected)",
                                    path, "PixelData")


def geometry_from_hd_volume(volume) -> VolumeGeometry:
    """highdicom's Volume affine maps (axis0, axis1, axis2) = (slice, row, column); ours maps (column, row, slice)."""
    affine = np.asarray(volume.affine, dtype=float)[:, [2, 1, 0, 3]]
    return VolumeGeometry(tuple(volume.spatial_shape), affine)


@with_paused_gc
def load_seg(path: str | Path, progress: ProgressCallback | None = None,
             reader: SegReader = SegReader.BULK) -> LoadedSeg:
    """Read any patient-space SEG. Fractional segments are thresholded at 0.5 (with a warning).

    SegReader.BULK uses the bulk BINARY / LABELMAP readers (seg.fast_read) where they apply, highdicom otherwise;
    SegReader.HIGHDICOM always highdicom. Both give the same voxels and metadata (tested on every sample SEG).
    For native files (plain or deflated) the fast readers take the pixel data from the file piece by piece
    (seg_stream_read), never all of it at once.
    """
    progress = progress or no_progress
    start = time.perf_counter()
    if reader == SegReader.BULK:
        stream = open_seg_header(path)
        if stream is not None:  # native: the pixel data is read piece by piece while decoding
            with stream:
                check_stream_pixel_length(stream, path)
                timings = {"read": time.perf_counter() - start}
                loaded = _load_fast(stream.ds, stream, progress, start, timings)
                if loaded is not None:
                    return loaded
                ds = stream.dataset()  # nothing consumed yet: the rest of the file, for highdicom
            check_pixel_data_length(ds, path)
        else:
            ds = _read_whole(path)
            timings = {"read": time.perf_counter() - start}
            loaded = _load_fast(ds, None, progress, start, timings)
            if loaded is not None:
                return loaded
    else:
        ds = read_seg_file(path)
        timings = {"read": time.perf_counter() - start}
    seg = read_seg_dataset(path, ds)
    warnings: list[str] = []
    seg_type = seg.segmentation_type.value
    coordinate_system = getattr(seg, "coordinate_system", None)
    if seg.get("FrameOfReferenceUID") is None or coordinate_system is None or coordinate_system.value != "PATIENT":
        space = coordinate_system.value if coordinate_system is not None else "none"
        raise GeometryError(f"SEG has no patient-space geometry (coordinate system: {space}); "
                            "slide and projection SEGs cannot be loaded as volumes", path)
    progress(0.3, "decoding frames")
    t = time.perf_counter()
    items = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    try:
        if seg_type == "LABELMAP":
            volume = seg.get_volume(combine_segments=True, allow_missing_positions=True, skip_overlap_checks=True)
        else:
            volume = seg.get_volume(combine_segments=False, allow_missing_positions=True,
                                    rescale_fractional=True, dtype=np.float32 if seg_type == "FRACTIONAL" else np.uint8)
    except (ValueError, RuntimeError) as exc:
        raise GeometryError(f"segmentation frames do not form a regular volume ({exc})", path) from exc
    timings["decode"] = time.perf_counter() - t
    geometry = geometry_from_hd_volume(volume)
    t = time.perf_counter()
    if seg_type == "LABELMAP":
        labels = np.asarray(volume.array)
        present = sorted(n for n in items if n > 0)
        segments = [segment_from_description(items[n], 0, n) for n in present]
        layered = LayeredSegmentation(geometry, [labels], segments)
    else:
        array = np.asarray(volume.array)
        numbers = list(seg.segment_numbers) if hasattr(seg, "segment_numbers") else sorted(items)
        if seg_type == "FRACTIONAL":
            warnings.append(f"FRACTIONAL segmentation thresholded at {FRACTIONAL_THRESHOLD} of the maximum value")
            masks = (array[..., i] >= FRACTIONAL_THRESHOLD for i in range(array.shape[-1]))
        else:
            masks = (array[..., i] > 0 for i in range(array.shape[-1]))
        placer = LayerPlacer(geometry.shape)
        placement = [placer.place(mask) for mask in masks]
        layers = placer.finish()
        segments = [segment_from_description(items[n], layer, value) for n, (layer, value) in zip(numbers, placement)]
        layered = LayeredSegmentation(geometry, layers, segments)
    timings["assemble"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    progress(1.0, "done")
    return LoadedSeg(layered, seg_type, str(seg.FrameOfReferenceUID), _referenced_series(seg),
                     str(seg.get("SeriesDescription", "")), warnings, timings)


def _load_fast(ds, pixels, progress, start: float, timings: dict) -> LoadedSeg | None:
    """The fast readers' result (None, with no pixel byte consumed, where they do not apply)."""
    t = time.perf_counter()
    layered = load_binary_fast(ds, progress, pixels) or load_labelmap_fast(ds, progress, pixels)
    if layered is None:
        return None
    timings["decode_assemble"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    progress(1.0, "done")
    return LoadedSeg(layered, str(ds.SegmentationType), str(ds.FrameOfReferenceUID),
                     _referenced_series(ds), str(ds.get("SeriesDescription", "")), [], timings)


def _referenced_series(ds) -> str | None:
    if "ReferencedSeriesSequence" in ds and ds.ReferencedSeriesSequence:
        return str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
    return None
