"""Guard: core modules stay pure Python (no slicer, vtk or qt), so they run anywhere.

Core is every module of the three libraries except the MRML-facing ones (logic, mrml) and the command lines,
which build logics.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("slicer", "vtk", "vtkmodules", "qt", "ctk", "slicer_core")
LIBRARIES = {"DicomFidelityCommonLib": "DicomFidelityCommon", "SegmentationQALib": "SegmentationQA",
             "DoseAlignmentLib": "DoseAlignment", "CohortsLib": "Cohorts"}
MRML_FACING = {"logic", "rtstruct_logic", "mrml", "cli", "cli_rtstruct"}


def library_modules() -> list[str]:
    names = []
    for package, folder in LIBRARIES.items():
        root = REPO / folder
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def core_modules() -> list[str]:
    return [name for name in library_modules() if name.rsplit(".", 1)[-1] not in MRML_FACING]


def test_core_modules_import_no_slicer_vtk_qt():
    modules = core_modules()
    assert {"DicomFidelityCommonLib.geometry", "SegmentationQALib.seg.write", "DoseAlignmentLib.rtdose"} <= set(modules)
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    env_path = [str(REPO / folder) for folder in LIBRARIES.values()]
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path[:0] = {env_path!r}\n" + code],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"core imported forbidden modules: {result.stdout}"
