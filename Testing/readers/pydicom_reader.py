"""pydicom: Dataset.pixel_array (its own RLE/deflate handlers, 1-bit unpacking), frames placed by the SEG's groups."""

from __future__ import annotations

from pathlib import Path

import pydicom

from readers.base import Reader, ReadResult, segments_from_frames


def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
    ds = pydicom.dcmread(seg_path)
    return ReadResult(segments_from_frames(ds, ds.pixel_array))


READER = Reader("pydicom", lambda: pydicom.__version__, read)
