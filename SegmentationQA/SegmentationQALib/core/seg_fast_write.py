"""Fast path for writing uncompressed BINARY SEGs with many (possibly overlapping) segments.

highdicom needs one boolean volume per segment at once ((slices, rows, columns, segments): 52 GB for 1000
segments on a 512x512x200 grid) and builds a pydicom Dataset per frame. Here highdicom still builds and validates
everything that is not per-frame (segment descriptions, shared functional groups, dimension index, patient/study),
from a one-plane template; the per-frame functional groups are assembled as bytes from pre-encoded pieces, and each
segment's frames are bit-packed from its label layer, touching only the rows the segment occupies.
"""

from __future__ import annotations

import copy

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from .dicom_series import ImageSeries
from .segmentation import LayeredSegmentation, label_counts

PER_FRAME_TAG = Tag("PerFrameFunctionalGroupsSequence")
ITEM_TAG = b"\xfe\xff\x00\xe0"


def fast_binary_supported(layered: LayeredSegmentation, transfer_syntax_uid: str) -> bool:
    """Uncompressed BINARY on a grid whose rows pack into whole bytes (every CT/MR matrix in practice)."""
    rows, columns = layered.geometry.shape[1:]
    return transfer_syntax_uid == ExplicitVRLittleEndian and columns % 8 == 0 and rows * columns >= len(layered.segments)


