"""ITK (SimpleITK's ReadImage, GDCMImageIO inside): a multi-frame SEG comes back as a stack of its frames, which are
placed by the SEG's functional groups (ITK knows nothing of segments)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import SimpleITK as sitk

from readers.base import Reader, ReaderUnsupported, ReadResult, segments_from_frames, tail


def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
    try:
        frames = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path)))
    except RuntimeError as exc:  # SimpleITK's message ends with ITK's own words
        raise ReaderUnsupported(tail(str(exc), lines=1)) from None
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    if ds.SegmentationType == "BINARY":
        frames = frames != 0  # ITK scales 1-bit pixels to 0/255
    return ReadResult(segments_from_frames(ds, frames))


READER = Reader("ITK", lambda: f"{sitk.Version.ITKVersionString()} (SimpleITK {sitk.Version.VersionString()})", read)
