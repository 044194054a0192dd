"""Write a volume that was not loaded from DICOM (NRRD, NIfTI, made in Slicer) as a DICOM image series.

A SEG or RTSTRUCT must reference DICOM images; this gives it some, with new UIDs and the volume's exact geometry.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from DicomFidelityCommonLib.dicom.series import ImageSeries
from DicomFidelityCommonLib.errors import GeometryError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DicomFidelityCommonLib.safe_write import atomic_output_dir
from DicomFidelityCommonLib.values import ds_text


class ReferenceModality(enum.Enum):
    CT = "CT"
    MR = "MR"

    @property
    def sop_class_uid(self) -> str:
        return CTImageStorage if self == ReferenceModality.CT else MRImageStorage


@dataclass
class PatientStudyInfo:
    """Patient and study fields for the new series; anonymous unless the user says otherwise."""

    patient_name: str = "Anonymous^"
    patient_id: str = ""  # generated when empty
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_instance_uid: str = ""  # generated when empty
    study_id: str = "1"
    study_description: str = ""
    accession_number: str = ""
    series_description: str = "Reference volume exported by DicomFidelity"
    series_number: int = 1000
    frame_of_reference_uid: str = ""  # generated when empty
    # BodyPartExamined (e.g. ABDOMEN). Unknown (empty), Laterality is written empty as "actually unknown";
    # known and unpaired, Laterality is left out (General Series, Type 2C); paired parts need ``laterality``.
    body_part_examined: str = ""
    laterality: str = ""  # R or L, for a paired body part
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class PixelEncoding:
    """How float values map to stored integers: value = stored * slope + intercept."""

    dtype: np.dtype
    slope: float
    intercept: float

    @property
    def exact(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0


def choose_encoding(volume: np.ndarray) -> PixelEncoding:
    """Integers that fit 16 bits are stored as they are; anything else is scaled into int16 (slope/intercept)."""
    low, high = (float(volume.min()), float(volume.max())) if volume.size else (0.0, 0.0)
    integral = np.issubdtype(volume.dtype, np.integer) or bool(np.all(np.mod(volume, 1) == 0))
    if integral and low >= -32768 and high <= 32767:
        return PixelEncoding(np.dtype(np.int16), 1.0, 0.0)
    if integral and low >= 0 and high <= 65535:
        return PixelEncoding(np.dtype(np.uint16), 1.0, 0.0)
    span = high - low if high > low else 1.0
    slope = span / 65534.0
    intercept = low + 32767 * slope
    return PixelEncoding(np.dtype(np.int16), float(f"{slope:.10g}"), float(f"{intercept:.10g}"))


def write_reference_series(
    volume: np.ndarray,
    geometry: VolumeGeometry,
    output_dir: str | Path,
    modality: ReferenceModality = ReferenceModality.CT,
    info: PatientStudyInfo | None = None,
    progress: ProgressCallback | None = None,
) -> ImageSeries:
    """Write ``volume`` (indexed [slice, row, column], on ``geometry``) as one DICOM file per slice.

    Returns the written series (headers in slice order), ready to be a SEG/RTSTRUCT reference.
    """
    info = info or PatientStudyInfo()
    progress = progress or no_progress
    if tuple(volume.shape) != tuple(geometry.shape):
        raise GeometryError(f"volume shape {volume.shape} does not match geometry {geometry.shape}")
    direction = geometry.direction
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise GeometryError("the volume's axes are not orthogonal (sheared); DICOM slices cannot represent it")
    # DICOM readers stack slices along row x column; if the volume's slice axis points the other way, write the
    # slices in reverse so that slice order and geometry still agree for every reader.
    if np.dot(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2]) < 0:
        volume = volume[::-1]
        affine = geometry.affine_lps.copy()
        affine[:3, 3] = geometry.index_to_lps([0, 0, geometry.shape[0] - 1])
        affine[:3, 2] = -affine[:3, 2]
        geometry = VolumeGeometry(geometry.shape, affine)

    encoding = choose_encoding(volume)
    stored = (np.rint((volume.astype(np.float64) - encoding.intercept) / encoding.slope)
              if not encoding.exact else volume)
    stored = np.clip(stored, np.iinfo(encoding.dtype).min, np.iinfo(encoding.dtype).max).astype(encoding.dtype)
    now = datetime.datetime.now()
    date, time_ = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    study_uid = info.study_instance_uid or generate_uid()
    series_uid = generate_uid()
    frame_of_reference_uid = info.frame_of_reference_uid or generate_uid()
    patient_id = info.patient_id or f"DF{generate_uid()[-12:].replace('.', '')}"
    dx, dy, dz = (float(v) for v in geometry.spacing)
    positions = geometry.slice_positions_lps()
    window_low, window_high = float(np.percentile(volume, 1)), float(np.percentile(volume, 99))

    datasets: list[Dataset] = []
    paths: list[Path] = []
    output_dir = Path(output_dir)
    with atomic_output_dir(output_dir) as tmp:
        for k in range(geometry.shape[0]):
            ds = Dataset()
            sop_uid = generate_uid()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = modality.sop_class_uid
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID = modality.sop_class_uid
            ds.SOPInstanceUID = sop_uid
            ds.ImageType = (["DERIVED", "SECONDARY", "AXIAL"] if modality == ReferenceModality.CT
                            else ["DERIVED", "SECONDARY", "OTHER"])
            ds.InstanceCreationDate, ds.InstanceCreationTime = date, time_
            ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = date, time_, date, time_
            ds.ContentDate, ds.ContentTime = date, time_
            ds.AccessionNumber = info.accession_number
            ds.Modality = modality.value
            ds.Manufacturer = "DicomFidelity"
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = info.study_description
            ds.SeriesDescription = info.series_description
            ds.PatientName = info.patient_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = info.patient_birth_date
            ds.PatientSex = info.patient_sex
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = info.study_id
            ds.SeriesNumber = info.series_number
            ds.PatientPosition = ""  # unknown for a volume that did not come from a scanner
            ds.InstanceNumber = k + 1
            ds.PatientOrientation = ""
            if info.body_part_examined:
                ds.BodyPartExamined = info.body_part_examined.upper()
            if info.laterality or not info.body_part_examined:
                ds.Laterality = info.laterality.upper()  # empty: actually unknown (no body part given)
            ds.FrameOfReferenceUID = frame_of_reference_uid
            ds.PositionReferenceIndicator = ""
            ds.ImagePositionPatient = [ds_text(float(v)) for v in positions[k]]
            ds.ImageOrientationPatient = [ds_text(v) for v in geometry.image_orientation]
            ds.PixelSpacing = [ds_text(dy), ds_text(dx)]
            ds.SliceThickness = ds_text(dz)
            ds.SpacingBetweenSlices = ds_text(dz)
            ds.SliceLocation = ds_text(float(np.dot(positions[k], geometry.slice_normal)))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = int(geometry.shape[1]), int(geometry.shape[2])
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1 if encoding.dtype == np.int16 else 0
            ds.RescaleIntercept = ds_text(encoding.intercept)
            ds.RescaleSlope = ds_text(encoding.slope)
            ds.WindowCenter = ds_text((window_low + window_high) / 2)
            ds.WindowWidth = ds_text(max(1.0, window_high - window_low))
            if modality == ReferenceModality.CT:
                ds.RescaleType = "HU"
                ds.KVP = ""
                ds.AcquisitionNumber = 1
            else:
                ds.ScanningSequence = "RM"  # research mode: the acquisition is unknown
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "3D"
                ds.EchoTime = ""
                ds.EchoTrainLength = ""
                ds.RepetitionTime = ""
                ds.ImagedNucleus = "1H"
                ds.MagneticFieldStrength = ""
                ds.AcquisitionNumber = 1
                del ds.RescaleIntercept, ds.RescaleSlope
                if not encoding.exact:
                    # MR Image has no rescale; the Real World Value Mapping would, but readers ignore it.
                    raise GeometryError("MR reference series needs integer voxel values; choose CT for float data")
            ds.BurnedInAnnotation = "NO"
            for keyword, value in info.extra.items():
                setattr(ds, keyword, value)
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            path = tmp / f"IMG{k + 1:04d}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            datasets.append(ds)
            paths.append(output_dir / path.name)
            if k % 16 == 0:
                progress((k + 1) / geometry.shape[0], f"writing slice {k + 1}/{geometry.shape[0]}")
    # Headers only, as read_image_series would give them, and the geometry exactly as DICOM now states it.
    for ds in datasets:
        del ds.PixelData
    written = VolumeGeometry(geometry.shape, geometry.affine_lps)
    warnings = [] if info.body_part_examined else [
        "the reference series has no body part, so its Laterality is written empty (unknown); give the body part "
        "(--body-part, e.g. ABDOMEN) to write BodyPartExamined instead"]
    return ImageSeries(paths=paths, datasets=datasets, geometry=written, warnings=warnings)
