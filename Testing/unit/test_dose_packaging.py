"""The Slicer shell cannot run here, so check what would break it at load time: CMake lists, UI names, resources."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "DoseAlignment"


def test_cmake_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    # the shared function builds the shell and globs every library file, so a new file cannot be forgotten
    assert "dicomfidelity_add_module(" in text and "NAME DoseAlignment" in text and "WITH_PANEL" in text
    function = (MODULE.parent / "CMake" / "DicomFidelityModule.cmake").read_text()
    assert "file(GLOB_RECURSE _lib_scripts RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} ${MY_NAME}Lib/*.py)" in function
    assert "SCRIPTS ${MY_NAME}.py ${_lib_scripts}" in function
    assert {p.name for p in MODULE.glob("*.py")} == {"DoseAlignment.py"}
    for resource in ("Resources/Icons/DoseAlignment.png", "Resources/UI/DoseAlignment.ui"):
        assert resource in text and (MODULE / resource).is_file()
    assert (MODULE / "Resources/Icons/DoseAlignment.png").read_bytes()[:4] == b"\x89PNG"


def test_widget_uses_only_names_the_ui_defines():
    names = {w.get("name") for w in ET.parse(MODULE / "Resources/UI/DoseAlignment.ui").iter("widget")}
    source = (MODULE / "DoseAlignment.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= names, used - names
    tree = ast.parse(source)
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"DoseAlignment", "DoseAlignmentWidget", "DoseAlignmentLogic", "DoseAlignmentTest"} <= classes
    assert "import qt" not in (MODULE / "DoseAlignmentLib/logic.py").read_text()
