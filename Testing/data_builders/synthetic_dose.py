"""Synthetic RTDOSE and CT files with known geometry, written with pydicom, for tests and the Slicer self-test.

A dose that is a linear function of position is reproduced exactly by (tri)linear interpolation, so any geometry
mistake (swapped PixelSpacing, ignored orientation, assumed uniform offsets) shows as an error far above 1e-3 Gy.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.values import ds_texts
from DoseAlignmentLib.rtdose import RT_DOSE_STORAGE

Field = Callable[[np.ndarray], np.ndarray]  # LPS points (..., 3) -> values (...)


def linear_field(gradient=(0.05, -0.03, 0.04), constant=20.0) -> Field:
    gradient = np.asarray(gradient, float)

    def evaluate(points: np.ndarray) -> np.ndarray:
        return constant + np.asarray(points, float) @ gradient
    return evaluate


def _common(ds: Dataset, study_uid: str, frame_of_reference_uid: str, modality: str) -> None:
    today = datetime.date.today().strftime("%Y%m%d")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Synthetic^Dose"
    ds.PatientID = "DF-SYNTH"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = today
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "DicomFidelity synthetic"
    ds.ContentDate = today
    ds.ContentTime = "120000"


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def write_rtdose(path: str | Path, field: Field, image_position: Sequence[float], image_orientation: Sequence[float],
                 pixel_spacing: Sequence[float], rows: int, columns: int, frame_offsets: Sequence[float],
                 frame_of_reference_uid: str, study_uid: str | None = None, units: str = "GY",
                 dose_type: str = "PHYSICAL", summation_type: str = "PLAN", bits: int = 32,
                 absolute_offsets: bool = False) -> Path:
    """An RTDOSE sampling ``field`` at its voxel centres. ``frame_offsets`` are relative, along the normal;
    ``absolute_offsets`` writes them as z coordinates (only meaningful for axial grids), as some planning systems do."""
    position = np.asarray(image_position, float)
    orientation = np.asarray(image_orientation, float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    dy, dx = (float(v) for v in pixel_spacing)
    offsets = np.asarray(frame_offsets, float)
    i = np.arange(columns)[None, None, :, None] * dx * row_dir
    j = np.arange(rows)[None, :, None, None] * dy * col_dir
    k = offsets[:, None, None, None] * normal
    values = np.clip(field(position + i + j + k), 0, None)
    maximum = 2 ** bits - 1
    scaling = max(float(values.max()), 1e-9) / maximum * (1 + 1e-9)
    pixels = np.rint(values / scaling).astype(np.uint32 if bits == 32 else np.uint16)

    ds = Dataset()
    sop_instance = generate_uid()
    ds.file_meta = _file_meta(RT_DOSE_STORAGE, sop_instance)
    ds.SOPClassUID = RT_DOSE_STORAGE
    ds.SOPInstanceUID = sop_instance
    _common(ds, study_uid or generate_uid(), frame_of_reference_uid, "RTDOSE")
    ds.OperatorsName = ""
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ds_texts(position, 6)
    ds.ImageOrientationPatient = ds_texts(orientation, 10)
    ds.PixelSpacing = [dy, dx]
    ds.SliceThickness = f"{float(np.abs(np.diff(offsets)).min()) if offsets.size > 1 else 1.0:.6g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = len(offsets)
    ds.FrameIncrementPointer = 0x3004000C
    written = position[2] + offsets * normal[2] if absolute_offsets else offsets
    ds.GridFrameOffsetVector = ds_texts(written, 6)
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.DoseUnits = units
    ds.DoseType = dose_type
    ds.DoseSummationType = summation_type
    ds.DoseGridScaling = f"{scaling:.10g}"
    if summation_type in ("PLAN", "MULTI_PLAN", "FRACTION", "BEAM", "BRACHY", "CONTROL_POINT"):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
        item.ReferencedSOPInstanceUID = generate_uid()
        if summation_type in ("FRACTION", "BEAM", "BRACHY", "CONTROL_POINT"):
            fraction = Dataset()
            fraction.ReferencedFractionGroupNumber = 1
            if summation_type in ("BEAM", "CONTROL_POINT"):
                beam = Dataset()
                beam.ReferencedBeamNumber = 1
                fraction.ReferencedBeamSequence = [beam]
            item.ReferencedFractionGroupSequence = [fraction]
        ds.ReferencedRTPlanSequence = [item]
    ds.PixelData = pixels.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(folder: str | Path, geometry: VolumeGeometry, frame_of_reference_uid: str,
                    field: Field | None = None, study_uid: str | None = None, shuffle: bool = True) -> list[Path]:
    """A CT series on ``geometry`` (HU = ``field`` at voxel centres, or a water cylinder); files named in shuffled
    order so nothing can rely on file names or InstanceNumber."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    slices, rows, columns = geometry.shape
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    order = np.random.default_rng(7).permutation(slices) if shuffle else np.arange(slices)
    paths = []
    jj, ii = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    for n, k in enumerate(order):
        ijk = np.stack([ii, jj, np.full_like(ii, k)], axis=-1).astype(float)
        points = geometry.index_to_lps(ijk.reshape(-1, 3)).reshape(rows, columns, 3)
        if field is not None:
            hu = field(points)
        else:
            hu = np.where(np.hypot(points[..., 0], points[..., 1]) < 0.4 * geometry.spacing[0] * columns, 0.0, -1000.0)
        ds = Dataset()
        sop_instance = generate_uid()
        ds.file_meta = _file_meta(CTImageStorage, sop_instance)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_instance
        _common(ds, study_uid, frame_of_reference_uid, "CT")
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = int(n + 1)  # deliberately unrelated to position
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        position = geometry.index_to_lps([0, 0, k])
        ds.ImagePositionPatient = ds_texts(position, 6)
        ds.ImageOrientationPatient = ds_texts(geometry.image_orientation, 8)
        ds.PixelSpacing = [float(v) for v in geometry.pixel_spacing]
        ds.SliceThickness = f"{geometry.spacing[2]:.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.PixelData = np.rint(hu).astype(np.int16).tobytes()
        path = folder / f"slice_{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
