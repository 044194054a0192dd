"""Cohorts: index a folder tree of DICOM files (SQLite), pair images with their doses and segmentations, run jobs.

``index`` and ``pairing`` are pure Python (stdlib sqlite3 and pydicom): no Slicer, vtk or qt, so they run in a
worker, a CLI or a test alike. ``runner`` runs a task on every case (local worker processes or a Dask cluster,
resumable, transactional per case) and ``manifest`` writes what a run leaves: manifest.csv, summary.json,
index.html. The tasks themselves (which use both modules) are CohortsLib's.
"""

from DicomFidelityCommonLib.cohort.index import IndexResult, UnreadableKind, index_tree, open_index
from DicomFidelityCommonLib.cohort.pairing import (
    Case,
    DoseGroup,
    DoseObject,
    LinkedObject,
    PairedBy,
    PairingResult,
    Unpaired,
    UnpairedReason,
    pair_cases,
)

__all__ = [
    "Case",
    "DoseGroup",
    "DoseObject",
    "IndexResult",
    "LinkedObject",
    "PairedBy",
    "PairingResult",
    "Unpaired",
    "UnpairedReason",
    "UnreadableKind",
    "index_tree",
    "open_index",
    "pair_cases",
]
