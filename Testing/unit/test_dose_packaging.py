"""The Slicer shell cannot run here, so check what would break it at load time: CMake lists, UI names, resources."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "DoseAlignment"


def test_cmake_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "DoseAlignment")
    # the shell by name, every library file through the glob (so a new file cannot be forgotten)
    assert re.search(r"^\s*DoseAlignment\.py\s*$", text, re.M)
    assert "file(GLOB_RECURSE MODULE_LIB_SCRIPTS RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} DoseAlignmentLib/*.py)" in text
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
