"""RTSTRUCT export, reading and checking, on the contours of ``fidelity.contour_segmentation`` (one contouring path).

Export writes exactly the contours the fidelity check predicted from: marching-squares polygons on each reference
image plane, CLOSED_PLANAR, islands and holes as separate contours, each referencing its CT instance. Reading
rasterises contours by voxel-centre inclusion with the even-odd rule (a contour inside another is a hole).
"""

from __future__ import annotations

import datetime
import enum
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from DicomFidelityCommonLib.dicom.series import ImageSeries, read_image_series
from DicomFidelityCommonLib.errors import (
    EmptySegmentationError,
    FrameOfReferenceMismatchError,
    GeometryError,
    InvalidInputFileError,
    MissingTagError,
    WrongModalityError,
)
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from DicomFidelityCommonLib.safe_write import atomic_output_file
from SegmentationQALib.rtstruct.contours import rasterize_contours
from SegmentationQALib.rtstruct.fidelity import SegmentContours, contour_segmentation
from SegmentationQALib.segmentation import LayeredSegmentation, Segment, default_color

ProgressCallback = Callable[[float, str], None]
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CONTOUR_DATA = Tag(0x3006, 0x0050)
PLANE_TOLERANCE_FRACTION = 0.05  # of the slice spacing: farther than this from a plane is "off the plane"
PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                          "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                          "StudyDescription")


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

    @classmethod
    def from_geometry(cls, geometry: VolumeGeometry) -> ReferenceImages:
        """Planes only (no DICOM images): enough to check or read, not to export."""
        return cls(geometry=geometry, sop_instance_uids=[None] * geometry.shape[0])


# ----------------------------------------------------------------------------------------------------------- export


@dataclass
class RtStructExportOptions:
    structure_set_label: str = "DicomFidelity"
    series_description: str = "Structure set exported by DicomFidelity"
    series_number: int = 3001
    roi_interpreted_type: str = ""  # Type 2; e.g. ORGAN, PTV. Empty: not stated.
    manufacturer: str = "DicomFidelity"


@dataclass
class RtStructRoiReport:
    roi_number: int
    name: str
    contours: int
    points: int
    observation_label: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RtStructExportResult:
    path: str
    sop_instance_uid: str
    rois: list[RtStructRoiReport]
    warnings: list[str]
    timings: dict[str, float]
    reference_paths: list[str] = field(default_factory=list)  # a reference series written with the export

    def to_json(self) -> dict:
        return {"path": self.path, "sop_instance_uid": self.sop_instance_uid, "reference_paths": self.reference_paths,
                "rois": [r.to_json() for r in self.rois], "warnings": self.warnings,
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()}}


def format_ds(values: np.ndarray) -> bytes:
    """DS multi-value text with 0.1 micrometre resolution; each value is far below DICOM's 16-character limit."""
    values = np.round(np.asarray(values, dtype=float).ravel(), 4) + 0.0  # + 0.0 turns -0.0 into 0.0
    if values.size and np.abs(values).max() >= 1e10:
        raise GeometryError("contour coordinate too large for a DICOM decimal string")
    text = "\\".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in values.tolist()).encode("ascii")
    return text + b" " if len(text) % 2 else text


def _contour_data_element(points_lps: np.ndarray) -> RawDataElement:
    # Pre-encoded: pydicom writes it as is, instead of validating a million decimal strings one by one.
    value = format_ds(points_lps)
    return RawDataElement(CONTOUR_DATA, "DS", len(value), value, 0, False, True)


def _roi_color(segment: Segment) -> list[int]:
    return [int(round(min(1.0, max(0.0, float(c))) * 255)) for c in segment.color[:3]]


