"""What a reader adapter returns, and the frame-to-patient-space helpers the frame-based readers share."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom

LABELMAP_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"


class ReaderUnsupported(Exception):
    """The reader refused the file or failed on it; the message is the reader's own words, shortened."""


@dataclass
class ReadResult:
    """{segment number: LPS voxel centres (N, 3)} as one reader decoded them (a reader that cannot read the file
    raises ReaderUnsupported instead), and what was seen on the way."""

    segments: dict[int, np.ndarray]
    notes: list[str] = field(default_factory=list)


class ReaderMissing(RuntimeError):
    """The reader is not installed or could not be started: a failure of the set-up, never "unsupported"."""


@dataclass
class Reader:
    """``read(seg_path, reference_dir, workdir) -> ReadResult``; ``start(workdir)``/``stop()`` around a run (a
    server); ``version()`` once the reader is set up."""

    name: str
    version: Callable[[], str]
    read: Callable[[Path, Path, Path], ReadResult]
    start: Callable[[Path], None] | None = None
    stop: Callable[[], None] | None = None


def run_tool(args: list, what: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a reader's executable; a non-zero exit is the reader's refusal, worded by its last stderr lines."""
    try:
        done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise ReaderMissing(f"{what}: not installed ({exc.filename})") from None
    if done.returncode != 0:
        raise ReaderUnsupported(f"{what} exit {done.returncode}: {tail(done.stderr or done.stdout)}")
    return done


def tail(text: str, lines: int = 2, chars: int = 300) -> str:
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept)[:chars]


def frame_points(rows: int, columns: int, position, orientation, spacing, mask2d: np.ndarray) -> np.ndarray:
    """LPS centres of the non-zero pixels of one frame (PS3.3 C.7.6.2.1.1)."""
    r, c = np.nonzero(mask2d)
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return (np.asarray(position, float)[None, :] + np.outer(c * float(spacing[1]), row_dir)
            + np.outer(r * float(spacing[0]), col_dir))


def segments_from_frames(ds: pydicom.Dataset, frames: np.ndarray) -> dict[int, np.ndarray]:
    """Segments from decoded frames (n, rows, columns) and the SEG's own functional groups: BINARY frames belong to
    the segment their SegmentIdentificationSequence names, LABELMAP frames hold segment numbers as pixel values."""
    frames = np.asarray(frames).reshape(int(ds.get("NumberOfFrames", 1)), ds.Rows, ds.Columns)
    shared = ds.SharedFunctionalGroupsSequence[0]
    labelmap = ds.SOPClassUID == LABELMAP_SEG_SOP_CLASS or ds.SegmentationType == "LABELMAP"
    numbers = [int(s.SegmentNumber) for s in ds.SegmentSequence]
    points: dict[int, list[np.ndarray]] = {n: [] for n in numbers}
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        orientation = (group.PlaneOrientationSequence[0] if "PlaneOrientationSequence" in group
                       else shared.PlaneOrientationSequence[0]).ImageOrientationPatient
        measures = (group.PixelMeasuresSequence[0] if "PixelMeasuresSequence" in group
                    else shared.PixelMeasuresSequence[0])
        position = group.PlanePositionSequence[0].ImagePositionPatient
        frame = frames[index]
        if labelmap:
            for value in np.unique(frame[frame != 0]):
                if int(value) in points:
                    points[int(value)].append(frame_points(ds.Rows, ds.Columns, position, orientation,
                                                           measures.PixelSpacing, frame == value))
                else:
                    points.setdefault(-int(value), [])  # a pixel value no segment describes: a difference
        else:
            number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            points[number].append(frame_points(ds.Rows, ds.Columns, position, orientation, measures.PixelSpacing,
                                               frame != 0))
    return {n: (np.concatenate(p) if p else np.zeros((0, 3))) for n, p in points.items()}


def reference_slices(reference_dir: Path) -> dict[str, pydicom.Dataset]:
    """{SOPInstanceUID: header} of the reference series: where a reader that labels slices puts them."""
    out = {}
    for path in sorted(Path(reference_dir).iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[ds.SOPInstanceUID] = ds
    return out


def segments_from_slice_labelmaps(reference: dict[str, pydicom.Dataset],
                                  slices: dict[str, np.ndarray], numbers: list[int]) -> dict[int, np.ndarray]:
    """Segments from per-reference-slice label maps {SOPInstanceUID: (rows, columns) segment numbers}."""
    points: dict[int, list[np.ndarray]] = {n: [] for n in numbers}
    for uid, labels in slices.items():
        ref = reference[uid]
        for value in np.unique(labels[labels != 0]):
            points.setdefault(int(value), []).append(frame_points(ref.Rows, ref.Columns, ref.ImagePositionPatient,
                                                                  ref.ImageOrientationPatient, ref.PixelSpacing,
                                                                  labels == value))
    return {n: (np.concatenate(p) if p else np.zeros((0, 3))) for n, p in points.items()}


def native_frames(ds: pydicom.Dataset, tool: str, notes: list[str]) -> np.ndarray:
    """Unpack the native (uncompressed) pixel data a tool wrote. A length other than frames x rows x columns x bits
    is the tool's error: noted, and the data cut or padded to that length, so the wrong voxels show as such."""
    frames = int(ds.get("NumberOfFrames", 1))
    expected = -(-frames * ds.Rows * ds.Columns * ds.BitsAllocated // 8)
    data = bytes(ds.PixelData)
    if len(data) not in (expected, expected + 1):  # + 1: the even-length pad
        zeros = len(data) > expected and not any(data[expected:])
        tail_words = f" (the frames, then {len(data) - expected} bytes of zeros: a malformed file)" if zeros else ""
        notes.append(f"{tool} wrote {len(data)} bytes of pixel data for {expected}{tail_words}")
        ds.PixelData = (data[:expected] + b"\0" * max(0, expected - len(data)))
        ds.PixelData += b"\0" * (len(ds.PixelData) % 2)
    return ds.pixel_array
