"""Write aligned arrays for ML (NRRD, NIfTI, NumPy .npz) and an RTDOSE on the CT grid; every write is atomic."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from DicomFidelityCommonLib.dicom.sanitize import PATIENT_STUDY_KEYWORDS, copy_valid
from DicomFidelityCommonLib.errors import GeometryError, InvalidInputFileError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.safe_write import atomic_output_file
from DicomFidelityCommonLib.values import ds_texts
from DicomFidelityCommonLib.volume_files import write_image
from DoseAlignmentLib.align import AlignmentResult
from DoseAlignmentLib.rtdose import RT_DOSE_STORAGE, DoseUnits

VOLUME_FORMATS = {".nrrd": "NRRD", ".nhdr": "NRRD", ".nii": "NIfTI", ".nii.gz": "NIfTI", ".mha": "MetaImage"}
ARRAY_FORMATS = (*VOLUME_FORMATS, ".npz")


def output_format(path: str | Path) -> str:
    name = Path(path).name.lower()
    for suffix in sorted(ARRAY_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise InvalidInputFileError(f"unsupported output format (use one of {', '.join(ARRAY_FORMATS)})", path)


def write_volume(path: str | Path, array: np.ndarray, geometry: VolumeGeometry, metadata: dict | None = None,
                 compress: bool = False) -> Path:
    """One volume (NRRD, NIfTI, MHA) with its exact geometry; SimpleITK converts LPS to NIfTI's RAS itself."""
    path = Path(path)
    if output_format(path) == ".npz":
        raise InvalidInputFileError("use write_npz for .npz", path)
    image = geometry.to_sitk(np.ascontiguousarray(array))
    for key, value in (metadata or {}).items():
        image.SetMetaData(str(key), value if isinstance(value, str) else json.dumps(value))
    return write_image(path, image, compress)


def write_npz(path: str | Path, result: AlignmentResult, compress: bool = False) -> Path:
    """dose (float32, Gy), ct (float32, HU, if loaded), inside_dose_grid, affines and metadata, all one shape."""
    path = Path(path)
    arrays = {"dose": result.dose, "inside_dose_grid": result.inside_dose_grid.astype(np.uint8)}
    if result.reference_array is not None:
        if result.reference_array.shape != result.dose.shape:
            raise GeometryError(f"reference {result.reference_array.shape} and dose {result.dose.shape} "
                                "differ in shape")
        arrays["ct"] = result.reference_array.astype(np.float32, copy=False)
    if result.geometry is not None:
        arrays["affine_lps"] = result.geometry.affine_lps
        arrays["affine_ras"] = result.geometry.affine_ras
        arrays["spacing"] = result.geometry.spacing
    if result.frame_offsets is not None:  # ct-to-dose on non-uniform frame offsets: no single affine
        grid = result.dose_grids[0]
        arrays["frame_offsets_mm"] = result.frame_offsets
        arrays["in_plane_affine_lps"] = grid.in_plane_affine()
    arrays["metadata_json"] = np.array(json.dumps(result.metadata()))
    with atomic_output_file(path) as tmp:
        with open(tmp, "wb") as handle:
            (np.savez_compressed if compress else np.savez)(handle, **arrays)
    return Path(path)


def write_arrays(path: str | Path, result: AlignmentResult, reference_path: str | Path | None = None,
                 compress: bool = False) -> dict[str, str]:
    """Dose to ``path``; the reference on the same grid to ``reference_path`` (NRRD/NIfTI) or inside the .npz."""
    suffix = output_format(path)
    outputs = {}
    if suffix == ".npz":
        write_npz(path, result, compress)
        outputs["arrays"] = str(path)
        return outputs
    if result.geometry is None:
        raise GeometryError("the dose grid has non-uniform frame offsets, which NRRD/NIfTI cannot hold; "
                            "write .npz", path)
    metadata = {"DoseUnits": result.units.value, "DicomFidelity": json.dumps(result.metadata())}
    write_volume(path, result.dose, result.geometry, metadata, compress)
    outputs["dose"] = str(path)
    if reference_path is not None:
        if result.reference_array is None:
            raise InvalidInputFileError("the reference voxels were not loaded", reference_path)
        write_volume(reference_path, result.reference_array, result.geometry, {"Units": "HU"}, compress)
        outputs["reference"] = str(reference_path)
    return outputs


PATIENT_STUDY = PATIENT_STUDY_KEYWORDS


