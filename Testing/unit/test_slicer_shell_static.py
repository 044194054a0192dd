"""The Slicer GUI cannot run here: check the shells statically against their .ui files and CMake lists."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ["SegmentationQA", "DoseAlignment", "Cohorts"]


def ui_widget_names(ui_path: Path) -> set[str]:
    tree = ElementTree.parse(ui_path)
    return {element.get("name") for element in tree.iter()
            if element.tag in ("widget", "layout") and element.get("name")}


def ui_references(module_path: Path) -> set[str]:
    """Every `self.ui.NAME` (and `ui.NAME`) attribute the module code reads."""
    tree = ast.parse(module_path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            names.add(node.attr)
    return names


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_module_uses_exists_in_its_ui(module):
    ui_path = REPO / module / "Resources" / "UI" / f"{module}.ui"
    module_path = REPO / module / f"{module}.py"
    widgets = ui_widget_names(ui_path)
    used = ui_references(module_path)
    assert used, f"{module}.py uses no widgets from its .ui"
    missing = sorted(used - widgets)
    assert not missing, f"{module}.py uses widgets missing from {ui_path.name}: {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_names_in_ui_match_parameter_node(module):
    ui_text = (REPO / module / "Resources" / "UI" / f"{module}.ui").read_text()
    bound = set(re.findall(r'name="SlicerParameterName"[^>]*>\s*<string>(\w+)</string>', ui_text))
    source = (REPO / module / f"{module}.py").read_text()
    tree = ast.parse(source)
    fields = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            fields |= {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    assert fields, f"{module}.py has no @parameterNodeWrapper class"
    assert bound <= fields, f"{module}.ui binds unknown parameters: {sorted(bound - fields)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_shell_structure_and_resources(module):
    source = (REPO / module / f"{module}.py").read_text()
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for suffix in ("", "Widget", "Logic", "Test"):
        assert f"{module}{suffix}" in classes, f"{module}.py lacks class {module}{suffix}"
    cmake = (REPO / module / "CMakeLists.txt").read_text()
    assert f"NAME {module}" in cmake and "dicomfidelity_add_module(" in cmake
    for resource in (f"Resources/Icons/{module}.png", f"Resources/UI/{module}.ui"):
        assert (REPO / module / resource).is_file(), resource
    # one requirements file for the extension (Slicer installs all modules' resources into one folder)
    assert not (REPO / module / "Resources/requirements.txt").exists()
    assert (REPO / "DicomFidelityCommon/Resources/requirements.txt").is_file()
    assert '"DicomFidelityCommon"' in source  # listed in the module's dependencies
    # the shell never holds logic: it is small, and core never imports qt (tested elsewhere)
    assert len(source.splitlines()) < 450


def test_top_level_cmake_lists_both_modules():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "project(DicomFidelity)" in cmake and "CMake/DicomFidelityModule.cmake" in cmake
    for module in ["DicomFidelityCommon", *MODULES, "Testing"]:
        assert f"add_subdirectory({module})" in cmake
