"""Read an RTSTRUCT into a layered segmentation: even-odd rule, voxel-centre inclusion (a contour inside another
is a hole; a keyholed contour, a hole joined to its outer contour by a channel, reads the same); overlapping ROIs go
into separate layers, as Slicer stores them."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from DicomFidelityCommonLib.dicom.series import ImageSeries
from DicomFidelityCommonLib.errors import FrameOfReferenceMismatchError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from SegmentationQALib.rtstruct.contours import rasterize_contours
from SegmentationQALib.rtstruct.dataset import (
    PLANE_TOLERANCE_FRACTION,
    ReferenceImages,
    contour_points,
    read_rtstruct_dataset,
    resolve_reference,
    roi_tables,
    rtstruct_frame_of_reference,
)
from SegmentationQALib.segmentation import LayeredSegmentation, LayerPlacer, Segment, default_color


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
                "voxel_counts": dict(zip([s.name for s in self.segmentation.segments],
                                         self.segmentation.voxel_counts())),
                "reference_geometry": self.reference.geometry.to_json(),
                "timings_seconds": {k: round(v, 4) for k, v in self.timings.items()}}


def roi_contours_on_grid(contour_item: Dataset, geometry: VolumeGeometry,
                         path: str | Path | None = None) -> tuple[dict[int, list[np.ndarray]], list[str]]:
    """Contours of one ROI as (column, row) polygons per plane index, and what did not fit (off plane, outside)."""
    per_plane: dict[int, list[np.ndarray]] = defaultdict(list)
    problems = []
    tolerance = PLANE_TOLERANCE_FRACTION
    for number, contour in enumerate(contour_item.get("ContourSequence", []), start=1):
        kind = str(contour.get("ContourGeometricType", ""))
        points = contour_points(contour, path)
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
                  progress: ProgressCallback | None = None, dataset: Dataset | None = None) -> RtStructLoadResult:
    """Read an RTSTRUCT into a layered segmentation on the reference planes (even-odd, voxel-centre inclusion).

    ``reference`` may be a folder with the CT series; when slices are missing, planes are rebuilt from the contours.
    Overlapping ROIs go into separate layers, as Slicer stores them. ``dataset``: the file already read
    (read_rtstruct_dataset), so a caller that needs it too reads it once.
    """
    started = time.perf_counter()
    progress = progress or no_progress
    ds = dataset if dataset is not None else read_rtstruct_dataset(path)
    reference = resolve_reference(reference, ds)
    geometry = reference.geometry
    warnings = list(reference.warnings)
    rt_frame = rtstruct_frame_of_reference(ds)
    if rt_frame and reference.frame_of_reference_uid and rt_frame != reference.frame_of_reference_uid:
        raise FrameOfReferenceMismatchError(
            f"RTSTRUCT frame of reference {rt_frame} differs from the images' {reference.frame_of_reference_uid}", path)
    names, algorithms, contour_items = roi_tables(ds)
    placer = LayerPlacer(geometry.shape)
    segments: list[Segment] = []
    rois: list[RtStructRoi] = []
    numbers = list(names)
    for position, number in enumerate(numbers):
        name = names[number] or f"ROI {number}"
        item = contour_items.get(number)
        color_values = item.get("ROIDisplayColor") if item is not None else None
        color = (tuple(float(c) / 255.0 for c in color_values) if color_values and len(color_values) == 3
                 else default_color(number))
        count = len(item.get("ContourSequence", [])) if item is not None else 0
        rois.append(RtStructRoi(number, name, color, count, algorithms.get(number, "")))
        if item is None or count == 0:
            warnings.append(f"ROI {number} ({name!r}) has no contours; loaded as an empty segment")
            block, offset = None, None
        else:
            per_plane, problems = roi_contours_on_grid(item, geometry, path)
            warnings.extend(f"ROI {number} ({name!r}): {p}" for p in problems)
            block, offset = _rasterize_roi(per_plane, geometry)
        layer_index, label = placer.place(block, offset)
        algorithm = (algorithms.get(number, "")
                     if algorithms.get(number, "") in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC") else "MANUAL")
        segments.append(Segment(name=name, layer=layer_index, label_value=label, color=color,
                                segment_id=f"ROI_{number}", algorithm_type=algorithm))
        progress((position + 1) / max(1, len(numbers)), f"read {name}")
    layered = LayeredSegmentation(geometry, placer.finish(), segments)
    return RtStructLoadResult(layered, reference, rois, warnings, {"total": time.perf_counter() - started})


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
