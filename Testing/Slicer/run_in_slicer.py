"""Run the project's pytest suites inside a real Slicer (`Slicer --no-main-window --python-script THIS [ARGS]`).

The same tests that CI runs under the slicer-core wheel, against the application's own MRML, VTK, pydicom and
highdicom. Extra arguments go to pytest. Exits with pytest's code.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    for folder in ("DicomFidelityCommon", "SegmentationQA", "DoseAlignment", "Testing"):
        sys.path.insert(0, str(REPOSITORY / folder))
    if importlib.util.find_spec("pytest") is None:
        import slicer

        slicer.util.pip_install("pytest")
    import pytest

    return int(pytest.main([str(REPOSITORY / "Testing" / "unit"), str(REPOSITORY / "Testing" / "mrml"),
                            "-p", "no:cacheprovider", f"--rootdir={REPOSITORY}", *argv]))


if __name__ == "__main__":
    code = main(sys.argv[1:])
    try:
        import slicer

        slicer.util.exit(code)
    except (ImportError, AttributeError):
        sys.exit(code)
