"""The objects to send: their identifying header values, and transcoding to a transfer syntax a peer accepts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from DicomFidelityCommonLib.dicom.series import is_dicom_file, list_dicom_files
from DicomFidelityCommonLib.errors import InvalidInputFileError

# LABELMAP SEG path, work folder -> the same segments written as a BINARY SEG there (new SOP instance and series,
# same study, same referenced images). Injected by the module that owns SEG (SegmentationQALib): no import here.
LabelmapConverter = Callable[[Path, Path], Path]
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)  # what every storage SCP accepts, in preference order


@dataclass(frozen=True)
class ObjectHeader:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str = ""


def read_object_header(path: str | Path) -> ObjectHeader:
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"])
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise InvalidInputFileError(f"not a readable DICOM file ({exc})", path) from exc
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    sop_instance = ds.get("SOPInstanceUID") or (meta.get("MediaStorageSOPInstanceUID") if meta else None)
    syntax = meta.get("TransferSyntaxUID") if meta else None
    if not sop_class or not sop_instance:
        raise InvalidInputFileError("no SOPClassUID / SOPInstanceUID: not a storable DICOM object", path)
    if not syntax:
        raise InvalidInputFileError("no file meta TransferSyntaxUID (not a DICOM Part 10 file)", path)
    return ObjectHeader(path, str(sop_class), str(sop_instance), str(ds.get("SeriesInstanceUID", "")), str(syntax),
                        str(ds.get("StudyInstanceUID", "")))


def collect_files(sources: Iterable[str | Path]) -> list[Path]:
    """Files as given and the DICOM Part 10 files in folders given (recursively), each once, in the order given."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = [p for p in list_dicom_files(path) if is_dicom_file(p)]  # not the JSON beside them
            if not found:
                raise InvalidInputFileError("no DICOM files in this folder", path)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInputFileError("no such file or folder", path)
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def transcoded(path: str | Path, target: str) -> pydicom.Dataset:
    """The object re-encoded in ``target`` (an uncompressed syntax): deflated data is inflated on reading,
    encapsulated (compressed) pixel data is decompressed by pydicom's decoders (lossless: the decoded values)."""
    target = UID(target)
    if target not in UNCOMPRESSED:
        raise ValueError(f"transcoding only to uncompressed syntaxes, not {target}")
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in ds:
            ds.decompress()
    except Exception as exc:
        raise InvalidInputFileError(f"cannot transcode to {target.name} ({exc})", path) from exc
    ds.file_meta.TransferSyntaxUID = target
    return ds


def choose_uncompressed(accepted: Iterable[str]) -> str | None:
    accepted = set(accepted)
    return next((str(t) for t in UNCOMPRESSED if t in accepted), None)