def write_rtstruct(layered: LayeredSegmentation, reference: ReferenceImages | ImageSeries, output_path: str | Path,
                   options: RtStructExportOptions | None = None, contours: Sequence[SegmentContours] | None = None,
                   progress: ProgressCallback | None = None) -> RtStructExportResult:
    """Write one RTSTRUCT with one ROI per segment (empty segments are skipped, with a warning)."""
    started = time.perf_counter()
    options = options or RtStructExportOptions()
    progress = progress or (lambda fraction, message: None)
    if isinstance(reference, ImageSeries):
        reference = ReferenceImages.from_series(reference)
    if not reference.frame_of_reference_uid:
        raise FrameOfReferenceMismatchError("the reference images have no FrameOfReferenceUID")
    geometry = reference.geometry
    if contours is None:
        contours = contour_segmentation(layered, geometry, progress=lambda f, m: progress(0.5 * f, m))
    contoured = time.perf_counter()
    if not any(c.slices for c in contours):
        raise EmptySegmentationError("no segment has any voxel on the reference image planes; nothing to export")
    warnings: list[str] = list(reference.warnings)
    now = datetime.datetime.now()
    date, time_ = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    header = reference.header or Dataset()
    ds = Dataset()
    sop_uid = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time_
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    for keyword in PATIENT_STUDY_KEYWORDS:
        setattr(ds, keyword, header.get(keyword, ""))
    if not ds.StudyInstanceUID:
        ds.StudyInstanceUID = generate_uid()
        warnings.append("the reference has no StudyInstanceUID; the RTSTRUCT starts a new study")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = options.series_number
    ds.SeriesDate, ds.SeriesTime = date, time_
    ds.SeriesDescription = options.series_description
    ds.OperatorsName = ""
    ds.Manufacturer = options.manufacturer
    ds.FrameOfReferenceUID = reference.frame_of_reference_uid
    ds.PositionReferenceIndicator = header.get("PositionReferenceIndicator", "") or ""
    ds.StructureSetLabel = options.structure_set_label[:16]
    ds.StructureSetDate, ds.StructureSetTime = date, time_

    image_refs = {}
    for uid in reference.sop_instance_uids:
        if uid:
            item = Dataset()
            item.ReferencedSOPClassUID = reference.sop_class_uid
            item.ReferencedSOPInstanceUID = uid
            image_refs[uid] = item
    frame = Dataset()
    frame.FrameOfReferenceUID = reference.frame_of_reference_uid
    if image_refs and reference.series_instance_uid:
        series_item = Dataset()
        series_item.SeriesInstanceUID = reference.series_instance_uid
        series_item.ContourImageSequence = DicomSequence(list(image_refs.values()))
        study_item = Dataset()
        study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired; as used)
        study_item.ReferencedSOPInstanceUID = ds.StudyInstanceUID
        study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
        frame.RTReferencedStudySequence = DicomSequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    roi_items, contour_items, observation_items, reports = [], [], [], []
    affine = geometry.affine_lps
    roi_number = 0
    for index, (segment, seg_contours) in enumerate(zip(layered.segments, contours)):
        roi_number += 1
        roi_warnings = []
        if not seg_contours.slices:
            roi_warnings.append("no voxel on the reference planes: ROI written without contours")
        name = segment.name or f"ROI {roi_number}"
        if len(name) > 64:
            roi_warnings.append("ROI name truncated to 64 characters")
        label = name[:16]
        if len(name) > 16:
            roi_warnings.append(f"observation label truncated to 16 characters: {label!r}")
        roi = Dataset()
        roi.ROINumber = roi_number
        roi.ReferencedFrameOfReferenceUID = reference.frame_of_reference_uid
        roi.ROIName = name[:64]
        roi.ROIGenerationAlgorithm = (segment.algorithm_type or "MANUAL").upper()
        roi_items.append(roi)

        items, points = [], 0
        number = 0
        for k in sorted(seg_contours.slices):
            uid = reference.sop_instance_uids[k] if 0 <= k < len(reference.sop_instance_uids) else None
            for polygon in seg_contours.slices[k]:
                number += 1
                ijk1 = np.column_stack([polygon, np.full(len(polygon), float(k)), np.ones(len(polygon))])
                lps = (ijk1 @ affine.T)[:, :3]
                item = Dataset()
                if uid:
                    item.ContourImageSequence = DicomSequence([image_refs[uid]])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(polygon)
                item.ContourNumber = number
                item[CONTOUR_DATA] = _contour_data_element(lps)
                items.append(item)
                points += len(polygon)
            if not uid:
                roi_warnings.append(f"reference plane {k} has no known image; its contours reference none")
        contour_item = Dataset()
        contour_item.ROIDisplayColor = _roi_color(segment)
        if items:
            contour_item.ContourSequence = DicomSequence(items)
        contour_item.ReferencedROINumber = roi_number
        contour_items.append(contour_item)

        observation = Dataset()
        observation.ObservationNumber = roi_number
        observation.ReferencedROINumber = roi_number
        observation.ROIObservationLabel = label
        if segment.terminology is not None:
            code = Dataset()
            code.CodeValue = segment.terminology.type.value
            code.CodingSchemeDesignator = segment.terminology.type.scheme
            code.CodeMeaning = segment.terminology.type.meaning[:64]
            observation.RTROIIdentificationCodeSequence = DicomSequence([code])
        observation.RTROIInterpretedType = options.roi_interpreted_type
        observation.ROIInterpreter = ""
        observation_items.append(observation)
        reports.append(RtStructRoiReport(roi_number, name, len(items), points, label, sorted(set(roi_warnings))))
        warnings.extend(f"{name}: {w}" for w in sorted(set(roi_warnings)))
        progress(0.5 + 0.4 * (index + 1) / len(layered.segments), f"writing {name}")
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observation_items)
    built = time.perf_counter()
    output_path = Path(output_path)
    with atomic_output_file(output_path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    finished = time.perf_counter()
    progress(1.0, f"wrote {output_path}")
    return RtStructExportResult(path=str(output_path), sop_instance_uid=sop_uid, rois=reports, warnings=warnings,
                                timings={"contour_s": contoured - started, "build_s": built - contoured,
                                         "write_s": finished - built, "total_s": finished - started})


# ------------------------------------------------------------------------------------------------------------ read


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


def _contour_points(contour: Dataset) -> np.ndarray:
    data = contour.get("ContourData")
    if data is None:
        return np.zeros((0, 3))
    values = np.asarray([float(v) for v in (data if isinstance(data, (list, tuple, pydicom.multival.MultiValue)) else [data])])
    return values[: len(values) // 3 * 3].reshape(-1, 3)


def _rtstruct_frame_of_reference(ds: Dataset) -> str | None:
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
            points = _contour_points(contour)
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
        thickness = float(images.datasets[0].get("SpacingBetweenSlices") or images.datasets[0].get("SliceThickness") or 0)
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
                           frame_of_reference_uid=images.frame_of_reference_uid or _rtstruct_frame_of_reference(rtstruct),
                           series_instance_uid=images.series_instance_uid, header=first, synthesized=True,
                           warnings=warnings)


def load_reference(reference_folder: str | Path, rtstruct: Dataset | None = None) -> ReferenceImages:
    """The CT series of a folder; rebuilt from the RTSTRUCT's contours when the series is incomplete."""
    series = read_image_series(reference_folder)
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
            points = _contour_points(s)
            if len(points) and not (d.min() - half - 1e-3 <= float(points[0] @ normal) <= d.max() + half + 1e-3):
                outside = True
                break
        if outside:
            break
    if referenced - known or outside:
        return reference_from_rtstruct(rtstruct, series, reference_folder)
    return ReferenceImages.from_series(series)


@dataclass
class RtStructRoi:
    number: int
    name: str
    color: tuple[float, float, float]
    contours: int
    algorithm: str

    def to_json(self) -> dict:
        return {"number": self.number, "name": self.name, "color": list(self.color), "contours": self.contours,
                "algorithm": self.algorithm}


@dataclass
class RtStructLoadResult:
    segmentation: LayeredSegmentation
    reference: ReferenceImages
    rois: list[RtStructRoi]
    warnings: list[str]
    timings: dict[str, float]

    def to_json(self) -> dict:
        return {"rois": [r.to_json() for r in self.rois], "warnings": self.warnings,
                "voxel_counts": dict(zip([s.name for s in self.segmentation.segments], self.segmentation.voxel_counts())),
                "reference_geometry": self.reference.geometry.to_json(),
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()}}


