"""Image volume files (NRRD, NIfTI, MHA) read with SimpleITK: headers checked before any reader is handed them."""

from __future__ import annotations

from pathlib import Path

from DicomFidelityCommonLib.errors import InvalidInputFileError


def check_image_header(path: str | Path) -> None:
    """Read only the header with SimpleITK, so a corrupt file is a Python error and not a crash in C++ (Slicer's
    teem-based readers abort the process on some)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InvalidInputFileError(f"corrupt or unsupported image file ({detail[:200]})", path) from exc