def build_rtdose(dose: np.ndarray, geometry: VolumeGeometry, units: DoseUnits, dose_type: str, summation_type: str,
                 frame_of_reference_uid: str, template: Dataset | None = None, reference_headers: Dataset | None = None,
                 series_description: str = "Dose on CT grid (DicomFidelity)",
                 warnings: list[str] | None = None) -> Dataset:
    """An RT Dose instance on ``geometry``; patient and study from the CT, plan references from the source dose.
    Source values invalid for their VR are not copied (``warnings`` names them)."""
    direction = geometry.direction
    normal = np.cross(direction[:, 0], direction[:, 1])
    step = geometry.affine_lps[:3, 2]
    if abs(abs(float(np.dot(step / np.linalg.norm(step), normal))) - 1) > 1e-4:
        raise GeometryError("the grid's slices are sheared (gantry tilt): an RTDOSE cannot describe it")
    if abs(float(np.dot(direction[:, 0], direction[:, 1]))) > 1e-4:
        raise GeometryError("the grid's rows and columns are not orthogonal: an RTDOSE cannot describe it")
    # 16 bits (step = max/65535, 1 mGy at 65 Gy) rather than 32: dicom3tools' dciodvfy cannot check 32-bit OW pixel
    # data (it aborts), and every RTDOSE we write must be verifiable.
    clipped = np.clip(np.asarray(dose, dtype=np.float32), 0, None)
    maximum = float(clipped.max())
    scaling = maximum / 65535.0 if maximum > 0 else 1.0
    pixels = np.rint(clipped * np.float32(1.0 / scaling)).astype(np.uint16)

    now = datetime.datetime.now()
    ds = Dataset()
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = RT_DOSE_STORAGE
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SOPClassUID = RT_DOSE_STORAGE
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID",
                    "AccessionNumber"):
        setattr(ds, keyword, "")
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    notes = copy_valid(template, ds, PATIENT_STUDY, "the source RTDOSE")
    if reference_headers is not None:
        notes = copy_valid(reference_headers, ds, PATIENT_STUDY, "the reference CT")
    if warnings is not None:
        warnings.extend(notes)
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 901
    ds.SeriesDescription = series_description
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.OperatorsName = ""
    ds.Manufacturer = "DicomFidelity"
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ImagePositionPatient = ds_texts(geometry.origin_lps, 6)
    ds.ImageOrientationPatient = ds_texts(geometry.image_orientation, 8)
    ds.PixelSpacing = ds_texts(geometry.pixel_spacing, 6)
    slice_step = float(np.dot(step, normal))
    ds.SliceThickness = f"{abs(slice_step):.6g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(geometry.shape[1]), int(geometry.shape[2])
    ds.NumberOfFrames = int(geometry.shape[0])
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    ds.GridFrameOffsetVector = ds_texts(np.arange(geometry.shape[0]) * slice_step, 6)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = units.value
    ds.DoseType = dose_type or "PHYSICAL"
    ds.DoseSummationType = summation_type or "PLAN"
    ds.DoseGridScaling = f"{scaling:.10g}"
    plans = template.get("ReferencedRTPlanSequence") if template is not None else None
    if plans:
        items = []
        for plan in plans:  # the plan only: beam/fraction references do not hold for a sum
            item = Dataset()
            item.ReferencedSOPClassUID = plan.ReferencedSOPClassUID
            item.ReferencedSOPInstanceUID = plan.ReferencedSOPInstanceUID
            if ds.DoseSummationType not in ("PLAN", "MULTI_PLAN") and "ReferencedFractionGroupSequence" in plan:
                item.ReferencedFractionGroupSequence = plan.ReferencedFractionGroupSequence
            items.append(item)
        ds.ReferencedRTPlanSequence = DicomSequence(items)
    ds.PixelData = pixels.tobytes()
    return ds


def write_rtdose(path: str | Path, result: AlignmentResult) -> Path:
    """The dose of a dose-to-ct alignment as an RTDOSE on the CT grid (dciodvfy clean)."""
    if result.geometry is None or result.reference is None:
        raise GeometryError("an RTDOSE on the reference grid needs a dose-to-ct alignment", path)
    reference = result.reference
    uid = reference.frame_of_reference_uid or (result.dose_grids[0].frame_of_reference_uid
                                               if result.dose_grids else None)
    if not uid:
        raise InvalidInputFileError("no FrameOfReferenceUID known for the reference: cannot write an RTDOSE", path)
    first = result.dose_grids[0]
    summation = first.summation_type if len(result.dose_grids) == 1 else (
        "PLAN" if first.summation_type in ("BEAM", "BRACHY", "CONTROL_POINT") else first.summation_type)
    headers = reference.series.datasets[0] if reference.series is not None else None
    ds = build_rtdose(result.dose, result.geometry, result.units, first.dose_type, summation, uid, first.dataset,
                      headers, warnings=result.warnings)
    path = Path(path)
    with atomic_output_file(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)
