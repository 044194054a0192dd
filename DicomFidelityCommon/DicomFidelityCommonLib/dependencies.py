"""Which third-party packages DicomFidelity needs, whether they are importable, and how to install them.

Standard library only: the module shells import this while Slicer loads them, before anything is installed. The
list is Resources/requirements.txt (one for the whole extension: Slicer installs every module's resources into one
Resources folder), or the installed distribution's requirements when the package was installed with pip.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from DicomFidelityCommonLib.errors import MissingDependencyError

# Import names of what Slicer 5.12's Python bundles (so no module may need anything else at load time).
SLICER_BUNDLED = frozenset({"numpy", "pydicom", "highdicom", "SimpleITK", "vtk", "PIL", "dicomweb_client", "requests"})
# Distribution name -> import name, where they differ.
IMPORT_NAMES = {"scikit-image": "skimage", "pynrrd": "nrrd", "pylibjpeg-libjpeg": "libjpeg",
                "pylibjpeg-openjpeg": "openjpeg", "pylibjpeg-rle": "rle", "pillow": "PIL",
                "dicomweb-client": "dicomweb_client", "simpleitk": "SimpleITK",
                "python-gdcm": "gdcm"}
DISTRIBUTION = "dicomfidelity"
REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"


@dataclass(frozen=True)
class Requirement:
    spec: str  # as pip takes it, e.g. "highdicom>=0.27"
    name: str  # distribution name
    module: str  # import name
    optional: bool = False  # the feature works without it (e.g. isal: zlib is the fallback)


def parse_requirement(spec: str, optional: bool = False) -> Requirement:
    name = re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0]
    return Requirement(spec.strip(), name, IMPORT_NAMES.get(name.lower(), name.replace("-", "_")), optional)


def read_requirements(path: str | Path | None = None) -> list[Requirement]:
    """The requirements file's entries (a comment containing 'optional' marks an optional one); without the file
    (a pip-installed package), the distribution's own requirements."""
    path = Path(path) if path is not None else REQUIREMENTS_FILE
    if path.is_file():
        requirements = []
        for line in path.read_text().splitlines():
            spec, _, comment = line.partition("#")
            if spec.strip():
                requirements.append(parse_requirement(spec, "optional" in comment.lower()))
        return requirements
    try:
        specs = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [parse_requirement(spec.split(";")[0]) for spec in specs if "extra ==" not in spec]


def is_importable(module: str) -> bool:
    """Whether ``import module`` would find it (a module set to None in sys.modules counts as missing)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module whose __spec__ is None
        return False


def missing_requirements(requirements: list[Requirement] | None = None,
                         include_optional: bool = False) -> list[Requirement]:
    requirements = read_requirements() if requirements is None else requirements
    return [r for r in requirements if (include_optional or not r.optional) and not is_importable(r.module)]


def install_hint(missing: list[Requirement]) -> str:
    specs = [r.spec for r in missing]
    if "slicer" in sys.modules and getattr(sys.modules["slicer"], "app", None) is not None:
        return f"slicer.util.pip_install({specs!r}) in Slicer's Python console"
    return "pip install " + " ".join(f"'{spec}'" for spec in specs)


def require(requirements: list[Requirement] | None = None) -> None:
    """Raise MissingDependencyError naming every missing (non-optional) package and how to install it."""
    missing = missing_requirements(requirements)
    if missing:
        names = ", ".join(r.name for r in missing)
        raise MissingDependencyError(f"missing package{'s' if len(missing) > 1 else ''} {names}; install with "
                                     f"{install_hint(missing)}")


def ensure_installed(ask: bool = True) -> None:
    """In the Slicer app: install what is missing (after asking), then check again; elsewhere: ``require``.

    Every action of the panels, the DICOM plugin and the console logics runs this first.
    """
    missing = missing_requirements(include_optional=True)
    if not missing:
        return
    slicer = sys.modules.get("slicer")
    if slicer is None or getattr(slicer, "app", None) is None or not hasattr(slicer.util, "pip_install"):
        require()
        return
    names = ", ".join(r.name for r in missing)
    if ask and not slicer.util.confirmOkCancelDisplay(
            f"DicomFidelity needs {names}, which Slicer does not include. Install now?"):
        require()
        return
    slicer.util.pip_install([r.spec for r in missing])
    importlib.invalidate_caches()
    require()
