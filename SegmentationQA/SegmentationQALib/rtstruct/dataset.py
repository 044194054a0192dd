"""An RTSTRUCT's dataset and the image planes its contours go on: what reading, checking and writing share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from DicomFidelityCommonLib.dicom.series import ImageSeries, read_image_series
from DicomFidelityCommonLib.errors import GeometryError, InvalidInputFileError, MissingTagError, WrongModalityError
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PLANE_TOLERANCE_FRACTION = 0.05  # of the slice spacing: farther than this from a plane is "off the plane"


@dataclass
class ReferenceImages:
    """The image planes contours go on, and what identifies each plane's image (None where it is unknown)."""

    geometry: VolumeGeometry
    sop_instance_uids: list[str | None]
    sop_class_uid: str = CT_IMAGE_STORAGE
    frame_of_reference_uid: str | None = None
    series_instance_uid: str | None = None
    header: Dataset | None = field(default=None, repr=False)  # patient and study attributes come from here
    synthesized: bool = False  # True when planes were rebuilt from an RTSTRUCT because CT slices are missing
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_series(cls, series: ImageSeries) -> ReferenceImages:
        first = series.datasets[0]
        return cls(geometry=series.geometry, sop_instance_uids=series.sop_instance_uids,
                   sop_class_uid=str(first.SOPClassUID), frame_of_reference_uid=series.frame_of_reference_uid,
                   series_instance_uid=series.series_instance_uid, header=first, warnings=list(series.warnings))


def is_rtstruct_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file of an RTSTRUCT, from its file meta (a deflated SEG is not inflated to say
    no); a file without meta by its Modality. False for anything unreadable: the reader it goes to names that."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        if meta.get("MediaStorageSOPClassUID"):
            return str(meta.MediaStorageSOPClassUID) == RT_STRUCTURE_SET_STORAGE
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except Exception:  # not DICOM, or damaged
        return False
    return str(ds.get("Modality", "")) == "RTSTRUCT" or str(ds.get("SOPClassUID", "")) == RT_STRUCTURE_SET_STORAGE


