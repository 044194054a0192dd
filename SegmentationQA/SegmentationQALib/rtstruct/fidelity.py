"""RTSTRUCT fidelity check: what an RTSTRUCT export keeps of each segment, before it is sent anywhere.

For each segment the check computes the very contours the exporter writes (``contour_segmentation``; there is no
second contouring path), rasterises them back the way planning systems and common readers do (even-odd, voxel-centre
inclusion on the reference image planes), brings the result back to the segmentation's own grid and compares it
with the original labelmap in patient space. Losses come from three places, each reported on its own:

* resampling: the segmentation grid differs from the reference image grid (finer, oblique, shifted), so parts
  between the reference planes or finer than a reference voxel are lost or changed;
* coverage: parts beyond the first/last reference slice or outside the image rows/columns have no plane to go on;
* contouring: voxel-centre round trip of our marching-squares contours is exact, but one-voxel-thin parts enclose
  only about half their voxel area, so planning systems that compute volume from contour area (and readers that
  round vertices) see them differently; reported as thin voxels and as the contour-area volume change;
* holes: written as separate inner contours (``HoleEncoding.SEPARATE``) they are read right only by readers that
  XOR a plane's contours; the check rasterises each contour on its own and ORs them, as union readers do, and
  warns how many holes (and voxels) those fill. Written as keyholes (``HoleEncoding.KEYHOLE``) the check
  rasterises the keyholed polygons back both ways and reports what the channels cost (voxels, contour area).
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from DicomFidelityCommonLib.errors import GateRefusedError
from DicomFidelityCommonLib.geometry import VolumeGeometry, resample_labels
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from SegmentationQALib.rtstruct.contours import (
    KEYHOLE_WIDTH_PIXELS,
    HoleEncoding,
    keyhole_contours,
    rasterize_contours,
    rasterize_union,
    signed_area,
    slice_contours,
)
from SegmentationQALib.segmentation import LayeredSegmentation


class Verdict(enum.Enum):
    LOSSLESS = "lossless"
    MINOR = "minor"
    LOSSY = "lossy"

    @property
    def rank(self) -> int:
        return {"lossless": 0, "minor": 1, "lossy": 2}[self.value]


@dataclass
class FidelityThresholds:
    """When a segment counts as lossy; anything changed below these is minor, nothing changed is lossless.

    Defaults: more than 1 % voxel volume change, Dice below 0.98, more than 5 % of the voxels in one-voxel-thin
    parts, or more than 10 % difference between the contour-area volume (what a planning system reports) and the
    voxel volume. A contour-area difference above 3 % alone makes a segment minor.
    """

    lossy_volume_change_percent: float = 1.0
    lossy_dice: float = 0.98
    lossy_thin_fraction: float = 0.05
    lossy_contour_volume_change_percent: float = 10.0
    minor_contour_volume_change_percent: float = 3.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SegmentContours:
    """The planar contours of one segment: reference slice index -> (column, row) pixel-coordinate polygons."""

    index: int
    name: str
    slices: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)
    signed_areas: dict[int, list[float]] = field(default_factory=dict, repr=False)  # >0 island, <0 hole
    voxels: dict[int, int] = field(default_factory=dict, repr=False)  # voxels per plane the contours came from
    encoding: HoleEncoding = HoleEncoding.SEPARATE
    keyholes: dict[int, int] = field(default_factory=dict, repr=False)  # channels cut per plane (keyhole)
    keyhole_area_pixels: float = 0.0  # contour area the channels take
    keyhole_voxels_changed: int = 0  # voxels the keyholed polygons, read back either way, differ from the plane
    union_voxels_gained: int = 0  # voxels a union reader fills beyond an even-odd reader (holes it fills)

    @property
    def contour_count(self) -> int:
        return sum(len(v) for v in self.slices.values())

    @property
    def islands(self) -> int:
        return sum(1 for areas in self.signed_areas.values() for a in areas if a > 0)

    @property
    def holes(self) -> int:
        """Holes of the segment, however written (inner contours, or joined to an outer contour by a channel)."""
        return self.separate_holes + self.keyhole_count

    @property
    def separate_holes(self) -> int:
        """Holes written as inner contours of their own: what a union reader fills."""
        return sum(1 for areas in self.signed_areas.values() for a in areas if a < 0)

    @property
    def keyhole_count(self) -> int:
        return sum(self.keyholes.values())

    def enclosed_area_pixels(self) -> float:
        """Even-odd area in pixels: our contours wind one way around islands and the other way around holes."""
        return float(abs(sum(sum(areas) for areas in self.signed_areas.values())))


@dataclass
class SegmentFidelity:
    name: str
    segment_id: str
    verdict: Verdict
    reasons: list[str]
    voxels_original: int
    voxels_roundtrip: int
    voxels_lost: int
    voxels_gained: int
    volume_original_mm3: float
    volume_roundtrip_mm3: float
    volume_change_percent: float
    contour_volume_mm3: float
    contour_volume_change_percent: float
    dice: float
    hd95_mm: float | None
    slices_affected: int
    islands: int
    holes: int
    contours: int
    thin_voxels: int
    resampling_lost: int
    resampling_gained: int
    beyond_reference_voxels: int
    worst_slice: int | None  # slice index on the segmentation grid
    holes_encoding: str = HoleEncoding.SEPARATE.value
    union_reader_holes_filled: int = 0  # holes written as inner contours: a union reader fills them
    union_reader_voxels_gained: int = 0  # voxels it fills (reference planes), beyond what an even-odd reader reads
    keyholes: int = 0  # channels joining a hole to its outer contour
    keyhole_voxels_changed: int = 0  # voxels the keyholed polygons, read back (even-odd or union), lose or gain
    keyhole_area_mm2: float = 0.0  # contour area the channels take
    picture: dict | None = field(default=None, repr=False)  # worst slice masks, for the report (not serialised)

    def to_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "picture"}
        data["verdict"] = self.verdict.value
        for key in ("volume_original_mm3", "volume_roundtrip_mm3", "contour_volume_mm3"):
            data[key] = round(float(data[key]), 3)
        for key in ("volume_change_percent", "contour_volume_change_percent"):
            data[key] = round(float(data[key]), 4)
        data["dice"] = round(float(self.dice), 6)
        data["keyhole_area_mm2"] = round(float(self.keyhole_area_mm2), 4)
        data["hd95_mm"] = None if self.hd95_mm is None else round(float(self.hd95_mm), 4)
        return data


@dataclass
class FidelityResult:
    segments: list[SegmentFidelity]
    thresholds: FidelityThresholds
    segmentation_geometry: VolumeGeometry
    reference_geometry: VolumeGeometry
    same_grid: bool
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    contours: list[SegmentContours] = field(default_factory=list, repr=False)  # what an export writes, reused by it
    holes: HoleEncoding = HoleEncoding.SEPARATE

    @property
    def worst_verdict(self) -> Verdict:
        return max((s.verdict for s in self.segments), key=lambda v: v.rank, default=Verdict.LOSSLESS)

    def verdict_table(self) -> list[dict]:
        """Rows for a table widget: the columns a user decides on."""
        columns = ("name", "verdict", "voxels_lost", "voxels_gained", "volume_change_percent",
                   "contour_volume_change_percent", "dice", "hd95_mm", "islands", "holes",
                   "union_reader_voxels_gained", "keyholes", "thin_voxels", "slices_affected")
        return [{c: s.to_json()[c] for c in columns} for s in self.segments]

    def to_json(self) -> dict:
        return {
            "verdict": self.worst_verdict.value,
            "counts": {v.value: sum(1 for s in self.segments if s.verdict == v) for v in Verdict},
            "thresholds": self.thresholds.to_json(),
            "same_grid": self.same_grid,
            "segmentation_geometry": self.segmentation_geometry.to_json(),
            "reference_geometry": self.reference_geometry.to_json(),
            "holes_encoding": self.holes.value,
            "contour_geometry": contour_geometry_text(self.holes),
            "segments": [s.to_json() for s in self.segments],
            "warnings": list(self.warnings),
            "timings_seconds": {k: round(v, 4) for k, v in self.timings.items()},
        }


def contour_geometry_text(holes: HoleEncoding) -> str:
    """One sentence on what the contours are, for reports."""
    if holes == HoleEncoding.KEYHOLE:
        return ("marching-squares iso-line at 0.5 on each reference image plane; islands outer contours, each hole "
                f"joined to its outer contour by a {KEYHOLE_WIDTH_PIXELS:g}-pixel channel on a quarter-pixel line "
                "(keyhole: one simple polygon per outer region); read back by voxel-centre inclusion, even-odd "
                "and per-contour union alike")
    return ("marching-squares iso-line at 0.5 on each reference image plane; islands outer, holes inner contours "
            "(no keyholes); read back even-odd by voxel-centre inclusion (readers that take the union of a plane's "
            "contours fill the holes)")


def _object_slices(labels: np.ndarray) -> list:
    from scipy import ndimage

    if labels.dtype.kind not in "ui":
        labels = labels.astype(np.int64)
    if labels.dtype.kind == "u" and labels.dtype.itemsize > 4:
        labels = labels.astype(np.int64)
    return ndimage.find_objects(labels) if labels.size and labels.max() > 0 else []


def _bbox(objects: list, value: int):
    return objects[value - 1] if 0 < value <= len(objects) else None


def _union(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def contour_labels(mask: np.ndarray, offset: tuple[int, int, int], index: int, name: str,
                   holes: HoleEncoding = HoleEncoding.SEPARATE) -> tuple[SegmentContours, np.ndarray]:
    """Contours of a boolean block (slices, rows, cols) placed at ``offset`` on the reference grid, and its round
    trip as an even-odd reader sees it. Planes with holes are also read as a union reader would (each contour
    filled on its own, OR-ed): what that adds is counted, as is what keyhole channels change."""
    holes = HoleEncoding(holes)
    result = SegmentContours(index=index, name=name, encoding=holes)
    roundtrip = np.zeros_like(mask)
    k0, r0, c0 = offset
    shift = np.array([c0, r0], dtype=float)
    for k in range(mask.shape[0]):
        plane = mask[k]
        if not plane.any():
            continue
        contours = slice_contours(plane)
        if holes == HoleEncoding.KEYHOLE:
            keyholed = keyhole_contours(contours)
            if keyholed.bridges:
                result.keyholes[k0 + k] = keyholed.bridges
                result.keyhole_area_pixels += keyholed.area_pixels
            contours = keyholed.polygons
        areas = [signed_area(c) for c in contours]
        roundtrip[k] = rasterize_contours(contours, plane.shape)
        if result.keyholes.get(k0 + k) or any(a < 0 for a in areas):
            union = rasterize_union(contours, plane.shape)
            result.union_voxels_gained += int(np.count_nonzero(union & ~roundtrip[k]))
            if result.keyholes.get(k0 + k):
                result.keyhole_voxels_changed += int(np.count_nonzero((roundtrip[k] | union) != plane))
        result.slices[k0 + k] = [c + shift for c in contours]
        result.signed_areas[k0 + k] = areas
        result.voxels[k0 + k] = int(np.count_nonzero(plane))
    return result, roundtrip


def contour_segmentation(layered: LayeredSegmentation, reference: VolumeGeometry,
                         progress: ProgressCallback | None = None,
                         holes: HoleEncoding = HoleEncoding.SEPARATE) -> list[SegmentContours]:
    """The contours an RTSTRUCT export writes for every segment, on the reference image planes (used by export)."""
    contours, _ = _contour_all(layered, reference, progress, keep_roundtrip=False, holes=holes)
    return contours


def _contour_all(layered, reference, progress, keep_roundtrip, holes=HoleEncoding.SEPARATE):
    progress = progress or no_progress
    contours: list[SegmentContours | None] = [None] * len(layered.segments)
    per_layer = {}
    total = max(1, len(layered.segments))
    done = 0
    for layer_index, layer in enumerate(layered.layers):
        members = [(i, s) for i, s in enumerate(layered.segments) if s.layer == layer_index]
        if not members:
            continue
        on_reference = resample_labels(layer, layered.geometry, reference)
        objects = _object_slices(on_reference)
        roundtrip = np.zeros(reference.shape, dtype=np.int32) if keep_roundtrip else None
        for index, segment in members:
            box = _bbox(objects, segment.label_value)
            if box is None:
                contours[index] = SegmentContours(index=index, name=segment.name, encoding=HoleEncoding(holes))
            else:
                block = on_reference[box] == segment.label_value
                contours[index], back = contour_labels(block, tuple(s.start for s in box), index, segment.name,
                                                       holes)
                if roundtrip is not None:
                    target = roundtrip[box]
                    target[back & (target == 0)] = segment.label_value
            done += 1
            progress(0.6 * done / total, f"contouring {segment.name}")
        per_layer[layer_index] = (on_reference, roundtrip)
    return contours, per_layer


def _hd95(a: np.ndarray, b: np.ndarray, spacing_kji) -> float | None:
    """Symmetric 95th-percentile surface distance (mm) between two boolean blocks."""
    from scipy import ndimage

    if not a.any() or not b.any():
        return None
    a, b = np.pad(a, 1), np.pad(b, 1)
    surface_a = a & ~ndimage.binary_erosion(a)
    surface_b = b & ~ndimage.binary_erosion(b)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing_kji)[surface_a]
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing_kji)[surface_b]
    return float(np.percentile(np.concatenate([to_b, to_a]), 95))


def _thin_voxels(mask: np.ndarray) -> int:
    """Voxels of one-voxel-thin structures on their slice: not inside any 2x2 block of the segment, and either an
    isolated voxel or part of a thin run of at least two voxels (a lone corner step of a round edge is not counted)."""
    from scipy import ndimage

    if not mask.any():
        return 0
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    thin = padded & ~ndimage.binary_opening(padded, structure=np.ones((1, 2, 2), dtype=bool))
    if not thin.any():
        return 0
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = True
    runs, count = ndimage.label(thin, structure=in_plane)
    sizes = np.bincount(runs.ravel(), minlength=count + 1)
    neighbours = ndimage.convolve(padded.astype(np.uint8), in_plane.astype(np.uint8), mode="constant") - padded
    keep = (sizes[runs] >= 2) | (neighbours == 0)
    return int(np.count_nonzero(thin & keep))


def _beyond_reference(mask: np.ndarray, offset, source: VolumeGeometry, reference: VolumeGeometry) -> int:
    """Voxels whose centre lies outside the slab of the reference images (beyond first/last slice, rows, columns)."""
    kji = np.argwhere(mask)
    if kji.size == 0:
        return 0
    ijk = (kji + np.asarray(offset))[:, ::-1].astype(float)
    ref = reference.lps_to_index(source.index_to_lps(ijk))
    limits = np.array(reference.shape[::-1], dtype=float) - 0.5
    outside = np.any((ref < -0.5) | (ref > limits), axis=1)
    return int(np.count_nonzero(outside))


def check_rtstruct_fidelity(layered: LayeredSegmentation, reference: VolumeGeometry,
                            thresholds: FidelityThresholds | None = None,
                            progress: ProgressCallback | None = None, pictures: bool = True,
                            holes: HoleEncoding | str = HoleEncoding.SEPARATE) -> FidelityResult:
    """Predict, per segment, what an RTSTRUCT export on ``reference`` with ``holes`` encoding keeps (see the
    module docstring)."""
    holes = HoleEncoding(holes)
    thresholds = thresholds or FidelityThresholds()
    progress = progress or no_progress
    started = time.perf_counter()
    source = layered.geometry
    same_grid = source.is_close(reference, atol_mm=1e-4)
    warnings = []
    if not same_grid:
        warnings.append("segmentation grid differs from the reference image grid: segments are resampled (nearest "
                        "voxel) onto the reference planes before contouring")
    contours, per_layer = _contour_all(layered, reference, progress, keep_roundtrip=True, holes=holes)
    contoured = time.perf_counter()
    voxel_mm3 = float(np.prod(source.spacing))
    reference_pixel_mm2 = float(reference.spacing[0] * reference.spacing[1])
    reference_thickness = float(reference.spacing[2])
    spacing_kji = tuple(float(v) for v in source.spacing[::-1])
    results: list[SegmentFidelity | None] = [None] * len(layered.segments)
    done = 0
    for layer_index, (on_reference, roundtrip_ref) in per_layer.items():
        layer = layered.layers[layer_index]
        roundtrip = roundtrip_ref if same_grid else resample_labels(roundtrip_ref, reference, source)
        resampled_back = layer if same_grid else resample_labels(on_reference, reference, source)
        objects_original = _object_slices(layer)
        objects_roundtrip = _object_slices(roundtrip)
        objects_reference = _object_slices(on_reference)
        for index, segment in enumerate(layered.segments):
            if segment.layer != layer_index:
                continue
            value = segment.label_value
            box = _union(_bbox(objects_original, value), _bbox(objects_roundtrip, value))
            seg_contours = contours[index]
            if box is None:
                original = roundtrip_mask = np.zeros((0, 0, 0), dtype=bool)
                offset = (0, 0, 0)
            else:
                original = layer[box] == value
                roundtrip_mask = roundtrip[box] == value
                offset = tuple(s.start for s in box)
            lost_mask = original & ~roundtrip_mask
            gained_mask = roundtrip_mask & ~original
            n_orig, n_rt = int(np.count_nonzero(original)), int(np.count_nonzero(roundtrip_mask))
            lost, gained = int(np.count_nonzero(lost_mask)), int(np.count_nonzero(gained_mask))
            if same_grid or box is None:
                resampling_lost = resampling_gained = beyond = 0
            else:
                back = resampled_back[box] == value
                resampling_lost = int(np.count_nonzero(original & ~back))
                resampling_gained = int(np.count_nonzero(back & ~original))
                beyond = _beyond_reference(original, offset, source, reference)
            ref_box = _bbox(objects_reference, value)
            thin = _thin_voxels(on_reference[ref_box] == value) if ref_box is not None else 0
            ref_voxels = int(np.count_nonzero(on_reference[ref_box] == value)) if ref_box is not None else 0
            changed = lost_mask | gained_mask
            per_slice = changed.reshape(changed.shape[0], -1).sum(axis=1) if changed.size else np.zeros(0)
            slices_affected = int(np.count_nonzero(per_slice))
            worst = int(offset[0] + int(np.argmax(per_slice))) if slices_affected else None
            dice = 1.0 if n_orig + n_rt == 0 else 2.0 * (n_orig - lost) / (n_orig + n_rt)
            hd95 = (0.0 if lost + gained == 0 and n_orig
                    else (_hd95(original, roundtrip_mask, spacing_kji) if n_orig else None))
            volume = n_orig * voxel_mm3
            volume_rt = n_rt * voxel_mm3
            contour_volume = seg_contours.enclosed_area_pixels() * reference_pixel_mm2 * reference_thickness
            change = 100.0 * (volume_rt - volume) / volume if volume else 0.0
            contour_change = 100.0 * (contour_volume - volume) / volume if volume else 0.0
            thin_fraction = thin / ref_voxels if ref_voxels else 0.0
            verdict, reasons = classify(thresholds, n_orig, lost, gained, change, dice, thin, thin_fraction,
                                        contour_change, resampling_lost + resampling_gained, beyond)
            if worst is None and verdict != Verdict.LOSSLESS and same_grid and seg_contours.slices:
                # Nothing changes voxel-wise: show the plane whose contours enclose the least of their voxels.
                deficit = {k: seg_contours.voxels[k] - abs(sum(a)) for k, a in seg_contours.signed_areas.items()}
                worst = max(deficit, key=deficit.get)
            picture = None
            if pictures and worst is not None and box is not None and 0 <= worst - offset[0] < original.shape[0]:
                k = worst - offset[0]
                picture = {"slice": worst, "offset_rows_cols": (offset[1], offset[2]),
                           "original": original[k].copy(), "roundtrip": roundtrip_mask[k].copy()}
            results[index] = SegmentFidelity(
                name=segment.name, segment_id=segment.segment_id, verdict=verdict, reasons=reasons,
                voxels_original=n_orig, voxels_roundtrip=n_rt, voxels_lost=lost, voxels_gained=gained,
                volume_original_mm3=volume, volume_roundtrip_mm3=volume_rt, volume_change_percent=change,
                contour_volume_mm3=contour_volume, contour_volume_change_percent=contour_change, dice=dice,
                hd95_mm=hd95, slices_affected=slices_affected, islands=seg_contours.islands,
                holes=seg_contours.holes, contours=seg_contours.contour_count, thin_voxels=thin,
                resampling_lost=resampling_lost, resampling_gained=resampling_gained,
                beyond_reference_voxels=beyond, worst_slice=worst, holes_encoding=holes.value,
                union_reader_holes_filled=seg_contours.separate_holes,
                union_reader_voxels_gained=seg_contours.union_voxels_gained, keyholes=seg_contours.keyhole_count,
                keyhole_voxels_changed=seg_contours.keyhole_voxels_changed,
                keyhole_area_mm2=seg_contours.keyhole_area_pixels * reference_pixel_mm2, picture=picture)
            warnings.extend(_hole_warnings(results[index], holes))
            done += 1
            progress(0.6 + 0.4 * done / max(1, len(layered.segments)), f"comparing {segment.name}")
    finished = time.perf_counter()
    return FidelityResult(segments=[r for r in results if r is not None], thresholds=thresholds,
                          segmentation_geometry=source, reference_geometry=reference, same_grid=same_grid,
                          timings={"contour": contoured - started, "compare": finished - contoured,
                                   "total": finished - started},
                          warnings=warnings, contours=list(contours), holes=holes)


def _hole_warnings(segment: SegmentFidelity, holes: HoleEncoding) -> list[str]:
    """What the hole encoding does to this segment in readers that do not XOR a plane's contours."""
    found = []
    if segment.union_reader_holes_filled:
        found.append(f"{segment.name}: {segment.union_reader_holes_filled} holes are written as separate inner "
                     "contours; readers that take the union of a plane's contours (plastimatch convert without "
                     f"--xor-contours, some planning systems) fill them (+{segment.union_reader_voxels_gained} "
                     "voxels on the reference planes)" + ("; export with --holes keyhole for such readers"
                                                         if holes == HoleEncoding.SEPARATE else
                                                         ": no keyhole channel could be cut for them"))
    if segment.keyhole_voxels_changed:
        found.append(f"{segment.name}: keyhole channels change {segment.keyhole_voxels_changed} voxels on read-back")
    return found


