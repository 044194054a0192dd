"""GDCM: gdcmconv --raw decodes the pixel data to a native file (gdcminfo names what GDCM makes of the object);
the decoded file's native pixel bytes are then only unpacked (pydicom on uncompressed data, no codec)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from readers.base import (
    Reader,
    ReaderMissing,
    ReaderUnsupported,
    ReadResult,
    native_frames,
    run_tool,
    segments_from_frames,
    tail,
)


def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
    workdir.mkdir(parents=True, exist_ok=True)
    notes = []
    if not shutil.which("gdcminfo"):
        raise ReaderMissing("gdcminfo not installed (apt-get install libgdcm-tools)")
    info = subprocess.run(["gdcminfo", str(seg_path)], capture_output=True, text=True)
    if "Unknown MediaStorage" in info.stdout + info.stderr:
        notes.append("gdcminfo: Unknown MediaStorage")
    decoded = workdir / "decoded.dcm"
    try:
        run_tool(["gdcmconv", "--raw", seg_path, decoded], "gdcmconv --raw")
    except ReaderUnsupported as exc:
        raise ReaderUnsupported(f"{exc}{' (' + notes[0] + ')' if notes else ''}") from None
    ds = pydicom.dcmread(decoded)
    written = ds.file_meta.TransferSyntaxUID
    if written in (RLELossless, DeflatedExplicitVRLittleEndian) or written.is_compressed:
        raise ReaderUnsupported(f"gdcmconv --raw left {written.name}: {tail(info.stdout)}")
    return ReadResult(segments_from_frames(ds, native_frames(ds, "gdcmconv --raw", notes)), notes=notes)


def version() -> str:
    if not shutil.which("gdcminfo"):
        return "not installed"
    out = subprocess.run(["gdcminfo", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"gdcm (\d+\.\d+\.\d+)", out)
    return found.group(1) if found else "?"


READER = Reader("GDCM", version, read)
