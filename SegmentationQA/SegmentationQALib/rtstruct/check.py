"""Check an existing RTSTRUCT against its images: what a planning system would reject or misread."""

from __future__ import annotations

import enum
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from DicomFidelityCommonLib.dicom.series import ImageSeries
from SegmentationQALib.rtstruct import dataset as rt


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
                "timings_seconds": {k: round(v, 4) for k, v in self.timings.items()}}


def _is_simple(points_2d: np.ndarray) -> bool:
    from shapely.geometry import LinearRing

    try:
        return bool(LinearRing(points_2d).is_simple)
    except ValueError:
        return False


def check_rtstruct(path: str | Path, reference: rt.ReferenceImages | ImageSeries | str | Path,
                   dataset: Dataset | None = None) -> RtStructCheckResult:
    """Check an existing RTSTRUCT against its images: what a planning system would reject or misread
    (``dataset``: the file already read, as read_rtstruct takes it)."""
    started = time.perf_counter()
    ds = dataset if dataset is not None else rt.read_rtstruct_dataset(path)
    reference = rt.resolve_reference(reference, ds)
    geometry = reference.geometry
    issues: list[RtStructIssue] = []
    frames = {str(r.ReferencedFrameOfReferenceUID) for r in ds.get("StructureSetROISequence", [])
              if r.get("ReferencedFrameOfReferenceUID")}
    frames |= {str(f.FrameOfReferenceUID) for f in ds.get("ReferencedFrameOfReferenceSequence", [])
               if f.get("FrameOfReferenceUID")}
    if reference.frame_of_reference_uid and frames - {reference.frame_of_reference_uid}:
        issues.append(RtStructIssue(IssueKind.FRAME_OF_REFERENCE_MISMATCH, Severity.ERROR,
                                    f"RTSTRUCT refers to frame(s) of reference {sorted(frames)}, the images are on "
                                    f"{reference.frame_of_reference_uid}"))
    known_images = {u for u in reference.sop_instance_uids if u}
    names, _, contour_items = rt.roi_tables(ds)
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
            points = rt.contour_points(contour, path)
            if kind == "POINT":
                continue
            if kind in ("OPEN_PLANAR", "OPEN_NONPLANAR"):
                issue(IssueKind.OPEN_CONTOUR, Severity.WARNING, f"{kind} contour: not a closed outline of a structure")
            if len(points) < 3:
                issue(IssueKind.TOO_FEW_POINTS, Severity.ERROR, f"{len(points)} point(s): cannot enclose anything")
                continue
            distances = points @ normal
            if np.ptp(distances) > 1e-3 + rt.PLANE_TOLERANCE_FRACTION * step * 0.1:
                issue(IssueKind.NON_PLANAR, Severity.ERROR,
                      f"points span {np.ptp(distances):.3f} mm along the slice normal")
            ijk = geometry.lps_to_index(points)
            k = float(np.median(ijk[:, 2]))
            if abs(k - round(k)) > rt.PLANE_TOLERANCE_FRACTION:
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
                               {"total": time.perf_counter() - started})