def _encode(element_dataset: Dataset, keyword: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_data_element(buffer, element_dataset[keyword])
    return buffer.getvalue()


def _sequence(keyword: str, items: list[Dataset]) -> Dataset:
    holder = Dataset()
    setattr(holder, keyword, Sequence(items))
    return holder


def template_pixels(layered: LayeredSegmentation) -> np.ndarray:
    """One plane with one voxel per segment (distinct pixels): highdicom then describes every segment cheaply."""
    rows, columns = layered.geometry.shape[1:]
    plane = np.zeros((1, rows, columns), dtype=np.uint16 if len(layered.segments) > 255 else np.uint8)
    flat = plane.reshape(-1)
    flat[: len(layered.segments)] = np.arange(1, len(layered.segments) + 1)
    return plane


def frames_by_segment(layered: LayeredSegmentation) -> list[np.ndarray]:
    """For each segment, the slice indices (ascending) where it has at least one voxel."""
    presence_per_layer = []
    for layer in layered.layers:
        values = max((s.label_value for s in layered.segments), default=0) + 1
        presence = np.zeros((layer.shape[0], values), dtype=bool)
        for k in range(layer.shape[0]):
            counts = label_counts(layer[k])[:values]
            presence[k, : counts.size] = counts > 0
        presence_per_layer.append(presence)
    return [np.flatnonzero(presence_per_layer[s.layer][:, s.label_value]) for s in layered.segments]


def pack_frames(layered: LayeredSegmentation, slices_per_segment: list[np.ndarray]) -> bytes:
    """1-bit frames, segment after segment, little-endian bit order, only the occupied rows packed."""
    rows, columns = layered.geometry.shape[1:]
    row_bytes = columns // 8
    chunks = []
    for segment, slices in zip(layered.segments, slices_per_segment):
        if not len(slices):
            continue
        layer = layered.layers[segment.layer]
        block = layer[slices] == segment.label_value
        occupied = np.flatnonzero(block.any(axis=(0, 2)))
        r0, r1 = int(occupied[0]), int(occupied[-1]) + 1
        packed = np.zeros((len(slices), rows, row_bytes), dtype=np.uint8)
        packed[:, r0:r1, :] = np.packbits(block[:, r0:r1, :], axis=-1, bitorder="little")
        chunks.append(packed.reshape(-1))
    data = np.concatenate(chunks).tobytes() if chunks else b""
    return data + b"\x00" if len(data) % 2 else data


def per_frame_sequence(template_item: Dataset, reference: ImageSeries, slices_per_segment: list[np.ndarray],
                       plane_index: dict[int, int]) -> tuple[bytes, int]:
    """The bytes of PerFrameFunctionalGroupsSequence items, assembled from elements encoded once per plane."""
    source_template = template_item.DerivationImageSequence[0].SourceImageSequence[0]
    derivation, position = {}, {}
    for k in plane_index:
        item = copy.deepcopy(template_item.DerivationImageSequence[0])
        source = copy.deepcopy(source_template)
        source.ReferencedSOPClassUID = reference.datasets[k].SOPClassUID
        source.ReferencedSOPInstanceUID = reference.datasets[k].SOPInstanceUID
        item.SourceImageSequence = Sequence([source])
        derivation[k] = _encode(_sequence("DerivationImageSequence", [item]), "DerivationImageSequence")
        plane = Dataset()
        plane.ImagePositionPatient = list(reference.datasets[k].ImagePositionPatient)
        position[k] = _encode(_sequence("PlanePositionSequence", [plane]), "PlanePositionSequence")
    content, segment_id = Dataset(), Dataset()
    content.DimensionIndexValues = [0x7FFFFFF1, 0x7FFFFFF2]
    content_bytes = _encode(_sequence("FrameContentSequence", [content]), "FrameContentSequence")
    segment_id.ReferencedSegmentNumber = 0x7FF1
    segment_bytes = _encode(_sequence("SegmentIdentificationSequence", [segment_id]), "SegmentIdentificationSequence")
    first_offset = content_bytes.index((0x7FFFFFF1).to_bytes(4, "little"))
    number_offset = segment_bytes.index((0x7FF1).to_bytes(2, "little"))
    parts, frames = [], 0
    for number, slices in enumerate(slices_per_segment, start=1):
        segment_part = bytearray(segment_bytes)
        segment_part[number_offset:number_offset + 2] = number.to_bytes(2, "little")
        for k in slices:
            frame_content = bytearray(content_bytes)
            frame_content[first_offset:first_offset + 8] = number.to_bytes(4, "little") + plane_index[int(k)].to_bytes(4, "little")
            body = derivation[int(k)] + bytes(frame_content) + position[int(k)] + bytes(segment_part)
            parts.append(ITEM_TAG + len(body).to_bytes(4, "little") + body)
            frames += 1
    return b"".join(parts), frames


def finish_binary_seg(template: Dataset, layered: LayeredSegmentation, reference: ImageSeries,
                      overlapping: bool) -> tuple[Dataset, bytes]:
    """Turn highdicom's one-plane template into the full SEG.

    Returns the dataset without its per-frame functional groups and pixel data, and those two elements encoded
    as bytes: they are the last two elements of a SEG, so they are appended to the file as they are (pydicom
    would otherwise parse the pre-encoded sequence again just to write it).
    """
    slices_per_segment = frames_by_segment(layered)
    used = sorted({int(k) for slices in slices_per_segment for k in slices})
    # Dimension index of the position: planes in order along the slice normal, numbered among the planes used.
    plane_index = {k: n for n, k in enumerate(used, start=1)}
    template_item = template.PerFrameFunctionalGroupsSequence[0]
    sequence_bytes, frames = per_frame_sequence(template_item, reference, slices_per_segment, plane_index)
    del template[PER_FRAME_TAG]
    if "PixelData" in template:
        del template.PixelData
    later = [tag for tag in template.keys() if tag > PER_FRAME_TAG]
    if later:
        raise ValueError(f"unexpected elements after the per-frame functional groups: {later}")
    template.NumberOfFrames = frames
    template.SegmentsOverlap = "YES" if overlapping else "NO"
    instance_template = template.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    template.ReferencedSeriesSequence[0].ReferencedInstanceSequence = Sequence(
        [_reference_item(instance_template, reference.datasets[k]) for k in used])
    if "SourceImageSequence" in template:
        source_template = template.SourceImageSequence[0]
        template.SourceImageSequence = Sequence([_reference_item(source_template, reference.datasets[k]) for k in used])
    pixel_bytes = pack_frames(layered, slices_per_segment)
    tail = (b"\x00\x52\x30\x92SQ\x00\x00" + len(sequence_bytes).to_bytes(4, "little") + sequence_bytes
            + b"\xe0\x7f\x10\x00OB\x00\x00" + len(pixel_bytes).to_bytes(4, "little") + pixel_bytes)
    return template, tail


def _reference_item(template_item: Dataset, source: Dataset) -> Dataset:
    item = copy.deepcopy(template_item)  # a copy: Dataset.update would share (and so overwrite) the elements
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def save_with_tail(dataset: Dataset, tail: bytes, path) -> None:
    """Write ``dataset`` as a DICOM file (explicit VR little endian) and append the pre-encoded ``tail``."""
    dataset.save_as(path, enforce_file_format=True)
    with open(path, "ab") as handle:
        handle.write(tail)
