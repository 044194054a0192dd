"""A cohort of patients built at test time from the real files in ../shared/data, with its expected pairing.

Each patient gets new Patient/Study/Series/SOP/FrameOfReference UIDs, a shifted position (CT and dose together), a
GridFrameOffsetVector variant (relative, absolute, descending) and a random folder layout with random file names,
so nothing can pair by folder or name. Sources: the dicompyler-sample CT slices and RTDOSE (one frame of reference),
the dicompyler-core RTSTRUCT and RTPLAN, the dcmqi liver SEG. Headers are rewritten with pydicom; pixel data bytes
are copied (a subset of slices and dose frames keeps test cohorts small; the benchmark uses full series).

The RTSTRUCT comes from another patient (dicompyler-core), so its contours are first placed on the CT subset once:
per ROI, the contours of its ``CONTOUR_PLANES`` middle planes go onto consecutive middle CT planes, moved in-plane
into the CT's field of view (``RTSTRUCT_INPLANE_OFFSET``). Each patient's copy is then shifted with its CT, and
every contour references the CT image it lies on, so its masks equal (voxel for voxel) those of the unshifted
placement (``build_cohort(..., shift=False)``) and are never empty.

Trap patients are what a cohort run must refuse to guess about: a dose on a frame of reference no CT has, two CT
series on one frame of reference, a plan chain that contradicts the dose's frame of reference, a SEG that references
a series not in the tree, mixed-unit per-beam doses, plus a truncated file, non-DICOM files and hidden staging files;
and one where a dose → RTPLAN → RTSTRUCT chain decides between two CT series on the dose's frame of reference.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pydicom
from datapaths import shared_data_dir
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RT_STRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
NORMAL_KINDS = ("plan_chain", "seg", "rtstruct", "beams", "dose_for")
OFFSET_VARIANTS = ("relative", "absolute", "descending")
CONTOUR_PLANES = 2  # original contour planes kept per ROI (all contours on them: islands and holes stay)
RTSTRUCT_INPLANE_OFFSET = (0.0, 400.0)  # mm (x, y): the dicompyler-core contours into the sample CT's field of view


@dataclass
class ExpectedCase:
    patient_id: str
    ct_series_uid: str
    ct_paths: set[str]
    dose_sop_uids: set[str] = field(default_factory=set)
    rtstruct_sop_uids: set[str] = field(default_factory=set)
    seg_sop_uids: set[str] = field(default_factory=set)
    plan_sop_uids: set[str] = field(default_factory=set)
    beam_groups: list[set[str]] = field(default_factory=list)  # per-beam dose SOP UIDs of one plan
    mixed_units: bool = False
    paired_by: dict[str, str] = field(default_factory=dict)  # SOP UID: PairedBy value
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mm added to every position of the patient's objects


@dataclass
class ExpectedUnpaired:
    sop_uid: str
    patient_id: str
    reason: str  # UnpairedReason value
    path: str


@dataclass
class Cohort:
    root: Path
    cases: dict[str, ExpectedCase] = field(default_factory=dict)  # by CT series UID
    unpaired: dict[str, ExpectedUnpaired] = field(default_factory=dict)  # by SOP UID
    unreadable: dict[str, str] = field(default_factory=dict)  # path: UnreadableKind value(s), '|'-separated
    lonely_series: set[str] = field(default_factory=set)  # CT series with nothing paired
    hidden: list[Path] = field(default_factory=list)  # must never be indexed
    dicom_files: list[Path] = field(default_factory=list)  # every readable DICOM file written
    paths: dict[str, Path] = field(default_factory=dict)  # SOP Instance UID: file

    @property
    def visible_files(self) -> int:
        return len(self.dicom_files) + len(self.unreadable)


# ------------------------------------------------------------------------------------------------ sources
@dataclass
class _PlacedContour:
    """One kept RTSTRUCT contour, placed on the unshifted CT subset."""

    contour: Dataset  # the item in the (shared) source dataset; ContourData is rewritten per patient
    points: list[float]  # x, y, z triples on the unshifted CT, in 0.01 mm steps
    plane: int  # index of the CT slice it lies on


@dataclass
class _Sources:
    ct: list[Dataset]  # sorted by z, with pixels
    ct_positions: list[list[float]]
    dose: Dataset
    dose_frames: list[bytes]
    dose_position: list[float]
    dose_offsets: list[float]
    rtstruct: Dataset
    plan: Dataset
    seg: Dataset
    contours: list[_PlacedContour] = field(default_factory=list)


def _place_contours(rtstruct: Dataset, ct_positions: list[list[float]]) -> list[_PlacedContour]:
    """Keep, per ROI, the contours of its CONTOUR_PLANES middle planes and put them on consecutive middle CT planes
    (moved in-plane by RTSTRUCT_INPLANE_OFFSET); the RTSTRUCT then keeps only those contours."""
    planes = min(CONTOUR_PLANES, len(ct_positions))
    first = (len(ct_positions) - planes) // 2
    placed = []
    for roi in rtstruct.ROIContourSequence:
        contours = list(roi.get("ContourSequence", []))
        if not contours:
            continue
        heights = sorted({round(float(c.ContourData[2]), 2) for c in contours})
        middle = max(0, (len(heights) - planes) // 2)
        chosen = heights[middle:middle + planes]
        kept = []
        for contour in contours:
            height = round(float(contour.ContourData[2]), 2)
            if height not in chosen:
                continue
            plane = first + chosen.index(height)
            z = ct_positions[plane][2]
            values = [float(v) for v in contour.ContourData]
            points = []
            for x, y in zip(values[0::3], values[1::3]):
                points += [round(x + RTSTRUCT_INPLANE_OFFSET[0], 2), round(y + RTSTRUCT_INPLANE_OFFSET[1], 2), z]
            contour.NumberOfContourPoints = len(points) // 3
            placed.append(_PlacedContour(contour, points, plane))
            kept.append(contour)
        roi.ContourSequence = Sequence(kept)
    return placed


@lru_cache(maxsize=4)
def _sources(data: str, slices: int) -> _Sources:
    """Source datasets, read once per process. Writers set every attribute they vary before each save, so the
    same objects are reused for every patient (no deep copies of pixel data)."""
    root = Path(data)
    paths = sorted((root / "dicompyler-sample").glob("ct.*.dcm"),
                   key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    ct = [pydicom.dcmread(p) for p in paths[:slices]]
    dose = pydicom.dcmread(root / "dicompyler-sample" / "rtdose.dcm")
    frame_bytes = dose.Rows * dose.Columns * dose.BitsAllocated // 8
    frames = [dose.PixelData[i * frame_bytes:(i + 1) * frame_bytes] for i in range(int(dose.NumberOfFrames))]
    rtstruct = pydicom.dcmread(root / "dicompyler-core" / "rtss.dcm")
    ct_positions = [[float(v) for v in ds.ImagePositionPatient] for ds in ct]
    contours = _place_contours(rtstruct, ct_positions)  # a few contours: a real RTSTRUCT, and fast to write
    return _Sources(ct=ct, ct_positions=ct_positions, dose=dose,
                    dose_frames=frames, dose_position=[float(v) for v in dose.ImagePositionPatient],
                    dose_offsets=[float(v) for v in dose.GridFrameOffsetVector], rtstruct=rtstruct,
                    plan=pydicom.dcmread(root / "dicompyler-core" / "rtplan.dcm"),
                    seg=pydicom.dcmread(root / "dcmqi" / "segmentations" / "liver.dcm"), contours=contours)


def _ds(values) -> list[str]:
    return [f"{v:.6g}" for v in values]


def _contour_ds(values) -> list[str]:
    """Contour coordinates in 0.01 mm steps: exact decimals, so shifted and unshifted copies rasterise alike."""
    return [f"{v:.2f}" for v in values]


# ------------------------------------------------------------------------------------------------ placing files
class _Placer:
    """Random layouts and names: nothing may pair by folder or file name."""

    LAYOUTS = ("flat", "by_series", "shared", "deep")

    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng = root, rng

    def layout(self) -> str:
        return self.rng.choice(self.LAYOUTS)

    def path(self, layout: str, patient: str, modality: str, series_uid: str, sop_uid: str) -> Path:
        style = self.rng.randrange(4)
        name = (uuid.UUID(int=self.rng.getrandbits(128)).hex, f"IMG{self.rng.randrange(10**5):05d}",
                f"{sop_uid}.dcm", f"x{self.rng.randrange(10**6)}.DCM")[style]
        if layout == "flat":
            folder = self.root / patient
        elif layout == "by_series":
            folder = self.root / patient / f"{modality}_{series_uid[-8:]}"
        elif layout == "shared":  # several patients' files mixed in the same folders
            folder = self.root / "incoming" / f"{self.rng.randrange(3):02d}"
        else:
            folder = self.root / patient / "a" / f"b{self.rng.randrange(2)}" / "c"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        while path.exists():
            path = folder / f"{name}_{self.rng.randrange(10**6)}"
        return path


@dataclass
class _Patient:
    patient_id: str
    study_uid: str
    shift: list[float]
    layout: str


def _identify(ds: Dataset, patient: _Patient, modality_series: str, sop_uid: str, frame: str | None) -> None:
    ds.PatientID = patient.patient_id
    ds.PatientName = f"Cohort^{patient.patient_id}"
    ds.StudyInstanceUID = patient.study_uid
    ds.SeriesInstanceUID = modality_series
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    if frame is not None:
        ds.FrameOfReferenceUID = frame
    elif "FrameOfReferenceUID" in ds:
        del ds.FrameOfReferenceUID


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    """A referenced-object item: the class and instance UIDs every reference sequence item starts with."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _refer_to_structure_set(ds: Dataset, struct_uid: str | None) -> None:
    """ReferencedStructureSetSequence naming ``struct_uid``, or none at all."""
    if "ReferencedStructureSetSequence" in ds:
        del ds.ReferencedStructureSetSequence
    if struct_uid is not None:
        ds.ReferencedStructureSetSequence = [_reference(RT_STRUCT_STORAGE, struct_uid)]