def _roi_tables(ds: Dataset):
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    algorithms = {int(r.ROINumber): str(r.get("ROIGenerationAlgorithm", "") or "") for r in ds.get("StructureSetROISequence", [])}
    contours = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", []) if "ReferencedROINumber" in c}
    return names, algorithms, contours


def roi_contours_on_grid(contour_item: Dataset, geometry: VolumeGeometry) -> tuple[dict[int, list[np.ndarray]], list[str]]:
    """Contours of one ROI as (column, row) polygons per plane index, and what did not fit (off plane, outside)."""
    per_plane: dict[int, list[np.ndarray]] = defaultdict(list)
    problems = []
    tolerance = PLANE_TOLERANCE_FRACTION
    for number, contour in enumerate(contour_item.get("ContourSequence", []), start=1):
        kind = str(contour.get("ContourGeometricType", ""))
        points = _contour_points(contour)
        if kind == "POINT" or len(points) < 3:
            continue
        ijk = geometry.lps_to_index(points)
        k = float(np.median(ijk[:, 2]))
        plane = int(np.round(k))
        if abs(k - plane) > tolerance:
            problems.append(f"contour {number} is {abs(k - plane) * geometry.spacing[2]:.3f} mm off the nearest plane")
        if not 0 <= plane < geometry.shape[0]:
            problems.append(f"contour {number} lies beyond the reference planes; skipped")
            continue
        per_plane[plane].append(ijk[:, :2])
    return per_plane, problems


