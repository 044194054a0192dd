"""Shared fixtures: the real data folder beside the repository (../shared/data, or $DICOMFIDELITY_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    configured = os.environ.get("DICOMFIDELITY_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        raise RuntimeError(f"real test data not found at {path}: set DICOMFIDELITY_DATA or place shared/ beside the repo")
    return path