class FidelityGateError(GateRefusedError):
    """The fidelity check found a verdict at or above the level the caller refuses to export."""


def gate(result: FidelityResult, fail_on: Verdict | None) -> None:
    """Raise FidelityGateError when any segment is at least as bad as ``fail_on`` (None: never)."""
    if fail_on is None or fail_on == Verdict.LOSSLESS:
        return
    bad = [s for s in result.segments if s.verdict.rank >= fail_on.rank]
    if bad:
        names = ", ".join(f"{s.name} ({s.verdict.value})" for s in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise FidelityGateError(f"RTSTRUCT export refused (--fail-on {fail_on.value}): {names}{more}")


def classify(t: FidelityThresholds, n_orig: int, lost: int, gained: int, change: float, dice: float, thin: int,
             thin_fraction: float, contour_change: float, resampled: int, beyond: int) -> tuple[Verdict, list[str]]:
    """Verdict and the reasons for it (each reason names the measure and the threshold it crossed)."""
    if n_orig == 0:
        return Verdict.LOSSLESS, ["empty segment: no contours are written"]
    lossy, minor = [], []
    if abs(change) > t.lossy_volume_change_percent:
        lossy.append(f"volume changes {change:+.2f} % (> {t.lossy_volume_change_percent} %)")
    if dice < t.lossy_dice:
        lossy.append(f"Dice {dice:.4f} (< {t.lossy_dice})")
    if thin_fraction > t.lossy_thin_fraction:
        lossy.append(f"{thin} voxels ({100 * thin_fraction:.1f} %) in one-voxel-thin parts "
                     f"(> {100 * t.lossy_thin_fraction:g} %)")
    if abs(contour_change) > t.lossy_contour_volume_change_percent:
        lossy.append(f"contour-area volume differs {contour_change:+.2f} % "
                     f"(> {t.lossy_contour_volume_change_percent} %)")
    if lost or gained:
        minor.append(f"{lost} voxels lost, {gained} gained")
    if resampled:
        minor.append(f"{resampled} voxels changed by resampling onto the reference grid")
    if beyond:
        minor.append(f"{beyond} voxels beyond the reference images")
    if thin and not lossy:
        minor.append(f"{thin} voxels in one-voxel-thin parts")
    if abs(contour_change) > t.minor_contour_volume_change_percent and not lossy:
        minor.append(f"contour-area volume differs {contour_change:+.2f} % "
                     f"(> {t.minor_contour_volume_change_percent} %)")
    if lossy:
        return Verdict.LOSSY, lossy + minor
    if minor:
        return Verdict.MINOR, minor
    return Verdict.LOSSLESS, []
