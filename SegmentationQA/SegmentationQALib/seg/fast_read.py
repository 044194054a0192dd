"""Fast path for reading uncompressed BINARY SEGs into label layers.

highdicom decodes every 1-bit frame into its own array and builds one full volume per segment; with hundreds of
segments that is most of the load time and memory. Here the bit-packed pixel data is unpacked one segment at a
time, only the rows and columns a segment touches are compared and written, and segments that the file declares
non-overlapping go straight into one layer. Anything unusual (compressed BINARY, per-frame orientation, irregular
slice positions, fractional) returns None, and the caller uses the highdicom path.

The pixel bytes come from ``pixels``: a seg_stream_read.SegStream (native files, plain or deflated, read piece by
piece: one segment's frames, or a batch of LABELMAP frames) or, when None, the dataset's PixelData in memory.
Frames not grouped by segment, or 1-bit frames that do not end on a byte, are read all at once.
"""

from __future__ import annotations

import queue
import re
import threading

import numpy as np
from pydicom.dataset import Dataset

from DicomFidelityCommonLib.errors import GeometryError, InvalidInputFileError
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from SegmentationQALib.seg.describe import segment_from_description
from SegmentationQALib.seg.stream_read import frames_dtype
from SegmentationQALib.segmentation import LayeredSegmentation

POSITION_TOLERANCE_MM = 1e-3
LABELMAP_BATCH_BYTES = 8 << 20  # LABELMAP frames read per piece when streaming


class InMemoryPixels:
    """The SegStream reading interface over a PixelData value already in memory (zero-copy slices)."""

    def __init__(self, ds: Dataset):
        self.ds = ds
        self._view = memoryview(ds.PixelData)
        self.consumed = 0

    def read(self, size: int) -> memoryview:
        data = self._view[self.consumed: self.consumed + size]
        self.consumed += size
        return data

    def read_array(self, size: int) -> np.ndarray:
        return np.frombuffer(self.read(size), dtype=np.uint8)

    def dataset(self) -> Dataset:
        return self.ds


def expected_pixel_bytes(ds: Dataset) -> int:
    """Bytes of native pixel data NumberOfFrames frames need."""
    frames = int(ds.get("NumberOfFrames", 1))
    return (frames * int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) * int(ds.get("SamplesPerPixel", 1))
            + 7) // 8


def _segment_ranges(frame_segments: np.ndarray, numbers: list[int]) -> list[tuple[int, int]] | None:
    """Per segment in SegmentSequence order, its (first, end) frame range, if the frames are grouped that way."""
    rank = {number: index for index, number in enumerate(numbers)}
    if len(rank) != len(numbers):
        return None
    ranks = np.fromiter((rank.get(int(n), -1) for n in frame_segments), dtype=np.int64, count=len(frame_segments))
    if len(ranks) and (ranks.min() < 0 or np.any(np.diff(ranks) < 0)):
        return None
    bounds = np.searchsorted(ranks, np.arange(len(numbers) + 1))
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(len(numbers))]


def _shared_item(ds: Dataset, sequence: str):
    shared = ds.get("SharedFunctionalGroupsSequence")
    if not shared or sequence not in shared[0] or not shared[0][sequence]:
        return None
    return shared[0][sequence][0]


# Explicit VR little endian encodings of ImagePositionPatient (0020,0032) DS and ReferencedSegmentNumber
# (0062,000B) US, the two per-frame attributes the layout needs.
_POSITION = re.compile(rb"\x20\x00\x32\x00DS(..)", re.DOTALL)
_SEGMENT = re.compile(rb"\x62\x00\x0b\x00US\x02\x00(..)", re.DOTALL)


