"""Where the real test data is: ../shared/data beside the repository, or $DICOMFIDELITY_DATA (also for tests that
list its files when they are collected, before fixtures exist)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    configured = os.environ.get("DICOMFIDELITY_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
