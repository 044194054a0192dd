"""The shape of the code base, checked: what loads in a bare Slicer, what must be installed, which way imports go.

- The module shells (and the command lines) load with only what Slicer bundles: their module-level imports,
  followed through the project's own files (functions called while defining classes included), reach no other
  third-party package. Everything else is installed on first use from Resources/requirements.txt.
- Every third-party package the code imports anywhere is bundled or listed there.
- No import cycles between production modules; no DoseAlignment file imports SegmentationQA's package and back.
- No ``except ImportError`` that would hide a feature.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import unittest
from pathlib import Path

import pytest

from DicomFidelityCommonLib.dependencies import SLICER_BUNDLED, read_requirements

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = {"DicomFidelityCommonLib": "DicomFidelityCommon", "SegmentationQALib": "SegmentationQA",
             "DoseAlignmentLib": "DoseAlignment", "CohortsLib": "Cohorts"}
SHELLS = [REPO / "DicomFidelityCommon/DicomFidelityCommon.py", REPO / "SegmentationQA/SegmentationQA.py",
          REPO / "DoseAlignment/DoseAlignment.py", REPO / "Cohorts/Cohorts.py"]
CLIS = [REPO / "SegmentationQA/SegmentationQALib/cli.py", REPO / "DoseAlignment/DoseAlignmentLib/cli.py",
        REPO / "Cohorts/CohortsLib/cli.py"]
# What the Slicer application itself provides (not pip packages), and our own module shells.
SLICER_APP = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "DICOMLib", "mrml", "DicomFidelityCommon", "SegmentationQA",
              "DoseAlignment", "Cohorts", "__future__"}
# Imported only by the self-tests, which run from the repository: pytest (installed by the self-test itself) and
# the test data builders of Testing/.
SELF_TEST_ONLY = {"pytest", "data_builders"}
# The one ImportError handler allowed: ISA-L is an optional speed-up with a zlib fallback writing the same stream.
ALLOWED_IMPORT_ERROR_HANDLERS = {"DicomFidelityCommon/DicomFidelityCommonLib/dicom/deflate.py"}
STDLIB = set(sys.stdlib_module_names)
# Optional requirements may be imported at load time: only behind the ImportError handler allowed above.
OPTIONAL = {r.module for r in read_requirements() if r.optional}


def production_files() -> list[Path]:
    files = list(SHELLS)
    for folder_package, folder in LIBRARIES.items():
        files += sorted((REPO / folder / folder_package).rglob("*.py"))
    return files


def module_file(name: str) -> Path | None:
    top = name.split(".")[0]
    if top not in LIBRARIES:
        return None
    base = REPO / LIBRARIES[top] / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(path: Path) -> str:
    for package, folder in LIBRARIES.items():
        root = REPO / folder
        if path.is_relative_to(root / package):
            parts = list(path.relative_to(root).with_suffix("").parts)
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return path.stem


def _imported_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # "from package import submodule" imports the submodule too
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")]
    return []


def load_time_imports(path: Path) -> set[str]:
    """Modules importing ``path`` imports: module-level statements (inside if/try/with too), class bodies, and the
    bodies of this file's functions that are called at module level or while defining a class."""
    tree = ast.parse(path.read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names: set[str] = set()
    followed: set[str] = set()

    def calls_in(expressions) -> None:
        for expression in expressions:
            for node in ast.walk(expression):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
                    if node.func.id not in followed:
                        followed.add(node.func.id)
                        block(functions[node.func.id].body, in_function=True)

    def block(statements, in_function: bool = False) -> None:
        for statement in statements:
            names.update(_imported_names(statement))
            if isinstance(statement, ast.ClassDef):
                calls_in(statement.bases + statement.keywords + statement.decorator_list)
                block(statement.body)
            elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not in_function:
                    calls_in(statement.decorator_list)
            elif isinstance(statement, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody"):
                    block(getattr(statement, field, []) or [], in_function)
                for handler in getattr(statement, "handlers", []):
                    block(handler.body, in_function)
                if isinstance(statement, ast.If):
                    calls_in([statement.test])
            elif not in_function:
                calls_in([statement])

    block(tree.body)
    return names


def all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names.update(_imported_names(node))
    return names


def reachable_third_party(start: Path) -> dict[str, list[str]]:
    """Third-party packages imported while ``start`` loads, each with the chain of modules that imports it."""
    found: dict[str, list[str]] = {}
    seen: set[Path] = set()
    stack = [(start, [start.name])]
    while stack:
        path, chain = stack.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in sorted(load_time_imports(path)):
            parts = name.split(".")
            top = parts[0]
            if top in LIBRARIES:
                for depth in range(1, len(parts) + 1):  # a submodule import runs its packages' __init__ first
                    target = module_file(".".join(parts[:depth]))
                    if target is not None:
                        stack.append((target, chain + [".".join(parts[:depth])]))
            elif top not in STDLIB | SLICER_APP | SLICER_BUNDLED | OPTIONAL:
                found.setdefault(top, chain + [name])
    return found


@pytest.mark.parametrize("entry", SHELLS + CLIS, ids=lambda p: p.name if p.name != "cli.py" else p.parent.name)
def test_loads_with_only_what_slicer_bundles(entry):
    found = reachable_third_party(entry)
    assert not found, "imported at load time: " + "; ".join(" -> ".join(chain) for chain in found.values())


def test_the_import_follower_sees_through_class_definitions(tmp_path):
    """The check above must see a third-party import hidden in a function called while defining a class."""
    probe = tmp_path / "probe.py"
    probe.write_text("def base():\n    import scipy\n    return object\n\n\nclass Logic(base()):\n    pass\n")
    assert "scipy" in load_time_imports(probe)
    probe.write_text("def later():\n    import scipy\n\n\nclass Logic:\n    def run(self):\n        later()\n")
    assert "scipy" not in load_time_imports(probe)


def test_every_third_party_import_is_bundled_or_a_requirement():
    listed = {r.module for r in read_requirements()}
    missing = {}
    for path in production_files():
        for name in all_imports(path):
            top = name.split(".")[0]
            if top in STDLIB or top in SLICER_APP or top in LIBRARIES or top in SLICER_BUNDLED or top in listed:
                continue
            if top in SELF_TEST_ONLY and path in SHELLS:
                continue
            missing.setdefault(top, str(path.relative_to(REPO)))
    assert not missing, f"not in Resources/requirements.txt: {missing}"
    assert {"highdicom", "pydicom", "skimage", "scipy"} <= listed


def test_no_import_cycles_and_modules_stay_apart():
    graph: dict[str, set[str]] = {}
    for path in production_files():
        if path in SHELLS:
            continue
        name = module_name(path)
        targets = set()
        for imported in all_imports(path):
            if module_file(imported) is not None and imported != name:
                targets.add(imported)
        graph[name] = targets
        if name.startswith("DoseAlignmentLib"):
            assert not any(t.startswith("SegmentationQALib") for t in targets), f"{name} imports SegmentationQALib"
        if name.startswith("SegmentationQALib"):
            assert not any(t.startswith("DoseAlignmentLib") for t in targets), f"{name} imports DoseAlignmentLib"
        if name.startswith("DicomFidelityCommonLib"):
            assert not any(t.startswith(("SegmentationQALib", "DoseAlignmentLib", "CohortsLib")) for t in targets), name
        if not name.startswith("CohortsLib"):  # the cohort tasks use both modules; nothing uses them
            assert not any(t.startswith("CohortsLib") for t in targets), name
    # a package importing its own submodules (a facade) is not a cycle with them
    edges = {m: {t for t in targets if not (m == t.rsplit(".", 1)[0] and module_file(m).name == "__init__.py")}
             for m, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            target = target if target in edges else target.rsplit(".", 1)[0]
            if target not in edges:
                continue
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_no_import_error_handler_hides_a_feature():
    offenders = []
    for path in production_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                if names & {"ImportError", "ModuleNotFoundError"}:
                    offenders.append(str(path.relative_to(REPO)))
    assert set(offenders) <= ALLOWED_IMPORT_ERROR_HANDLERS, offenders


def _run_hidden(code: str) -> subprocess.CompletedProcess:
    """Python with scikit-image hidden (as in a Slicer that has not installed it yet)."""
    path = os.pathsep.join(str(REPO / folder) for folder in LIBRARIES.values())
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['skimage'] = None\n" + code],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)


def test_without_scikit_image_the_logic_says_what_to_install():
    done = _run_hidden(
        "import slicer\n"
        "from DicomFidelityCommonLib.errors import MissingDependencyError\n"
        "from SegmentationQALib.logic import SegmentationQAMRMLLogic\n"
        "try:\n    SegmentationQAMRMLLogic(slicer.vtkMRMLScene())\n"
        "except MissingDependencyError as exc:\n    print(exc)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "missing package scikit-image; install with pip install 'scikit-image'"


def test_without_scikit_image_rtstruct_check_is_one_error_line(shared_data, tmp_path):
    totalseg = shared_data / "totalsegmentator" / "reference_files"
    done = _run_hidden(
        "from SegmentationQALib import cli\n"
        "sys.exit(cli.main(['rtstruct-check', "
        f"'--segmentation', {str(totalseg / 'example_seg_fast_force_split.nii.gz')!r}, "
        f"'--reference', {str(totalseg / 'example_ct.nii.gz')!r}, "
        f"'--report', {str(tmp_path / 'report')!r}, '--quiet']))\n")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0] == "error: missing package scikit-image; install with pip install 'scikit-image'"
    assert not (tmp_path / "report").exists()


def test_dose_shell_choices_are_the_library_enums():
    from DoseAlignmentLib.resample import Direction, Interpolation

    tree = ast.parse((REPO / "DoseAlignment/DoseAlignment.py").read_text())
    constants = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("DIRECTIONS", "INTERPOLATIONS")}
    assert constants["DIRECTIONS"] == tuple(d.value for d in Direction)
    assert constants["INTERPOLATIONS"] == tuple(i.value for i in Interpolation)


def test_seg_dicom_plugin_outranks_slicers_own():
    source = (REPO / "SegmentationQA/SegmentationQA.py").read_text()
    tree = ast.parse(source)
    value = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", "") == "SEG_PLUGIN_CONFIDENCE")
    assert 0.95 < value <= 1.0
    assert "loadable.confidence = SEG_PLUGIN_CONFIDENCE" in source


def test_batch_cli_script_passes_under_slicer_core():
    """Testing/Slicer/CliBatchTest.py is what CTest runs in `Slicer --no-main-window`; run it here too."""
    sys.path.insert(0, str(REPO / "Testing" / "Slicer"))
    import CliBatchTest

    result = unittest.TextTestRunner(verbosity=0).run(unittest.defaultTestLoader.loadTestsFromModule(CliBatchTest))
    assert result.testsRun == 3 and result.wasSuccessful(), result.failures + result.errors


def test_pydicom_internals_are_imported_in_one_module_only():
    internal = ("pydicom.filereader", "pydicom.filewriter", "pydicom.filebase", "pydicom.charset", "pydicom.values")
    offenders = []
    for path in production_files():
        if path.name == "pydicom_internals.py":
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(internal):
                offenders.append(f"{path.relative_to(REPO)}: {node.module}")
            if isinstance(node, ast.ImportFrom) and any(a.name == "RawDataElement" for a in node.names) \
                    and node.module != "DicomFidelityCommonLib.dicom.pydicom_internals":
                offenders.append(f"{path.relative_to(REPO)}: RawDataElement")
        if "._character_set" in text:
            offenders.append(f"{path.relative_to(REPO)}: _character_set")
    assert not offenders, offenders


def test_pydicom_internals_still_take_what_we_pass():
    """The parameters and fields our fast paths rely on, in the installed pydicom."""
    import inspect

    from DicomFidelityCommonLib.dicom import pydicom_internals as internals

    assert {"stop_when", "parent_encoding"} <= set(inspect.signature(internals.read_dataset).parameters)
    assert {"is_implicit_VR", "is_little_endian", "offset"} <= set(
        inspect.signature(internals.read_sequence).parameters)
    assert list(internals.RawDataElement._fields)[:7] == ["tag", "VR", "length", "value", "value_tell",
                                                          "is_implicit_VR", "is_little_endian"]
    assert "enforce_standard" in inspect.signature(internals.write_file_meta_info).parameters
    assert {"parent_encoding"} <= set(inspect.signature(internals.write_dataset).parameters)
    from pydicom import examples

    assert internals.character_set(examples.ct) == ["latin_1"]  # the Python codec the file's strings decode with


def test_cohort_shell_tasks_are_the_library_tasks():
    from CohortsLib.tasks import TASKS

    tree = ast.parse((REPO / "Cohorts/Cohorts.py").read_text())
    names = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", "") == "TASK_NAMES")
    assert names == tuple(sorted(TASKS))


def test_imports_are_absolute_so_these_checks_see_them():
    relative = [f"{path.relative_to(REPO)}:{node.lineno}" for path in production_files()
                for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative, relative
