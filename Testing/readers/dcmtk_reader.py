"""DCMTK: dcmdrle (RLE) or dcmconv +te (deflate, native) decodes to Explicit VR LE; dcmdump must parse the input.
The decoded file's native pixel bytes are then only unpacked (pydicom on uncompressed data, no codec)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from readers.base import (
    LABELMAP_SEG_SOP_CLASS,
    Reader,
    ReaderUnsupported,
    ReadResult,
    native_frames,
    run_tool,
    segments_from_frames,
)


def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
    workdir.mkdir(parents=True, exist_ok=True)
    notes = []
    dump = run_tool(["dcmdump", "-q", seg_path], "dcmdump").stdout
    if LABELMAP_SEG_SOP_CLASS in dump and "=SegmentationStorage" not in dump:
        notes.append("dcmdump does not name the LABELMAP SOP class (reads it as an unknown storage class)")
    decoded = workdir / "decoded.dcm"
    transfer_syntax = pydicom.dcmread(seg_path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    tool = ["dcmdrle"] if transfer_syntax == RLELossless else ["dcmconv", "+te"]
    run_tool([*tool, seg_path, decoded], tool[0])
    ds = pydicom.dcmread(decoded)
    if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        raise ReaderUnsupported(f"{tool[0]} wrote {ds.file_meta.TransferSyntaxUID}, not Explicit VR LE")
    return ReadResult(segments_from_frames(ds, native_frames(ds, tool[0], notes)), notes=notes)


def version() -> str:
    if not shutil.which("dcmconv"):
        return "not installed"
    out = subprocess.run(["dcmconv", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v(\d+\.\d+\.\d+)", out)
    return found.group(1) if found else "?"


READER = Reader("DCMTK", version, read)