def bulk_frame_attributes(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Frame positions and segment numbers scanned straight from the still-unparsed per-frame sequence bytes.

    pydicom would build a Dataset per frame item (most of the load time for thousands of frames). Only used
    when the sequence is still raw, explicit VR little endian, and yields exactly one value of each per frame.
    """
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is not False or little is not True:
        return None
    element = ds.get_item("PerFrameFunctionalGroupsSequence")
    raw = getattr(element, "value", None)
    if not isinstance(raw, (bytes, bytearray)):
        return None
    frames = int(ds.get("NumberOfFrames", 0))
    positions = []
    for match in _POSITION.finditer(raw):
        length = int.from_bytes(match.group(1), "little")
        text = raw[match.end(): match.end() + length].decode("ascii", "replace").strip(" \x00")
        values = text.split("\\")
        if len(values) != 3:
            return None
        positions.append([float(v) for v in values])
    segments = [int.from_bytes(m.group(1), "little") for m in _SEGMENT.finditer(raw)]
    binary = str(ds.get("SegmentationType", "")) != "LABELMAP"  # LABELMAP frames name no segment
    if len(positions) != frames or len(segments) != (frames if binary else 0):
        return None
    return np.asarray(positions, dtype=float), np.asarray(segments if binary else [0] * frames, dtype=np.int64)


def frame_layout(ds: Dataset):
    """Per-frame segment numbers and slice indices, and the regular grid they lie on; None if not regular."""
    orientation_item = _shared_item(ds, "PlaneOrientationSequence")
    measures = _shared_item(ds, "PixelMeasuresSequence")
    if orientation_item is None or measures is None or "PixelSpacing" not in measures:
        return None
    orientation = np.asarray(orientation_item.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    bulk = bulk_frame_attributes(ds)
    if bulk is not None:
        positions, segment_numbers = bulk
    else:
        frames = ds.PerFrameFunctionalGroupsSequence
        positions = np.empty((len(frames), 3))
        segment_numbers = np.empty(len(frames), dtype=np.int64)
        binary = str(ds.get("SegmentationType", "")) != "LABELMAP"
        for index, item in enumerate(frames):
            if "PlanePositionSequence" not in item or (binary and "SegmentIdentificationSequence" not in item):
                return None
            positions[index] = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
            segment_numbers[index] = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) if binary else 0
    _check_frames(ds, positions, segment_numbers)
    distances = positions @ normal
    unique = np.unique(np.round(distances, 4))
    if unique.size > 1:
        step = float(np.min(np.diff(unique)))
        indices = np.rint((distances - unique[0]) / step).astype(np.int64)
        if np.max(np.abs(indices * step - (distances - unique[0]))) > max(POSITION_TOLERANCE_MM, 1e-3 * step):
            return None
    else:
        step = float(measures.get("SpacingBetweenSlices") or measures.get("SliceThickness") or 1.0)
        indices = np.zeros(len(positions), dtype=np.int64)
    _check_distinct_positions(ds, segment_numbers, indices)
    origin = positions[int(np.argmin(distances))]
    expected = origin[None, :] + (indices * step)[:, None] * normal[None, :]
    if np.max(np.abs(expected - positions)) > 1e-2:  # frames shifted in-plane: not one grid
        return None
    affine = affine_from_dicom(origin, orientation, measures.PixelSpacing, step)
    geometry = VolumeGeometry((int(indices.max()) + 1, int(ds.Rows), int(ds.Columns)), affine)
    return geometry, segment_numbers, indices


def _check_distinct_positions(ds: Dataset, segment_numbers: np.ndarray, indices: np.ndarray) -> None:
    """Two frames of one segment on one plane: one would overwrite the other (and the slice step derived from the
    positions would be wrong), so the file is refused rather than loaded with voxels lost."""
    keys = segment_numbers.astype(np.int64) * (int(indices.max()) + 1) + indices
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(np.diff(keys[order]) == 0)
    if repeated.size:
        first, second = sorted((int(order[repeated[0]]), int(order[repeated[0] + 1])))
        whose = f" of segment {int(segment_numbers[first])}" if str(ds.get("SegmentationType")) != "LABELMAP" else ""
        raise GeometryError(f"frames {first + 1} and {second + 1}{whose} share one plane position (duplicate "
                            "frames would overwrite each other)", getattr(ds, "filename", None),
                            "ImagePositionPatient")


def _check_frames(ds: Dataset, positions: np.ndarray, segment_numbers: np.ndarray) -> None:
    """Per-frame values that no reader can place: a frame count the header contradicts, a position that is not a
    number, a frame of a segment the SegmentSequence does not describe."""
    path = getattr(ds, "filename", None)
    frames = int(ds.get("NumberOfFrames", 0))
    if len(positions) != frames:
        raise InvalidInputFileError(f"NumberOfFrames is {frames} but {len(positions)} frames are described", path,
                                    "NumberOfFrames")
    if not np.all(np.isfinite(positions)):
        raise GeometryError("a frame's ImagePositionPatient is not 3 finite numbers", path, "ImagePositionPatient")
    if str(ds.get("SegmentationType", "")) != "LABELMAP":
        unknown = set(np.unique(segment_numbers).tolist()) - {int(item.SegmentNumber) for item in ds.SegmentSequence}
        if unknown:
            raise InvalidInputFileError(f"frames of segment(s) {sorted(unknown)} that SegmentSequence does not "
                                        "describe", path, "ReferencedSegmentNumber")


def unpack_frames(pixel_data: bytes, frame_indices: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Boolean frames (n, rows, columns) from 1-bit, frame-after-frame packed pixel data (LSB first)."""
    bits_per_frame = rows * columns
    buffer = np.frombuffer(pixel_data, dtype=np.uint8)
    if bits_per_frame % 8 == 0:
        bytes_per_frame = bits_per_frame // 8
        packed = buffer[: (int(frame_indices.max()) + 1) * bytes_per_frame].reshape(-1, bytes_per_frame)[frame_indices]
        return np.unpackbits(packed, axis=1, bitorder="little").reshape(len(frame_indices), rows, columns).view(bool)
    out = np.empty((len(frame_indices), rows, columns), dtype=bool)
    for n, frame in enumerate(frame_indices):  # frames start mid-byte: unpack the bytes that cover each one
        first_bit = int(frame) * bits_per_frame
        chunk = buffer[first_bit // 8: (first_bit + bits_per_frame + 7) // 8 + 1]
        bits = np.unpackbits(chunk, bitorder="little")[first_bit % 8: first_bit % 8 + bits_per_frame]
        out[n] = bits.reshape(rows, columns).view(bool)
    return out


def _as_run(slices: np.ndarray, masks: np.ndarray):
    """(slice, masks) when ``slices`` are consecutive (ascending, or descending with the masks flipped to match),
    else (slices, masks) unchanged."""
    if len(slices) and np.all(np.diff(slices) == 1):
        return slice(int(slices[0]), int(slices[-1]) + 1), masks
    if len(slices) > 1 and np.all(np.diff(slices) == -1):
        return slice(int(slices[-1]), int(slices[0]) + 1), masks[::-1]
    return slices, masks


def unpack_box(packed: bytes, frames: int, rows: int, columns: int):
    """(masks, r0, r1, c0, c1): the frames' bounding box in rows and columns, unpacked from 1-bit frames whose rows
    are whole bytes. The box is found on the packed bytes (8x less to scan than the unpacked frames) and only it is
    unpacked. None when every frame is empty."""
    data = np.frombuffer(packed, dtype=np.uint8).reshape(frames, rows, columns // 8)
    row_any = data.any(axis=(0, 2))
    if not row_any.any():
        return None
    r0, r1 = int(np.argmax(row_any)), rows - int(np.argmax(row_any[::-1]))
    byte_any = data[:, r0:r1].any(axis=(0, 1))
    b0, b1 = int(np.argmax(byte_any)), columns // 8 - int(np.argmax(byte_any[::-1]))
    bits = np.unpackbits(data[:, r0:r1, b0:b1], axis=-1, bitorder="little").view(bool)
    col_any = bits.any(axis=(0, 1))
    first, last = int(np.argmax(col_any)), bits.shape[2] - int(np.argmax(col_any[::-1]))
    return bits[:, :, first:last], r0, r1, 8 * b0 + first, 8 * b0 + last


def read_binary_layers(ds: Dataset, progress=None, pixels=None,
                       ) -> tuple[VolumeGeometry, list[np.ndarray], list[tuple[int, int, int]]] | None:
    """Layers for an uncompressed BINARY SEG and, per segment number in file order, (number, layer, label).

    Returns None, before reading any pixel byte, when the fast path does not apply.
    """
    if ds.SegmentationType != "BINARY" or ds.file_meta.TransferSyntaxUID.is_compressed or int(ds.BitsAllocated) != 1:
        return None
    layout = frame_layout(ds)
    if layout is None:
        return None
    geometry, frame_segments, frame_slices = layout
    rows, columns = int(ds.Rows), int(ds.Columns)
    pixels = pixels if pixels is not None else InMemoryPixels(ds)
    declared_disjoint = str(ds.get("SegmentsOverlap", "UNDEFINED")) == "NO"
    numbers = [int(item.SegmentNumber) for item in ds.SegmentSequence]
    bytes_per_frame, unaligned = divmod(rows * columns, 8)
    ranges = None if unaligned else _segment_ranges(frame_segments, numbers)
    pixel_data = None if ranges is not None else pixels.read_array(expected_pixel_bytes(ds))
    prefetch = Prefetch(pixels, [(end - first) * bytes_per_frame for first, end in ranges]) if ranges else None
    try:
        return _assemble(ds, progress, geometry, frame_segments, frame_slices, numbers, ranges, prefetch,
                         pixel_data, declared_disjoint)
    finally:
        if prefetch is not None:
            prefetch.close()


class Prefetch:
    """Reads the given byte counts from ``pixels`` one after another on a thread, a few ahead of the consumer:
    inflating (zlib releases the GIL) overlaps unpacking and placing the previous segment."""

    def __init__(self, pixels, sizes: list[int], ahead: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pixels, sizes), daemon=True)
        self._thread.start()

    def _run(self, pixels, sizes) -> None:
        for size in sizes:
            if self._stop.is_set():
                return
            try:
                item = pixels.read(size)
            except BaseException as exc:  # handed to the consumer, which raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def read(self) -> bytes:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _assemble(ds, progress, geometry, frame_segments, frame_slices, numbers, ranges, prefetch, pixel_data,
              declared_disjoint):
    rows, columns = int(ds.Rows), int(ds.Columns)
    layers: list[np.ndarray] = []
    next_value: list[int] = []
    placement = []
    for position, number in enumerate(numbers):
        if progress is not None and position % 16 == 0:
            progress(0.1 + 0.8 * position / max(1, len(numbers)), f"segment {position + 1}/{len(numbers)}")
        box = None
        if ranges is not None:  # this segment's frames are the next ones in the pixel data: read just them
            first, end = ranges[position]
            frames = np.arange(first, end)
            packed = prefetch.read()
            if len(frames) and columns % 8 == 0:  # rows are whole bytes: find the box before unpacking
                box = unpack_box(packed, len(frames), rows, columns)
                masks = box[0] if box is not None else None
            else:
                masks = unpack_frames(packed, frames - first, rows, columns) if len(frames) else None
            del packed
        else:
            frames = np.flatnonzero(frame_segments == number)
            masks = unpack_frames(pixel_data, frames, rows, columns) if len(frames) else None
        slices = frame_slices[frames]
        if box is not None:
            masks, r0, r1, c0, c1 = box
        elif masks is not None:
            row_any, col_any = masks.any(axis=(0, 2)), masks.any(axis=(0, 1))
            r0, r1 = int(np.argmax(row_any)), rows - int(np.argmax(row_any[::-1]))
            c0, c1 = int(np.argmax(col_any)), columns - int(np.argmax(col_any[::-1]))
            masks = masks[:, r0:r1, c0:c1]
        if masks is not None:  # a run of slices (the usual case) is addressed as a view, not a fancy-index copy
            slices, masks = _as_run(slices, masks)
        target = None
        for index, layer in enumerate(layers):
            if next_value[index] >= np.iinfo(np.uint16).max:
                continue
            if declared_disjoint or masks is None or not np.any(layer[slices, r0:r1, c0:c1][masks]):
                target = index
                break
        if target is None:  # a disjoint file's only layer takes every segment: uint16 at once, no uint8 copy
            wide = declared_disjoint and not layers and len(numbers) > 255
            layers.append(np.zeros(geometry.shape, dtype=np.uint16 if wide else np.uint8))
            next_value.append(1)
            target = len(layers) - 1
        value = next_value[target]
        next_value[target] += 1
        if value > 255 and layers[target].dtype == np.uint8:
            layers[target] = layers[target].astype(np.uint16)
        if masks is not None:
            if isinstance(slices, slice):
                layers[target][slices, r0:r1, c0:c1][masks] = value
            else:
                region = layers[target][slices, r0:r1, c0:c1]
                region[masks] = value
                layers[target][slices, r0:r1, c0:c1] = region
        placement.append((number, target, value))
    if not layers:
        layers.append(np.zeros(geometry.shape, dtype=np.uint8))
    return geometry, layers, placement


def load_binary_fast(ds: Dataset, progress=None, pixels=None) -> LayeredSegmentation | None:
    """LayeredSegmentation of an uncompressed BINARY SEG, or None (no pixel byte read) when the fast path does
    not apply."""
    result = read_binary_layers(ds, progress, pixels)
    if result is None:
        return None
    geometry, layers, placement = result
    items = {int(item.SegmentNumber): item for item in ds.SegmentSequence}
    segments = [segment_from_description(items[number], layer, value) for number, layer, value in placement]
    return LayeredSegmentation(geometry, layers, segments)


def load_labelmap_fast(ds: Dataset, progress=None, pixels=None) -> LayeredSegmentation | None:
    """LayeredSegmentation of a LABELMAP SEG (one layer: stored values are segment numbers), or None (no pixel
    byte read).

    Skips highdicom's per-segment description validation, which dominates loading 1000-segment files. Streamed
    8/16-bit frames go straight into the layer; other streamed encodings are read whole and decoded by pydicom.
    """
    if ds.SegmentationType != "LABELMAP":
        return None
    numbers = {int(item.SegmentNumber) for item in ds.SegmentSequence}
    padding = int(ds.PixelPaddingValue) if "PixelPaddingValue" in ds else 0
    if padding and padding in numbers:  # padding that is also a segment: leave it to highdicom
        return None
    if str(ds.get("PhotometricInterpretation", "")) not in ("MONOCHROME2", "PALETTE COLOR"):
        return None
    layout = frame_layout(ds)
    if layout is None:
        return None
    geometry, _, frame_slices = layout
    if len(np.unique(frame_slices)) != len(frame_slices):
        return None
    if progress is not None:
        progress(0.3, "decoding frames")
    dtype = frames_dtype(ds) if pixels is not None else None
    if dtype is not None:
        rows, columns = int(ds.Rows), int(ds.Columns)
        layer = np.zeros(geometry.shape, dtype=dtype)
        batch = max(1, LABELMAP_BATCH_BYTES // (rows * columns * dtype.itemsize))
        for first in range(0, len(frame_slices), batch):
            end = min(first + batch, len(frame_slices))
            data = pixels.read((end - first) * rows * columns * dtype.itemsize)
            layer[frame_slices[first:end]] = np.frombuffer(data, dtype=dtype).reshape(end - first, rows, columns)
    else:
        if pixels is not None:
            ds = pixels.dataset()  # PixelData read whole into the dataset
        frames = ds.pixel_array
        frames = frames.reshape(len(frame_slices), int(ds.Rows), int(ds.Columns))
        layer = np.zeros(geometry.shape, dtype=frames.dtype)
        layer[frame_slices] = frames
    if padding:
        layer[layer == padding] = 0  # padding voxels belong to no segment
    segments = [segment_from_description(item, 0, int(item.SegmentNumber)) for item in ds.SegmentSequence
                if int(item.SegmentNumber) > 0]
    return LayeredSegmentation(geometry, [layer], segments)