# ------------------------------------------------------------------------------------------------ builder
class _Builder:
    def __init__(self, root: Path, sources: _Sources, rng: random.Random, dose_frames: int, shift: bool = True):
        self.root, self.src, self.rng, self.dose_frame_count = root, sources, rng, dose_frames
        self.shift = shift
        self.placer = _Placer(root, rng)
        self.cohort = Cohort(root=root)
        self.variant = 0

    def patient(self, number: int) -> _Patient:
        shift = [float(self.rng.randint(-60, 60)) for _ in range(3)]  # drawn either way: same layouts and names
        return _Patient(f"COH{number:04d}", generate_uid(), shift if self.shift else [0.0, 0.0, 0.0],
                        self.placer.layout())

    def _save(self, ds: Dataset, patient: _Patient, modality: str) -> Path:
        path = self.placer.path(patient.layout, patient.patient_id, modality, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        ds.save_as(path, enforce_file_format=True)
        self.cohort.dicom_files.append(path)
        self.cohort.paths[ds.SOPInstanceUID] = path
        return path

    def ct(self, patient: _Patient, frame: str) -> tuple[str, list[str], list[Path]]:
        series_uid, sops, paths = generate_uid(), [], []
        for ds, position in zip(self.src.ct, self.src.ct_positions):
            sop = generate_uid()
            _identify(ds, patient, series_uid, sop, frame)
            ds.SeriesDescription = "cohort CT"
            ds.ImagePositionPatient = _ds(p + s for p, s in zip(position, patient.shift))
            paths.append(self._save(ds, patient, "CT"))
            sops.append(sop)
        return series_uid, sops, paths

    def dose(self, patient: _Patient, frame: str, plan_uid: str | None = None, summation: str = "PLAN",
             units: str = "GY", beam: int | None = None, struct_uid: str | None = None) -> str:
        ds, sop = self.src.dose, generate_uid()
        _identify(ds, patient, generate_uid(), sop, frame)
        count = min(self.dose_frame_count, len(self.src.dose_frames))
        frames = self.src.dose_frames[:count]
        offsets = self.src.dose_offsets[:count]
        position = [p + s for p, s in zip(self.src.dose_position, patient.shift)]
        variant = OFFSET_VARIANTS[self.variant % len(OFFSET_VARIANTS)]
        self.variant += 1
        if variant == "descending":  # the same grid, stored from the top frame down
            frames = frames[::-1]
            position[2] += offsets[-1]
            offsets = [o - offsets[-1] for o in reversed(offsets)]
        written = [position[2] + o for o in offsets] if variant == "absolute" else offsets
        ds.ImagePositionPatient = _ds(position)
        ds.GridFrameOffsetVector = _ds(written)
        ds.NumberOfFrames = len(frames)
        ds.PixelData = b"".join(frames)
        ds.DoseSummationType, ds.DoseUnits = summation, units
        if plan_uid is None:
            if "ReferencedRTPlanSequence" in ds:
                del ds.ReferencedRTPlanSequence
        else:
            item = _reference(RT_PLAN_STORAGE, plan_uid)
            if beam is not None:
                group, beam_item = Dataset(), Dataset()
                group.ReferencedFractionGroupNumber = 1
                beam_item.ReferencedBeamNumber = beam
                group.ReferencedBeamSequence = [beam_item]
                item.ReferencedFractionGroupSequence = [group]
            ds.ReferencedRTPlanSequence = [item]
        _refer_to_structure_set(ds, struct_uid)
        self._save(ds, patient, "RTDOSE")
        return sop

    def rtstruct(self, patient: _Patient, frame: str, series_uid: str, ct_sops: list[str]) -> str:
        ds, sop = self.src.rtstruct, generate_uid()
        _identify(ds, patient, generate_uid(), sop, None)
        series, frame_item = Dataset(), Dataset()
        series.SeriesInstanceUID = series_uid
        series.ContourImageSequence = [_reference(CT_IMAGE_STORAGE, ct_sop) for ct_sop in ct_sops]
        study = _reference(STUDY_COMPONENT_MANAGEMENT, patient.study_uid)
        study.RTReferencedSeriesSequence = [series]
        frame_item.FrameOfReferenceUID = frame
        frame_item.RTReferencedStudySequence = [study]
        ds.ReferencedFrameOfReferenceSequence = [frame_item]
        for roi in ds.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = frame
        for placed in self.src.contours:  # moved with the CT, referencing the image each contour lies on
            shift = patient.shift * (len(placed.points) // 3)
            placed.contour.ContourData = _contour_ds(p + s for p, s in zip(placed.points, shift))
            placed.contour.ContourImageSequence = [_reference(CT_IMAGE_STORAGE, ct_sops[placed.plane])]
        self._save(ds, patient, "RTSTRUCT")
        return sop

    def plan(self, patient: _Patient, frame: str, struct_uid: str | None) -> str:
        ds, sop = self.src.plan, generate_uid()
        _identify(ds, patient, generate_uid(), sop, frame)
        _refer_to_structure_set(ds, struct_uid)
        self._save(ds, patient, "RTPLAN")
        return sop

    def seg(self, patient: _Patient, frame: str, series_uid: str, ct_sops: list[str]) -> str:
        ds, sop = self.src.seg, generate_uid()
        _identify(ds, patient, generate_uid(), sop, frame)
        ds.ReferencedSeriesSequence[0].SeriesInstanceUID = series_uid
        for n, item in enumerate(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence):
            item.ReferencedSOPInstanceUID = ct_sops[n % len(ct_sops)]
        for n, frame_item in enumerate(ds.get("PerFrameFunctionalGroupsSequence", [])):
            for derivation in frame_item.get("DerivationImageSequence", []):
                for source in derivation.get("SourceImageSequence", []):
                    source.ReferencedSOPInstanceUID = ct_sops[n % len(ct_sops)]
        self._save(ds, patient, "SEG")
        return sop

    # -------------------------------------------------------------------------------------------- patients
    def normal(self, number: int, kind: str) -> None:
        p, frame = self.patient(number), generate_uid()
        series_uid, sops, paths = self.ct(p, frame)
        case = ExpectedCase(p.patient_id, series_uid, {str(x) for x in paths}, shift=tuple(p.shift))
        if kind in ("plan_chain", "rtstruct", "beams"):
            struct = self.rtstruct(p, frame, series_uid, sops)
            case.rtstruct_sop_uids.add(struct)
            case.paired_by[struct] = "REFERENCE"
        if kind == "plan_chain":
            plan = self.plan(p, frame, struct)
            dose = self.dose(p, frame, plan)
            case.plan_sop_uids.add(plan)
            case.dose_sop_uids.add(dose)
            case.paired_by[dose] = "PLAN_CHAIN"
        elif kind == "beams":
            plan = self.plan(p, frame, struct)
            beams = {self.dose(p, frame, plan, summation="BEAM", beam=b) for b in (1, 2, 3)}
            case.plan_sop_uids.add(plan)
            case.dose_sop_uids |= beams
            case.beam_groups.append(beams)
            case.paired_by.update(dict.fromkeys(beams, "PLAN_CHAIN"))
        elif kind == "seg":
            seg = self.seg(p, frame, series_uid, sops)
            case.seg_sop_uids.add(seg)
            case.paired_by[seg] = "REFERENCE"
        elif kind == "dose_for":
            dose = self.dose(p, frame)
            case.dose_sop_uids.add(dose)
            case.paired_by[dose] = "FRAME_OF_REFERENCE"
        self.cohort.cases[series_uid] = case

    def _unpaired(self, sop: str, patient: _Patient, reason: str) -> None:
        path = str(self.cohort.dicom_files[-1])  # the object just written
        self.cohort.unpaired[sop] = ExpectedUnpaired(sop, patient.patient_id, reason, path)

    def trap_dose_without_ct(self, number: int) -> None:
        p = self.patient(number)
        series_uid, _, _ = self.ct(p, generate_uid())
        self._unpaired(self.dose(p, generate_uid()), p, "NO_IMAGE_SERIES_ON_FRAME_OF_REFERENCE")
        self.cohort.lonely_series.add(series_uid)

    def trap_two_ct(self, number: int) -> None:
        p, frame = self.patient(number), generate_uid()
        first, sops, paths = self.ct(p, frame)
        second, _, _ = self.ct(p, frame)
        self._unpaired(self.dose(p, frame), p, "AMBIGUOUS_IMAGE_SERIES")
        struct = self.rtstruct(p, frame, first, sops)  # a reference decides where the frame cannot
        self.cohort.cases[first] = ExpectedCase(p.patient_id, first, {str(x) for x in paths},
                                                rtstruct_sop_uids={struct}, paired_by={struct: "REFERENCE"},
                                                shift=tuple(p.shift))
        self.cohort.lonely_series.add(second)

    def trap_chain_contradiction(self, number: int) -> None:
        p, frame_a, frame_b = self.patient(number), generate_uid(), generate_uid()
        first, sops, paths = self.ct(p, frame_a)
        second, _, _ = self.ct(p, frame_b)
        struct = self.rtstruct(p, frame_a, first, sops)
        plan = self.plan(p, frame_a, struct)
        self._unpaired(self.dose(p, frame_b, plan), p, "CHAIN_CONTRADICTS_FRAME_OF_REFERENCE")
        self.cohort.cases[first] = ExpectedCase(p.patient_id, first, {str(x) for x in paths},
                                                rtstruct_sop_uids={struct}, paired_by={struct: "REFERENCE"},
                                                shift=tuple(p.shift))
        self.cohort.lonely_series.add(second)

    def trap_chain_decides(self, number: int) -> None:
        """Two CT series on one frame of reference, but the dose's plan names a structure set that names one."""
        p, frame = self.patient(number), generate_uid()
        first, sops, paths = self.ct(p, frame)
        second, _, _ = self.ct(p, frame)
        struct = self.rtstruct(p, frame, first, sops)
        plan = self.plan(p, frame, struct)
        dose = self.dose(p, frame, plan)
        self.cohort.cases[first] = ExpectedCase(p.patient_id, first, {str(x) for x in paths}, dose_sop_uids={dose},
                                                rtstruct_sop_uids={struct}, plan_sop_uids={plan},
                                                paired_by={struct: "REFERENCE", dose: "PLAN_CHAIN"},
                                                shift=tuple(p.shift))
        self.cohort.lonely_series.add(second)

    def trap_seg_missing_series(self, number: int) -> None:
        p, frame = self.patient(number), generate_uid()
        series_uid, _, _ = self.ct(p, frame)
        missing = [generate_uid() for _ in range(3)]
        self._unpaired(self.seg(p, frame, generate_uid(), missing), p, "REFERENCED_SERIES_NOT_INDEXED")
        self.cohort.lonely_series.add(series_uid)

    def trap_mixed_beams(self, number: int) -> None:
        p, frame = self.patient(number), generate_uid()
        series_uid, _, paths = self.ct(p, frame)
        plan = self.plan(p, frame, None)
        beams = {self.dose(p, frame, plan, summation="BEAM", beam=1, units="GY"),
                 self.dose(p, frame, plan, summation="BEAM", beam=2, units="RELATIVE")}
        self.cohort.cases[series_uid] = ExpectedCase(
            p.patient_id, series_uid, {str(x) for x in paths}, dose_sop_uids=set(beams), plan_sop_uids={plan},
            beam_groups=[set(beams)], mixed_units=True, paired_by=dict.fromkeys(beams, "FRAME_OF_REFERENCE"),
            shift=tuple(p.shift))

    def broken_files(self) -> None:
        """A CT slice cut in its pixel data, one cut in its header, non-DICOM files, hidden staging files."""
        source = self.cohort.dicom_files[0].read_bytes()
        junk = self.root / "junk"
        junk.mkdir(exist_ok=True)
        cut_pixels, cut_header = junk / "cut_in_pixels.dcm", junk / "IMG99999"
        cut_pixels.write_bytes(source[: len(source) // 2])
        cut_header.write_bytes(source[:600])
        notes, blob = junk / "notes.txt", self.root / "README"
        notes.write_text("not DICOM\n")
        blob.write_bytes(bytes(range(256)) * 4)
        self.cohort.unreadable.update({str(cut_pixels): "TRUNCATED", str(cut_header): "MISSING_ATTRIBUTE|TRUNCATED",
                                       str(notes): "NOT_DICOM", str(blob): "NOT_DICOM"})
        staging = self.root / ".staging"
        staging.mkdir(exist_ok=True)
        hidden = [staging / "copy.dcm", self.root / ".DS_Store", junk / ".hidden.dcm"]
        hidden[0].write_bytes(source)
        hidden[1].write_bytes(b"\0" * 64)
        hidden[2].write_bytes(source)
        self.cohort.hidden.extend(hidden)


def build_cohort(root: str | Path, patients: int = 10, slices: int = 6, dose_frames: int = 4, seed: int = 0,
                 traps: bool = True, data: str | Path | None = None, shift: bool = True) -> Cohort:
    """``patients`` normal patients (cycling plan chain, SEG, RTSTRUCT, per-beam doses, dose by frame of
    reference) plus, with ``traps``, one patient per trap and the broken files; returns the expected pairing.
    ``shift=False`` leaves every patient at the source position (the reference the shifted copies must match)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sources = _sources(str(data or shared_data_dir()), slices)
    builder = _Builder(root, sources, random.Random(seed), dose_frames, shift)
    for number in range(patients):
        builder.normal(number, NORMAL_KINDS[number % len(NORMAL_KINDS)])
    if traps:
        for offset, trap in enumerate((builder.trap_dose_without_ct, builder.trap_two_ct,
                                       builder.trap_chain_contradiction, builder.trap_chain_decides,
                                       builder.trap_seg_missing_series, builder.trap_mixed_beams)):
            trap(patients + offset)
        builder.broken_files()
    return builder.cohort
