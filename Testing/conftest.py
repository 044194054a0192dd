"""Shared fixtures: the real data folder beside the repository (../shared/data, or $DICOMFIDELITY_DATA)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datapaths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        raise RuntimeError(f"real test data not found at {path}: "
                           "set DICOMFIDELITY_DATA or place shared/ beside the repo")
    return path
