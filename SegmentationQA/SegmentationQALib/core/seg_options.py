"""Options and results of DICOM SEG export/load, shared by core, logic, CLI and the panel."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)


class SegType(enum.Enum):
    AUTO = "auto"  # LABELMAP when no two segments overlap, else BINARY
    BINARY = "binary"
    LABELMAP = "labelmap"


class Compression(enum.Enum):
    """Lossless transfer syntaxes. BINARY (1-bit) frames: none, deflate or JPEG 2000 only."""

    NONE = "none"
    DEFLATE = "deflate"  # Deflated Explicit VR Little Endian: the whole object gzip-compressed (PS3.5 A.5)
    RLE = "rle"
    JPEG_LS = "jpegls"
    JPEG2000 = "jpeg2000"

    @property
    def transfer_syntax_uid(self) -> str:
        return {
            Compression.NONE: ExplicitVRLittleEndian,
            Compression.DEFLATE: DeflatedExplicitVRLittleEndian,
            Compression.RLE: RLELossless,
            Compression.JPEG_LS: JPEGLSLossless,
            Compression.JPEG2000: JPEG2000Lossless,
        }[self]

    def supports(self, seg_type: SegType) -> bool:
        if seg_type == SegType.BINARY:
            return self in (Compression.NONE, Compression.DEFLATE, Compression.JPEG2000)
        return True


def default_compression(seg_type: SegType) -> Compression:
    """Chosen by measurement (README, "Compression"): see DEFAULT_COMPRESSION_BY_TYPE."""
    return DEFAULT_COMPRESSION_BY_TYPE[seg_type]


# Deflate for both: the only lossless syntax about as small as a gzip seg.nrrd that highdicom, pydicom, dcmqi and
# DCMTK (Slicer's DICOM import) all read; RLE is 2-3x larger, JPEG-LS is as small but dcmqi cannot decode it.
DEFAULT_COMPRESSION_BY_TYPE = {SegType.LABELMAP: Compression.DEFLATE, SegType.BINARY: Compression.DEFLATE}

# zlib levels, measured on the seg_speed cases (512x512x200 TotalSegmentator labels, 2 cores, parallel blocks):
# LABELMAP 117 labels: level 2 0.91 MB, 3 0.80 MB (as fast), 4-6 0.06 s slower; BINARY 137/1020 segments: level 3
# 2.0/4.1 MB, level 6 0.97/1.73 MB for 0.15/0.5 s more (bit-packed frames need the lazy matching of levels >= 4,
# and 6 is as fast as 4 here), which brings BINARY below the gzip seg.nrrd.
DEFAULT_DEFLATE_LEVEL_BY_TYPE = {SegType.LABELMAP: 3, SegType.BINARY: 6}


@dataclass
class SegExportOptions:
    seg_type: SegType = SegType.AUTO
    compression: Compression | None = None  # None: the measured default for the SEG type
    series_description: str = "Segmentation"
    series_number: int = 300
    instance_number: int = 1
    content_label: str = "SEGMENTATION"
    content_description: str | None = None
    content_creator_name: str = "DicomFidelity^"
    algorithm_type: str = "MANUAL"  # default for segments that do not say; MANUAL, SEMIAUTOMATIC or AUTOMATIC
    algorithm_name: str = "DicomFidelity"
    algorithm_version: str = "0.1"
    manufacturer: str = "DicomFidelity"
    manufacturer_model_name: str = "DicomFidelity SegmentationQA"
    software_versions: str = "0.1.0"
    device_serial_number: str = "0"
    deflate_level: int | None = None  # zlib level for Compression.DEFLATE; None: DEFAULT_DEFLATE_LEVEL_BY_TYPE
    # When the segmentation came from DICOM, the frame of reference it must share with the reference series.
    expected_frame_of_reference_uid: str | None = None


@dataclass
class SegmentReport:
    number: int
    label: str
    voxel_count: int
    segment_id: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"number": self.number, "label": self.label, "voxel_count": self.voxel_count,
                "segment_id": self.segment_id, "warnings": list(self.warnings)}


@dataclass
class SegExportResult:
    seg_path: str
    seg_type: str
    compression: str
    transfer_syntax_uid: str
    segments: list[SegmentReport]
    reference_series_uid: str
    reference_paths: list[str] = field(default_factory=list)  # the series we wrote, when the reference was not DICOM
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    file_size_bytes: int = 0
    writer: str = "highdicom"  # "streamed": seg_fast_write's template + streamed frames; "highdicom": every frame

    @property
    def written_paths(self) -> list[str]:
        return [self.seg_path, *self.reference_paths]

    def to_json(self) -> dict:
        return {
            "written_paths": self.written_paths,
            "seg_path": self.seg_path,
            "seg_type": self.seg_type,
            "compression": self.compression,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "file_size_bytes": self.file_size_bytes,
            "writer": self.writer,
            "reference_series_uid": self.reference_series_uid,
            "reference_paths": list(self.reference_paths),
            "segments": [s.to_json() for s in self.segments],
            "warnings": list(self.warnings),
            "timings_seconds": {k: round(v, 4) for k, v in self.timings.items()},
        }


@dataclass
class SegLoadResult:
    seg_path: str
    seg_type: str
    segments: list[SegmentReport]
    frame_of_reference_uid: str | None
    referenced_series_uid: str | None
    output_path: str | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def written_paths(self) -> list[str]:
        return [self.output_path] if self.output_path else []

    def to_json(self) -> dict:
        return {
            "written_paths": self.written_paths,
            "seg_path": self.seg_path,
            "seg_type": self.seg_type,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "referenced_series_uid": self.referenced_series_uid,
            "segments": [s.to_json() for s in self.segments],
            "warnings": list(self.warnings),
            "timings_seconds": {k: round(v, 4) for k, v in self.timings.items()},
        }
