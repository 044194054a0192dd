"""A label volume file (.nii.gz, .nrrd, .mha, ...) as a LayeredSegmentation, in plain Python.

The same checks and steps as ``SegmentationQAMRMLLogic.loadSegmentationFile`` for a label volume (what
`segqa export-seg --segmentation labels.nii.gz --labels SPEC` reads), without a scene, so cohort workers (which
never import slicer) export a SEG equal to the single-case command's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DicomFidelityCommonLib.errors import InvalidInputFileError, WrongModalityError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.volume_files import check_image_header, check_nifti_voxels
from SegmentationQALib.segmentation import LayeredSegmentation

LABEL_VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
SEGMENTATION_SUFFIXES = (".seg.nrrd", ".seg.nhdr")


def volume_suffix(path: str | Path) -> str:
    """The file type suffix, with the two-part ones (.seg.nrrd, .nii.gz) whole."""
    name = Path(path).name.lower()
    for suffix in (*SEGMENTATION_SUFFIXES, ".nii.gz"):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def read_label_volume(path: str | Path, labels: str | Path | None = None) -> tuple[LayeredSegmentation, list[str]]:
    """One segment per non-zero value of a 3D integer label volume, described by ``labels`` (a label description
    file or a built-in map such as ``totalsegmentator:total``) when given; returns it and the label warnings."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InvalidInputFileError("no such file", path)
    suffix = volume_suffix(path)
    if suffix in SEGMENTATION_SUFFIXES or suffix not in LABEL_VOLUME_SUFFIXES:
        raise WrongModalityError(f"not a label volume ({', '.join(LABEL_VOLUME_SUFFIXES)})", path)
    check_image_header(path)
    check_nifti_voxels(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InvalidInputFileError(f"cannot read as a label volume ({str(exc).strip().splitlines()[-1]})",
                                    path) from exc
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise WrongModalityError("not a 3D single-component label volume", path)
    values = sitk.GetArrayFromImage(image)
    if values.dtype.kind == "f":
        if not np.all(np.mod(values, 1) == 0):
            raise WrongModalityError("voxel values are not integer labels (is this an image, not a segmentation?)",
                                     path)
        values = values.astype(np.int32)
    if values.size and values.min() < 0:
        raise WrongModalityError("negative label values: not a label volume", path)
    if values.size and values.max() > np.iinfo(np.uint16).max:  # would wrap around in the uint16 layer
        raise WrongModalityError(f"label value {values.max()} above 65535, the most a segmentation holds", path)
    values = values.astype(np.uint8 if not values.size or values.max() < 256 else np.uint16)
    layered = LayeredSegmentation.from_label_volume(VolumeGeometry.from_sitk(image), values)
    warnings: list[str] = []
    if labels is not None:
        from SegmentationQALib.labels import label_segmentation

        layered, warnings = label_segmentation(layered, labels)
    return layered, list(warnings)
