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

from DicomFidelityCommonLib.dicom.deflate import deflate_backend


class SegType(enum.Enum):
    AUTO = "auto"  # LABELMAP when no two segments overlap, else BINARY
    BINARY = "binary"
    LABELMAP = "labelmap"


class SegWriter(enum.Enum):
    """How a SEG is built. The choice is made in one place, seg.write.choose_writer; both write the same object
    (tested attribute by attribute and pixel by pixel)."""

    STREAMED = "streamed"  # highdicom builds a one-plane template; per-frame groups and frames are streamed as bytes
    # (native pixel data; RLE Lossless LABELMAP, its frames encoded by GDCM or pylibjpeg-rle)
    HIGHDICOM = "highdicom"  # highdicom builds every frame: the reference path, and the one for JPEG-LS, JPEG 2000


class SegReader(enum.Enum):
    """How a SEG is read. BULK (seg.fast_read) where it applies, else highdicom; both give the same voxels and
    metadata (tested on every sample SEG)."""

    BULK = "bulk"
    HIGHDICOM = "highdicom"


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


class Compatibility(enum.Enum):
    """Which readers a SEG must reach, when the default (smallest, read by highdicom, pydicom, dcmqi, DCMTK) is not
    enough. Chooses the SEG type and transfer syntax that ``auto`` and the default compression leave open."""

    DEFAULT = "default"  # LABELMAP (BINARY with overlaps) + deflate
    VIEWER = "viewer"  # LABELMAP + RLE, what OHIF writes itself; overlapping segments: BINARY uncompressed
    LEGACY = "legacy"  # BINARY uncompressed: readers without the LABELMAP SOP class or deflate (GDCM/ITK,
    # pydicom-seg, dcmjs' legacy adapter, DCMTK 3.6.7 storescu, Slicer <= 5.10)

    def choose(self, seg_type: SegType, overlapping: bool) -> tuple[SegType, Compression | None]:
        """(SEG type, compression) for a request of ``seg_type``; None: the measured default."""
        if self == Compatibility.LEGACY:
            return SegType.BINARY, Compression.NONE
        if self == Compatibility.VIEWER:
            if overlapping or seg_type == SegType.BINARY:
                return SegType.BINARY, Compression.NONE
            return SegType.LABELMAP, Compression.RLE
        return seg_type, None


def default_compression(seg_type: SegType) -> Compression:
    """Chosen by measurement (README, "Compression"): see DEFAULT_COMPRESSION_BY_TYPE."""
    return DEFAULT_COMPRESSION_BY_TYPE[seg_type]


# Deflate for both: the only lossless syntax about as small as a gzip seg.nrrd that highdicom, pydicom, dcmqi and
# DCMTK (Slicer's DICOM import) all read; RLE is 2-3x larger, JPEG-LS is as small but dcmqi cannot decode it.
DEFAULT_COMPRESSION_BY_TYPE = {SegType.LABELMAP: Compression.DEFLATE, SegType.BINARY: Compression.DEFLATE}

# deflate_level is a zlib level (1-9) whichever library deflates: dicom.deflate.DeflateBackend hands levels 1-3 to
# ISA-L (package ``isal``) when it can be imported, 4-9 always to zlib. The default depends on which is there: with
# ISA-L both types take level 3 (ISA-L 2: the export 1.5-5.7x faster, files still below the gzip seg.nrrd); zlib
# alone needs level 6 for BINARY (lazy matching halves the file). The measurements: Docs/benchmarks.md, "Deflate".
ISAL_DEFLATE_LEVEL_BY_TYPE = {SegType.LABELMAP: 3, SegType.BINARY: 3}
ZLIB_DEFLATE_LEVEL_BY_TYPE = {SegType.LABELMAP: 3, SegType.BINARY: 6}
DEFAULT_DEFLATE_LEVEL_BY_TYPE = (ISAL_DEFLATE_LEVEL_BY_TYPE if deflate_backend().name == "isal"
                                 else ZLIB_DEFLATE_LEVEL_BY_TYPE)
# Small BINARY SEGs keep zlib's lazy matching even with ISA-L (smaller files for 0.02 s; Docs/benchmarks.md).
SMALL_BINARY_FRAME_BYTES = 32 << 20


def default_deflate_level(seg_type: SegType, frame_bytes: int) -> int:
    """The zlib-style level a ``seg_type`` SEG with ``frame_bytes`` of pixel data is deflated at by default."""
    if seg_type == SegType.BINARY and frame_bytes < SMALL_BINARY_FRAME_BYTES:
        return ZLIB_DEFLATE_LEVEL_BY_TYPE[SegType.BINARY]
    return DEFAULT_DEFLATE_LEVEL_BY_TYPE[seg_type]


@dataclass
class SegExportOptions:
    seg_type: SegType = SegType.AUTO
    compression: Compression | None = None  # None: the measured default for the SEG type
    compatibility: Compatibility = Compatibility.DEFAULT  # applies where seg_type is AUTO and compression None
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
    # zlib level 1-9 for Compression.DEFLATE (1-3 run on ISA-L when installed); None: DEFAULT_DEFLATE_LEVEL_BY_TYPE
    deflate_level: int | None = None
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
    writer: str = SegWriter.HIGHDICOM.value  # the SegWriter that built the file

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