def read_rtstruct(path: str | Path, reference: ReferenceImages | ImageSeries | str | Path,
                  progress: ProgressCallback | None = None) -> RtStructLoadResult:
    """Read an RTSTRUCT into a layered segmentation on the reference planes (even-odd, voxel-centre inclusion).

    ``reference`` may be a folder with the CT series; when slices are missing, planes are rebuilt from the contours.
    Overlapping ROIs go into separate layers, as Slicer stores them.
    """
    started = time.perf_counter()
    progress = progress or (lambda fraction, message: None)
    ds = read_rtstruct_dataset(path)
    if isinstance(reference, (str, Path)):
        reference = load_reference(reference, ds)
    elif isinstance(reference, ImageSeries):
        reference = ReferenceImages.from_series(reference)
    geometry = reference.geometry
    warnings = list(reference.warnings)
    rt_frame = _rtstruct_frame_of_reference(ds)
    if rt_frame and reference.frame_of_reference_uid and rt_frame != reference.frame_of_reference_uid:
        raise FrameOfReferenceMismatchError(
            f"RTSTRUCT frame of reference {rt_frame} differs from the images' {reference.frame_of_reference_uid}", path)
    names, algorithms, contour_items = _roi_tables(ds)
    layers: list[np.ndarray] = []
    used: list[int] = []
    segments: list[Segment] = []
    rois: list[RtStructRoi] = []
    numbers = list(names)
    for position, number in enumerate(numbers):
        name = names[number] or f"ROI {number}"
        item = contour_items.get(number)
        color_values = item.get("ROIDisplayColor") if item is not None else None
        color = tuple(float(c) / 255.0 for c in color_values) if color_values and len(color_values) == 3 else default_color(number)
        count = len(item.get("ContourSequence", [])) if item is not None else 0
        rois.append(RtStructRoi(number, name, color, count, algorithms.get(number, "")))
        if item is None or count == 0:
            warnings.append(f"ROI {number} ({name!r}) has no contours; loaded as an empty segment")
            block, offset = None, None
        else:
            per_plane, problems = roi_contours_on_grid(item, geometry)
            warnings.extend(f"ROI {number} ({name!r}): {p}" for p in problems)
            block, offset = _rasterize_roi(per_plane, geometry)
        layer_index, label = _place(layers, used, block, offset, geometry)
        algorithm = algorithms.get(number, "") if algorithms.get(number, "") in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC") else "MANUAL"
        segments.append(Segment(name=name, layer=layer_index, label_value=label, color=color,
                                segment_id=f"ROI_{number}", algorithm_type=algorithm))
        progress((position + 1) / max(1, len(numbers)), f"read {name}")
    if not layers:
        layers.append(np.zeros(geometry.shape, dtype=np.uint8))
    layered = LayeredSegmentation(geometry, layers, segments)
    return RtStructLoadResult(layered, reference, rois, warnings, {"total_s": time.perf_counter() - started})


