"""Typed errors. Every message names the file (and the tag, where one is at fault) so a user can act on it."""

from __future__ import annotations

from pathlib import Path


class DicomFidelityError(Exception):
    """Base class: anything the user can fix by changing the input or the options."""

    def __init__(self, message: str, path: str | Path | None = None, tag: str | None = None):
        self.path = str(path) if path is not None else None
        self.tag = tag
        parts = []
        if self.path:
            parts.append(self.path)
        if tag:
            parts.append(tag)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class InvalidInputFileError(DicomFidelityError):
    """The file is missing, unreadable, corrupt or truncated."""


class WrongModalityError(DicomFidelityError):
    """The file is DICOM but not the kind of object this operation needs."""


class MissingTagError(DicomFidelityError):
    """A required DICOM attribute is absent or empty."""


class FrameOfReferenceMismatchError(DicomFidelityError):
    """Two objects that must share a patient coordinate system do not."""


class GeometryError(DicomFidelityError):
    """Geometry that cannot be represented or is inconsistent (gaps, tilt, mismatched grids)."""


class EmptySegmentationError(DicomFidelityError):
    """Nothing to export: no segment has any voxel."""


class OverlapError(DicomFidelityError):
    """LABELMAP was requested but segments overlap."""


class ReferenceNotDicomError(DicomFidelityError):
    """The reference volume has no DICOM instances and exporting one was not requested."""


class UnitsMismatchError(DicomFidelityError):
    """Dose objects that cannot be combined (units, type)."""


class MissingDependencyError(DicomFidelityError):
    """A package the operation needs is not installed (Slicer bundles only some; the rest install on first use)."""


class GateRefusedError(DicomFidelityError):
    """The inputs are valid but a quality gate the user set refused the operation (e.g. --fail-on lossy)."""


class OutputWriteError(DicomFidelityError):
    """An output could not be written (disk full, quota, file size limit, read-only file system)."""
