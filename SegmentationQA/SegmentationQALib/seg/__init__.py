"""DICOM SEG: one facade for describing, writing and reading.

- ``write_seg`` (seg.write): a LayeredSegmentation on a reference series -> one SEG file. Two named writers
  (``SegWriter``), chosen in one place (``choose_writer``): STREAMED (seg.streamed + seg.stream_write: highdicom
  builds a one-plane template, frames and per-frame groups are streamed, deflated on all cores) wherever pixel data
  is native, and for RLE Lossless LABELMAP (frames encoded by GDCM or pylibjpeg-rle); HIGHDICOM (highdicom builds
  every frame) for JPEG-LS / JPEG 2000, BINARY outside native syntaxes, and as the test oracle.
- ``load_seg`` (seg.read): any patient-space SEG -> LayeredSegmentation. ``SegReader.BULK`` (seg.fast_read, pixel
  data streamed by seg.stream_read) where it applies, highdicom otherwise.
- seg.describe: segment descriptions both ways (names, colours, coded terminology, algorithm).
- seg.census: one pass over the layers (voxel counts, slices and rows per segment) shared by the writers.
- seg.options: the enums, options and results shared by core, logic, CLI and panel.
"""

from SegmentationQALib.seg.options import (
    Compatibility,
    Compression,
    SegExportOptions,
    SegExportResult,
    SegLoadResult,
    SegmentReport,
    SegReader,
    SegType,
    SegWriter,
)
from SegmentationQALib.seg.read import LoadedSeg, load_seg, read_seg_file
from SegmentationQALib.seg.write import choose_writer, write_seg

__all__ = [
    "Compatibility", "Compression", "LoadedSeg", "SegExportOptions", "SegExportResult", "SegLoadResult", "SegReader",
    "SegType", "SegWriter", "SegmentReport", "choose_writer", "load_seg", "read_seg_file", "write_seg",
]