def read_rtstruct_dataset(path: str | Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise InvalidInputFileError(f"not a readable DICOM file ({exc})", path) from exc
    if str(ds.get("Modality", "")) != "RTSTRUCT" and str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
        raise WrongModalityError(f"not an RTSTRUCT (Modality {ds.get('Modality', '?')})", path)
    if "StructureSetROISequence" not in ds:
        raise MissingTagError("RTSTRUCT without StructureSetROISequence", path, "StructureSetROISequence")
    return ds


def contour_points(contour: Dataset, path: str | Path | None = None) -> np.ndarray:
    """(n, 3) LPS points; ContourData that is not finite x, y, z triples is a corrupt file, not a shorter contour."""
    data = contour.get("ContourData")
    if data is None:
        return np.zeros((0, 3))
    values = np.asarray([float(v) for v in (data if isinstance(data, (list, tuple, pydicom.multival.MultiValue))
                                            else [data])])
    if len(values) % 3:
        raise InvalidInputFileError(f"ContourData has {len(values)} values, not x, y, z triples", path, "ContourData")
    if not np.all(np.isfinite(values)):
        raise GeometryError("ContourData holds non-finite coordinates (nan or inf)", path, "ContourData")
    return values.reshape(-1, 3)


def rtstruct_frame_of_reference(ds: Dataset) -> str | None:
    for item in ds.get("ReferencedFrameOfReferenceSequence", []):
        if item.get("FrameOfReferenceUID"):
            return str(item.FrameOfReferenceUID)
    for item in ds.get("StructureSetROISequence", []):
        if item.get("ReferencedFrameOfReferenceUID"):
            return str(item.ReferencedFrameOfReferenceUID)
    return None


def reference_from_rtstruct(rtstruct: Dataset, images: ImageSeries, path: str | Path | None = None) -> ReferenceImages:
    """Image planes for an RTSTRUCT whose CT series is incomplete: in-plane geometry from the CT slices present,
    planes from the CT slices and every contour plane, on the CT slice step; image UIDs from ContourImageSequence."""
    normal = images.geometry.slice_normal
    ct_distances = images.geometry.slice_positions_lps() @ normal
    planes: dict[float, str | None] = {}
    for contour_item in rtstruct.get("ROIContourSequence", []):
        for contour in contour_item.get("ContourSequence", []):
            points = contour_points(contour, path)
            if not len(points):
                continue
            distance = float(np.median(points @ normal))
            uid = None
            for image in contour.get("ContourImageSequence", []):
                uid = str(image.get("ReferencedSOPInstanceUID", "")) or None
            key = round(distance, 3)
            if planes.get(key) is None:
                planes[key] = uid
    if len(images.datasets) > 1:
        step = float(images.geometry.spacing[2])
    else:
        contour_planes = np.array(sorted(planes))
        gaps = np.diff(contour_planes)
        gaps = gaps[gaps > 1e-3]
        thickness = float(images.datasets[0].get("SpacingBetweenSlices") or images.datasets[0].get("SliceThickness")
                          or 0)
        step = thickness if thickness > 0 else (float(gaps.min()) if gaps.size else 1.0)
    all_distances = np.concatenate([ct_distances, np.array(sorted(planes), dtype=float)])
    anchor = float(ct_distances[0])
    offsets = (all_distances - anchor) / step
    off_lattice = np.abs(offsets - np.round(offsets)) * step
    warnings = list(images.warnings)
    if np.any(off_lattice > PLANE_TOLERANCE_FRACTION * step):
        warnings.append(f"{int(np.sum(off_lattice > PLANE_TOLERANCE_FRACTION * step))} contour planes are off the "
                        f"CT slice lattice (step {step:g} mm); they go to the nearest plane")
    low, high = int(np.round(offsets.min())), int(np.round(offsets.max()))
    count = high - low + 1
    if count > 5000:
        raise GeometryError(f"rebuilt reference would have {count} planes; contour planes are inconsistent", path)
    origin = images.geometry.origin_lps + (low * step) * normal
    affine = affine_from_dicom(origin, images.geometry.image_orientation, images.geometry.pixel_spacing, normal * step)
    geometry = VolumeGeometry((count, images.geometry.shape[1], images.geometry.shape[2]), affine)
    uids: list[str | None] = [None] * count
    for distance, uid in planes.items():
        uids[int(np.round((distance - anchor) / step)) - low] = uid
    for distance, uid in zip(ct_distances, images.sop_instance_uids):
        uids[int(np.round((distance - anchor) / step)) - low] = uid
    missing = sum(1 for u in uids if u is None)
    warnings.append(f"reference planes rebuilt from the RTSTRUCT: {count} planes, {len(images.datasets)} CT slice(s) "
                    f"present, {missing} plane(s) without a known image")
    first = images.datasets[0]
    return ReferenceImages(geometry=geometry, sop_instance_uids=uids, sop_class_uid=str(first.SOPClassUID),
                           frame_of_reference_uid=(images.frame_of_reference_uid
                                                   or rtstruct_frame_of_reference(rtstruct)),
                           series_instance_uid=images.series_instance_uid, header=first, synthesized=True,
                           warnings=warnings)


def load_reference(reference_folder: str | Path | ImageSeries, rtstruct: Dataset | None = None) -> ReferenceImages:
    """The CT series of a folder (or one already read); rebuilt from the RTSTRUCT's contours when the series is
    incomplete."""
    series = reference_folder if isinstance(reference_folder, ImageSeries) else read_image_series(reference_folder)
    if rtstruct is None:
        return ReferenceImages.from_series(series)
    known = set(series.sop_instance_uids)
    referenced = {str(i.ReferencedSOPInstanceUID) for c in rtstruct.get("ROIContourSequence", [])
                  for s in c.get("ContourSequence", []) for i in s.get("ContourImageSequence", [])
                  if i.get("ReferencedSOPInstanceUID")}
    normal = series.geometry.slice_normal
    d = series.geometry.slice_positions_lps() @ normal
    half = 0.5 * float(series.geometry.spacing[2]) if len(series.datasets) > 1 else 0.0
    outside = False
    for c in rtstruct.get("ROIContourSequence", []):
        for s in c.get("ContourSequence", []):
            points = contour_points(s, getattr(rtstruct, "filename", None))
            if len(points) and not (d.min() - half - 1e-3 <= float(points[0] @ normal) <= d.max() + half + 1e-3):
                outside = True
                break
        if outside:
            break
    if referenced - known or outside:
        return reference_from_rtstruct(rtstruct, series,
                                       None if isinstance(reference_folder, ImageSeries) else reference_folder)
    return ReferenceImages.from_series(series)


def roi_tables(ds: Dataset):
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    algorithms = {int(r.ROINumber): str(r.get("ROIGenerationAlgorithm", "") or "")
                  for r in ds.get("StructureSetROISequence", [])}
    contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", []) if "ReferencedROINumber" in c}
    return names, algorithms, contours


def resolve_reference(reference: ReferenceImages | ImageSeries | str | Path, rtstruct: Dataset) -> ReferenceImages:
    """The planes an RTSTRUCT is read or checked on, from what the caller has: a CT folder or a series already read
    (either rebuilt from the contours when incomplete), or planes already made."""
    if isinstance(reference, (str, Path, ImageSeries)):
        return load_reference(reference, rtstruct)
    return reference