def _rasterize_roi(per_plane: dict[int, list[np.ndarray]], geometry: VolumeGeometry):
    if not per_plane:
        return None, None
    everything = np.concatenate([p for polygons in per_plane.values() for p in polygons])
    rows, cols = geometry.shape[1], geometry.shape[2]
    c0 = max(0, int(np.floor(everything[:, 0].min())))
    c1 = min(cols, int(np.ceil(everything[:, 0].max())) + 1)
    r0 = max(0, int(np.floor(everything[:, 1].min())))
    r1 = min(rows, int(np.ceil(everything[:, 1].max())) + 1)
    if c1 <= c0 or r1 <= r0:
        return None, None
    k0, k1 = min(per_plane), max(per_plane) + 1
    block = np.zeros((k1 - k0, r1 - r0, c1 - c0), dtype=bool)
    shift = np.array([c0, r0], dtype=float)
    for k, polygons in per_plane.items():
        block[k - k0] = rasterize_contours([p - shift for p in polygons], block.shape[1:])
    return block, (k0, r0, c0)


def _place(layers: list[np.ndarray], used: list[int], block, offset, geometry: VolumeGeometry) -> tuple[int, int]:
    """Put a ROI into the first layer where it overlaps nothing (Slicer's shared-labelmap rule); new layer if none.
    ``used`` holds the highest label value handed out per layer (empty ROIs get a value too, with no voxels)."""
    box = tuple(slice(o, o + s) for o, s in zip(offset, block.shape)) if block is not None else None
    for index, layer in enumerate(layers):
        label = used[index] + 1
        if label > np.iinfo(layer.dtype).max:
            continue
        if box is not None:
            target = layer[box]
            if np.any(target[block]):
                continue
            target[block] = label
        used[index] = label
        return index, label
    layers.append(np.zeros(geometry.shape, dtype=np.uint8))
    used.append(1)
    if box is not None:
        layers[-1][box][block] = 1
    return len(layers) - 1, 1


# ----------------------------------------------------------------------------------------------------------- check


class IssueKind(enum.Enum):
    FRAME_OF_REFERENCE_MISMATCH = "frame_of_reference_mismatch"
    ROI_WITHOUT_CONTOURS = "roi_without_contours"
    OFF_PLANE = "contour_off_slice_plane"
    NON_PLANAR = "contour_not_planar"
    OPEN_CONTOUR = "open_contour"
    TOO_FEW_POINTS = "too_few_points"
    SELF_INTERSECTING = "self_intersecting_contour"
    DUPLICATE_CONTOUR = "duplicate_contour"
    BEYOND_IMAGES = "contour_beyond_images"
    UNKNOWN_IMAGE = "unknown_referenced_image"


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass
class RtStructIssue:
    kind: IssueKind
    severity: Severity
    message: str
    roi_number: int | None = None
    roi_name: str | None = None
    contour_number: int | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "severity": self.severity.value, "message": self.message,
                "roi_number": self.roi_number, "roi_name": self.roi_name, "contour_number": self.contour_number}


@dataclass
class RtStructCheckResult:
    path: str
    issues: list[RtStructIssue]
    rois: int
    contours: int
    reference_synthesized: bool
    timings: dict[str, float]

    @property
    def ok(self) -> bool:
        return not any(i.severity == Severity.ERROR for i in self.issues)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for issue in self.issues:
            counts[issue.kind.value] += 1
        return dict(counts)

    def to_json(self) -> dict:
        return {"path": self.path, "ok": self.ok, "rois": self.rois, "contours": self.contours,
                "reference_synthesized": self.reference_synthesized, "counts": self.counts(),
                "issues": [i.to_json() for i in self.issues],
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()}}


def _is_simple(points_2d: np.ndarray) -> bool:
    from shapely.geometry import LinearRing

    try:
        return bool(LinearRing(points_2d).is_simple)
    except ValueError:
        return False


