"""Image volume files (NRRD, NIfTI, MHA) read with SimpleITK: headers checked before any reader is handed them; and
written (write_image) whole or not at all, with a fast gzip for .nii.gz."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from DicomFidelityCommonLib.errors import InvalidInputFileError, WrongModalityError
from DicomFidelityCommonLib.memory import require_memory, voxel_bytes


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
    size = reader.GetSize()
    components = reader.GetNumberOfComponents()
    try:
        itemsize = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    except RuntimeError:
        itemsize = 8  # a type SimpleITK cannot hold: assume the widest
    # the image as read, and the numpy / label-layer copy made of it
    require_memory(voxel_bytes(size, itemsize * components, copies=2),
                   f"a {'x'.join(map(str, size))} image of {sitk.GetPixelIDValueAsString(reader.GetPixelID())}",
                   path)


def check_nifti_voxels(path: str | Path) -> None:
    """ITK's NIfTI reader silently turns NaN/Inf voxels into 0 and zero pixdim (with no qform/sform) into 1 mm:
    check those in the file itself. Only float voxels are scanned (in pieces); other problems SimpleITK reports."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        with (gzip.open if name.endswith(".gz") else open)(path, "rb") as handle:
            header = handle.read(348)
            endian = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            pixdim = struct.unpack(endian + "8f", header[76:108])
            qform, sform = struct.unpack(endian + "2h", header[252:256])
            if qform == 0 and sform == 0 and not (np.all(np.isfinite(pixdim[1:4])) and min(pixdim[1:4]) > 0):
                raise InvalidInputFileError(f"voxel size (pixdim) {list(pixdim[1:4])} is not positive and no "
                                            "qform/sform gives one", path, "pixdim")
            dtype = {16: np.dtype(endian + "f4"), 64: np.dtype(endian + "f8")}.get(datatype)
            if dtype is None:
                return
            handle.seek(int(struct.unpack(endian + "f", header[108:112])[0]))
            while chunk := handle.read(1 << 24):
                values = np.frombuffer(chunk[: len(chunk) // dtype.itemsize * dtype.itemsize], dtype)
                if not np.all(np.isfinite(values)):
                    raise WrongModalityError("voxel values include NaN or Inf: not a label volume", path)
    except (OSError, EOFError, struct.error):
        return  # unreadable: SimpleITK says why


def write_image(path: str | Path, image, compress: bool = False) -> Path:
    """A SimpleITK image written under ``path`` atomically. ``.nii.gz`` is always gzipped, by gzip_file (ISA-L at
    level 1 when installed): ITK gzips at zlib's default level whatever it is asked, several times slower (3.5 s ->
    0.4 s for a 512x512x40 float volume). Other formats are compressed by ITK when ``compress``."""
    import SimpleITK as sitk

    from DicomFidelityCommonLib.dicom.deflate import gzip_file
    from DicomFidelityCommonLib.safe_write import atomic_output_file

    path = Path(path)
    with atomic_output_file(path) as tmp:
        if path.name.lower().endswith(".nii.gz"):
            plain = tmp.with_name(tmp.name[:-len(".gz")])
            try:
                sitk.WriteImage(image, str(plain))
                gzip_file(plain, tmp)
            finally:
                plain.unlink(missing_ok=True)
        else:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path
