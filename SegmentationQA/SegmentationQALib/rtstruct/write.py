"""Write an RTSTRUCT from exactly the contours the fidelity check predicted from (one contouring path).

Marching-squares polygons on each reference image plane, CLOSED_PLANAR, each referencing its CT instance; islands
are separate contours, holes either separate inner contours or keyholed into their outer contour
(``RtStructExportOptions.holes``, see contours.HoleEncoding).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from DicomFidelityCommonLib.dicom.pydicom_internals import RawDataElement
from DicomFidelityCommonLib.dicom.sanitize import PATIENT_STUDY_KEYWORDS, copy_valid
from DicomFidelityCommonLib.dicom.series import ImageSeries
from DicomFidelityCommonLib.errors import EmptySegmentationError, FrameOfReferenceMismatchError
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DicomFidelityCommonLib.safe_write import atomic_output_file
from DicomFidelityCommonLib.values import ds_multi_value_bytes
from SegmentationQALib.rtstruct.contours import HoleEncoding
from SegmentationQALib.rtstruct.dataset import RT_STRUCTURE_SET_STORAGE, ReferenceImages
from SegmentationQALib.rtstruct.fidelity import SegmentContours, contour_segmentation
from SegmentationQALib.segmentation import LayeredSegmentation, Segment

CONTOUR_DATA = Tag(0x3006, 0x0050)


@dataclass
class RtStructExportOptions:
    structure_set_label: str = "DicomFidelity"
    series_description: str = "Structure set exported by DicomFidelity"
    series_number: int = 3001
    roi_interpreted_type: str = ""  # Type 2; e.g. ORGAN, PTV. Empty: not stated.
    manufacturer: str = "DicomFidelity"
    holes: HoleEncoding = HoleEncoding.SEPARATE  # separate inner contours (XOR readers) or keyholes (any reader)


@dataclass
class RtStructRoiReport:
    roi_number: int
    name: str
    contours: int
    points: int
    observation_label: str
    warnings: list[str] = field(default_factory=list)
    keyholes: int = 0  # holes joined to their outer contour by a channel

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
                "timings_seconds": {k: round(v, 4) for k, v in self.timings.items()}}


def _contour_data_element(points_lps: np.ndarray) -> RawDataElement:
    # Pre-encoded: pydicom writes it as is, instead of validating a million decimal strings one by one.
    value = ds_multi_value_bytes(points_lps, decimals=4)
    return RawDataElement(CONTOUR_DATA, "DS", len(value), value, 0, False, True)


def _roi_color(segment: Segment) -> list[int]:
    return [int(round(min(1.0, max(0.0, float(c))) * 255)) for c in segment.color[:3]]


def write_rtstruct(layered: LayeredSegmentation, reference: ReferenceImages | ImageSeries, output_path: str | Path,
                   options: RtStructExportOptions | None = None, contours: Sequence[SegmentContours] | None = None,
                   progress: ProgressCallback | None = None) -> RtStructExportResult:
    """Write one RTSTRUCT with one ROI per segment (empty segments are skipped, with a warning).

    ``contours`` (from the fidelity check) are written as they are when their hole encoding is ``options.holes``;
    otherwise the segmentation is contoured again with that encoding."""
    started = time.perf_counter()
    options = options or RtStructExportOptions()
    holes = HoleEncoding(options.holes)
    progress = progress or no_progress
    if isinstance(reference, ImageSeries):
        reference = ReferenceImages.from_series(reference)
    if not reference.frame_of_reference_uid:
        raise FrameOfReferenceMismatchError("the reference images have no FrameOfReferenceUID")
    geometry = reference.geometry
    if contours is None or any(c.encoding != holes for c in contours):
        contours = contour_segmentation(layered, geometry, progress=lambda f, m: progress(0.5 * f, m), holes=holes)
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
        setattr(ds, keyword, "")
    warnings += copy_valid(header, ds, PATIENT_STUDY_KEYWORDS, "the reference images")
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = ""
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
        reports.append(RtStructRoiReport(roi_number, name, len(items), points, label, sorted(set(roi_warnings)),
                                         seg_contours.keyhole_count))
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
                                timings={"contour": contoured - started, "build": built - contoured,
                                         "write": finished - built, "total": finished - started})