def check_rtstruct(path: str | Path, reference: ReferenceImages | ImageSeries | str | Path) -> RtStructCheckResult:
    """Check an existing RTSTRUCT against its images: what a planning system would reject or misread."""
    started = time.perf_counter()
    ds = read_rtstruct_dataset(path)
    if isinstance(reference, (str, Path)):
        reference = load_reference(reference, ds)
    elif isinstance(reference, ImageSeries):
        reference = ReferenceImages.from_series(reference)
    geometry = reference.geometry
    issues: list[RtStructIssue] = []
    frames = {str(r.ReferencedFrameOfReferenceUID) for r in ds.get("StructureSetROISequence", [])
              if r.get("ReferencedFrameOfReferenceUID")}
    frames |= {str(f.FrameOfReferenceUID) for f in ds.get("ReferencedFrameOfReferenceSequence", []) if f.get("FrameOfReferenceUID")}
    if reference.frame_of_reference_uid and frames - {reference.frame_of_reference_uid}:
        issues.append(RtStructIssue(IssueKind.FRAME_OF_REFERENCE_MISMATCH, Severity.ERROR,
                                    f"RTSTRUCT refers to frame(s) of reference {sorted(frames)}, the images are on "
                                    f"{reference.frame_of_reference_uid}"))
    known_images = {u for u in reference.sop_instance_uids if u}
    names, _, contour_items = _roi_tables(ds)
    normal = geometry.slice_normal
    step = float(geometry.spacing[2])
    total = 0
    for number, name in names.items():
        item = contour_items.get(number)
        sequence = item.get("ContourSequence", []) if item is not None else []
        if not sequence:
            issues.append(RtStructIssue(IssueKind.ROI_WITHOUT_CONTOURS, Severity.WARNING, "ROI has no contours",
                                        number, name))
            continue
        seen: dict[bytes, int] = {}
        for contour_number, contour in enumerate(sequence, start=1):
            total += 1

            def issue(kind, severity, message, _n=contour_number, _roi=number, _name=name):
                issues.append(RtStructIssue(kind, severity, message, _roi, _name, _n))

            kind = str(contour.get("ContourGeometricType", ""))
            points = _contour_points(contour)
            if kind == "POINT":
                continue
            if kind in ("OPEN_PLANAR", "OPEN_NONPLANAR"):
                issue(IssueKind.OPEN_CONTOUR, Severity.WARNING, f"{kind} contour: not a closed outline of a structure")
            if len(points) < 3:
                issue(IssueKind.TOO_FEW_POINTS, Severity.ERROR, f"{len(points)} point(s): cannot enclose anything")
                continue
            distances = points @ normal
            if np.ptp(distances) > 1e-3 + PLANE_TOLERANCE_FRACTION * step * 0.1:
                issue(IssueKind.NON_PLANAR, Severity.ERROR, f"points span {np.ptp(distances):.3f} mm along the slice normal")
            ijk = geometry.lps_to_index(points)
            k = float(np.median(ijk[:, 2]))
            if abs(k - round(k)) > PLANE_TOLERANCE_FRACTION:
                issue(IssueKind.OFF_PLANE, Severity.ERROR,
                      f"{abs(k - round(k)) * step:.3f} mm off the nearest image plane")
            if not 0 <= round(k) < geometry.shape[0]:
                issue(IssueKind.BEYOND_IMAGES, Severity.WARNING, "lies beyond the first/last image plane")
            if kind == "CLOSED_PLANAR" and not _is_simple(ijk[:, :2]):
                issue(IssueKind.SELF_INTERSECTING, Severity.ERROR, "contour crosses or touches itself")
            for image in contour.get("ContourImageSequence", []):
                uid = str(image.get("ReferencedSOPInstanceUID", ""))
                if known_images and uid and uid not in known_images and not reference.synthesized:
                    issue(IssueKind.UNKNOWN_IMAGE, Severity.WARNING, f"references image {uid}, not in the series")
            key = np.round(points, 2)
            start = int(np.lexsort(key.T[::-1])[0])
            key = np.roll(key, -start, axis=0)
            digest = np.ascontiguousarray(key).tobytes()
            reverse = np.ascontiguousarray(np.roll(key[::-1], 1, axis=0)).tobytes()
            for candidate in (digest, reverse):
                if candidate in seen:
                    issue(IssueKind.DUPLICATE_CONTOUR, Severity.WARNING, f"same points as contour {seen[candidate]}")
                    break
            else:
                seen[digest] = contour_number
    return RtStructCheckResult(str(path), issues, len(names), total, reference.synthesized,
                               {"total_s": time.perf_counter() - started})
