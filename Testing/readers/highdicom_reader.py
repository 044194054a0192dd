"""highdicom: hd.seg.segread(...).get_volume(), one channel per segment, placed by the volume's affine."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np

from readers.base import Reader, ReadResult


def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
    seg = hd.seg.segread(seg_path)
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence if int(s.SegmentNumber) != 0]  # 0: background
    volume = seg.get_volume(segment_numbers=numbers, combine_segments=False)
    affine = np.asarray(volume.affine, float)
    array = volume.array  # (slices, rows, columns, segments)
    segments = {}
    for channel, number in enumerate(numbers):
        index = np.argwhere(array[..., channel] != 0).astype(float)
        segments[number] = index @ affine[:3, :3].T + affine[:3, 3]
    return ReadResult(segments)


READER = Reader("highdicom", lambda: hd.__version__, read)
