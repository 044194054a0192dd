"""Guard: core packages must stay pure Python (no slicer, vtk or qt), so they run anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("slicer", "vtk", "vtkmodules", "qt", "ctk", "slicer_core")


def core_modules() -> list[str]:
    names = []
    for package, folder in (("SegmentationQALib.core", "SegmentationQA/SegmentationQALib/core"),
                            ("DoseAlignmentLib.core", "DoseAlignment/DoseAlignmentLib/core")):
        for path in sorted((REPO / folder).glob("*.py")):
            names.append(package if path.stem == "__init__" else f"{package}.{path.stem}")
    return names


def test_core_modules_import_no_slicer_vtk_qt():
    modules = core_modules()
    assert "SegmentationQALib.core.geometry" in modules
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    env_path = [str(REPO / "SegmentationQA"), str(REPO / "DoseAlignment")]
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path[:0] = {env_path!r}\n" + code],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"core imported forbidden modules: {result.stdout}"
