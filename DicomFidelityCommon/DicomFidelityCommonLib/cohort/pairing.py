"""Pair image series with the doses, structure sets and segmentations that belong to them, from a cohort index.

References first (SEG → series, RTSTRUCT → series/images, RTDOSE → RTPLAN → RTSTRUCT → series), the
FrameOfReferenceUID second. Nothing ambiguous is resolved by guessing: an object that could belong to two series,
to none, or whose reference chain contradicts its frame of reference is reported unpaired with the reason, so a
cohort run never computes a dose on the wrong CT.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import sqlite3
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from DicomFidelityCommonLib.cohort.index import RefKind, parse_numbers
from DicomFidelityCommonLib.errors import InvalidInputFileError

IMAGE_MODALITIES = ("CT",)
DOSE, STRUCT, SEG, PLAN = "RTDOSE", "RTSTRUCT", "SEG", "RTPLAN"


class UnpairedReason(str, enum.Enum):
    """Why an object is not in any case; the text of each Unpaired says which UIDs."""

    NO_IMAGE_SERIES_ON_FRAME_OF_REFERENCE = "NO_IMAGE_SERIES_ON_FRAME_OF_REFERENCE"
    AMBIGUOUS_IMAGE_SERIES = "AMBIGUOUS_IMAGE_SERIES"
    CHAIN_CONTRADICTS_FRAME_OF_REFERENCE = "CHAIN_CONTRADICTS_FRAME_OF_REFERENCE"
    REFERENCED_SERIES_NOT_INDEXED = "REFERENCED_SERIES_NOT_INDEXED"
    REFERENCED_SERIES_CONTRADICTS_FRAME_OF_REFERENCE = "REFERENCED_SERIES_CONTRADICTS_FRAME_OF_REFERENCE"
    PATIENT_MISMATCH = "PATIENT_MISMATCH"
    NO_FRAME_OF_REFERENCE = "NO_FRAME_OF_REFERENCE"
    DUPLICATE_SOP_INSTANCE = "DUPLICATE_SOP_INSTANCE"


class PairedBy(str, enum.Enum):
    """How an object was linked to its image series."""

    REFERENCE = "REFERENCE"  # its own references name the series (or its images)
    PLAN_CHAIN = "PLAN_CHAIN"  # RTDOSE → RTPLAN/RTSTRUCT → series, agreeing with the frame of reference
    FRAME_OF_REFERENCE = "FRAME_OF_REFERENCE"  # the only image series on its FrameOfReferenceUID


@dataclass
class LinkedObject:
    """An RTSTRUCT, SEG or RTPLAN of a case."""

    sop_instance_uid: str
    path: str
    modality: str
    paired_by: str


@dataclass
class DoseObject:
    """An RTDOSE of a case, with what summation needs to know."""

    sop_instance_uid: str
    path: str
    paired_by: str
    summation_type: str | None
    units: str | None
    dose_type: str | None
    plan_sop_instance_uid: str | None
    fraction_group: int | None
    beam_numbers: list[int] = field(default_factory=list)


@dataclass
class DoseGroup:
    """Per-beam doses of one plan, to be summed by DoseAlignmentLib; ``mixed_*`` means they must not be."""

    plan_sop_instance_uid: str | None
    dose_sop_instance_uids: list[str]
    beam_numbers: list[int]
    units: list[str]
    dose_types: list[str]
    mixed_units: bool
    mixed_types: bool
    duplicate_beams: bool


@dataclass
class Case:
    """One image series and everything paired with it; ``fingerprint`` changes when any of its files does."""

    case_id: str
    patient_id: str
    study_uid: str | None
    frame_of_reference_uid: str | None
    ct_series_uid: str
    ct_folder: str
    ct_files: list[str]  # sorted along the slice normal
    doses: list[DoseObject] = field(default_factory=list)
    dose_groups: list[DoseGroup] = field(default_factory=list)
    rtstructs: list[LinkedObject] = field(default_factory=list)
    segs: list[LinkedObject] = field(default_factory=list)
    plans: list[LinkedObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def dose_sop_uids(self) -> list[str]:
        return [d.sop_instance_uid for d in self.doses]

    @property
    def rtstruct_sop_uids(self) -> list[str]:
        return [o.sop_instance_uid for o in self.rtstructs]

    @property
    def seg_sop_uids(self) -> list[str]:
        return [o.sop_instance_uid for o in self.segs]


@dataclass
class Unpaired:
    """An object no case takes, and why."""

    sop_instance_uid: str
    path: str
    modality: str
    patient_id: str | None
    reason: UnpairedReason
    text: str
    candidate_series: list[str] = field(default_factory=list)


@dataclass
class PairingResult:
    db_path: str
    cases: list[Case]
    unpaired: list[Unpaired]
    image_series_without_objects: list[str]
    warnings: list[str] = field(default_factory=list)

    def case(self, ct_series_uid: str) -> Case | None:
        return next((c for c in self.cases if c.ct_series_uid == ct_series_uid), None)

    def to_json(self) -> dict:
        text = json.dumps(asdict(self), default=lambda v: v.value if isinstance(v, enum.Enum) else str(v))
        return json.loads(text)


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class _Object:
    path: str
    sop: str
    modality: str
    patient_id: str | None
    series_uid: str
    frame: str | None
    summation: str | None
    units: str | None
    dose_type: str | None
    size: int
    mtime_ns: int
    refs: dict[str, list[tuple[str, int | None, int | None]]] = field(default_factory=lambda: defaultdict(list))

    def targets(self, kind: RefKind) -> list[str]:
        return list(dict.fromkeys(ref[0] for ref in self.refs.get(kind.value, [])))

    def frames(self) -> set[str]:
        """Its frames of reference: its own attribute and those an RTSTRUCT references."""
        return {f for f in [self.frame, *self.targets(RefKind.FRAME_OF_REFERENCE)] if f}


class _Unpaired(Exception):
    def __init__(self, reason: UnpairedReason, text: str, candidates=()):
        super().__init__(text)
        self.reason, self.text, self.candidates = reason, text, sorted(candidates)


class _Index:
    """The parts of the index pairing needs, in memory (a cohort of 10^5 files is a few MB)."""

    def __init__(self, connection: sqlite3.Connection, image_modalities: tuple[str, ...]):
        self.warnings: list[str] = []
        self.duplicates: list[_Object] = []
        self.series = {row[0]: row for row in connection.execute(
            "SELECT series_uid, patient_id, study_uid, modality, frame_of_reference_uid, orientation, slice_count, "
            "geometry_note FROM series")}
        self.image_series = {uid for uid, row in self.series.items() if row[3] in image_modalities and row[6]}
        self.by_frame: dict[str, set[str]] = defaultdict(set)
        for uid in self.image_series:
            if self.series[uid][4]:
                self.by_frame[self.series[uid][4]].add(uid)
        self.series_of_sop: dict[str, str] = {}
        self.objects: dict[str, _Object] = {}
        self.files: dict[str, tuple[str, int, int, str | None]] = {}  # path: (series, size, mtime, position)
        self.series_files: dict[str, list[str]] = defaultdict(list)
        for path, sop, modality, patient, series_uid, frame, summation, units, dose_type, size, mtime, position in \
                connection.execute("SELECT path, sop_instance_uid, modality, patient_id, series_uid, "
                                   "frame_of_reference_uid, dose_summation_type, dose_units, dose_type, size, "
                                   "mtime_ns, position FROM instances ORDER BY path"):
            self.series_of_sop.setdefault(sop, series_uid)
            self.series_files[series_uid].append(path)
            self.files[path] = (series_uid, size, mtime, position)
            if modality in (DOSE, STRUCT, SEG, PLAN):
                obj = _Object(path, sop, modality, patient, series_uid, frame, summation, units, dose_type, size, mtime)
                if sop in self.objects:
                    self.duplicates.append(obj)
                else:
                    self.objects[sop] = obj
        by_path = {obj.path: obj for obj in [*self.objects.values(), *self.duplicates]}
        for path, kind, target, group, beam in connection.execute(
                "SELECT path, kind, target_uid, fraction_group, beam_number FROM refs ORDER BY rowid"):
            source = by_path.get(path)
            if source is not None:
                source.refs[kind].append((target, group, beam))

    def frame_of(self, series_uid: str) -> str | None:
        return self.series[series_uid][4]

    def patient_of(self, series_uid: str) -> str | None:
        return self.series[series_uid][1]

    def sorted_files(self, series_uid: str) -> list[str]:
        """The series' files along the slice normal (position · normal), then by path."""
        orientation = self.series[series_uid][5]
        paths = self.series_files[series_uid]
        if not orientation:
            return sorted(paths)
        r, c = parse_numbers(orientation)[:3], parse_numbers(orientation)[3:]
        normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])

        def distance(path):
            position = self.files[path][3]
            return (sum(a * b for a, b in zip(parse_numbers(position), normal)) if position else float("inf"), path)
        return sorted(paths, key=distance)


# ------------------------------------------------------------------------------------------------ resolving
def _check_series(index: _Index, obj: _Object, series_uid: str, chain: str) -> None:
    """A series an object references must agree with the object's frame of reference and patient."""
    frames = obj.frames()
    if frames and index.frame_of(series_uid) not in frames:
        raise _Unpaired(UnpairedReason.REFERENCED_SERIES_CONTRADICTS_FRAME_OF_REFERENCE,
                        f"{chain} series {series_uid} is on frame of reference {index.frame_of(series_uid)}, the "
                        f"{obj.modality} on {', '.join(sorted(frames))}", [series_uid])
    if obj.patient_id and index.patient_of(series_uid) and obj.patient_id != index.patient_of(series_uid):
        raise _Unpaired(UnpairedReason.PATIENT_MISMATCH,
                        f"{chain} series {series_uid} belongs to patient {index.patient_of(series_uid)}, the "
                        f"{obj.modality} to {obj.patient_id}", [series_uid])


def _by_reference(index: _Index, obj: _Object) -> str | None:
    """The image series an RTSTRUCT or SEG references (series, or the series of its images); None when it states
    no reference at all; _Unpaired when its references cannot be followed."""
    named = obj.targets(RefKind.SERIES)
    instances = obj.targets(RefKind.INSTANCE)
    if not named and not instances:
        return None
    index_series = {uid for uid in named if uid in index.series}
    index_series |= {index.series_of_sop[sop] for sop in instances if sop in index.series_of_sop}
    images = sorted(uid for uid in index_series if uid in index.image_series)
    if not images:
        what = f"series {', '.join(named)}" if named else f"{len(instances)} image(s)"
        raise _Unpaired(UnpairedReason.REFERENCED_SERIES_NOT_INDEXED,
                        f"{obj.modality} references {what}, not an indexed image series", named)
    if len(images) > 1:
        raise _Unpaired(UnpairedReason.AMBIGUOUS_IMAGE_SERIES,
                        f"{obj.modality} references {len(images)} image series", images)
    _check_series(index, obj, images[0], "referenced")
    return images[0]


def _by_frame(index: _Index, obj: _Object, frames: set[str]) -> str:
    if not frames:
        raise _Unpaired(UnpairedReason.NO_FRAME_OF_REFERENCE, f"{obj.modality} has no references and no "
                                                              "FrameOfReferenceUID")
    candidates = sorted(set().union(*(index.by_frame.get(f, set()) for f in frames)))
    if not candidates:
        raise _Unpaired(UnpairedReason.NO_IMAGE_SERIES_ON_FRAME_OF_REFERENCE,
                        f"no image series on frame of reference {', '.join(sorted(frames))}")
    if len(candidates) > 1:
        raise _Unpaired(UnpairedReason.AMBIGUOUS_IMAGE_SERIES,
                        f"{len(candidates)} image series on frame of reference {', '.join(sorted(frames))}",
                        candidates)
    patient = index.patient_of(candidates[0])
    if obj.patient_id and patient and obj.patient_id != patient:
        raise _Unpaired(UnpairedReason.PATIENT_MISMATCH, f"the only series on its frame of reference, "
                        f"{candidates[0]}, belongs to patient {patient}, the {obj.modality} to {obj.patient_id}",
                        candidates)
    return candidates[0]


def _resolve_linked(index: _Index, obj: _Object) -> tuple[str, PairedBy]:
    series = _by_reference(index, obj)
    if series is not None:
        return series, PairedBy.REFERENCE
    return _by_frame(index, obj, obj.frames()), PairedBy.FRAME_OF_REFERENCE


def _resolve_dose(index: _Index, dose: _Object) -> tuple[str, PairedBy, list[_Object], list[_Object]]:
    """A dose's series, how, and the plans and structure sets its chain went through. The chain (dose → plan →
    structure set → series) decides between series on the dose's frame of reference, but must agree with it."""
    frames = {dose.frame} if dose.frame else set()
    plans = [index.objects[uid] for uid in dose.targets(RefKind.RT_PLAN)
             if uid in index.objects and index.objects[uid].modality == PLAN]
    struct_uids = dose.targets(RefKind.STRUCTURE_SET) + [uid for plan in plans
                                                         for uid in plan.targets(RefKind.STRUCTURE_SET)]
    structs = [index.objects[uid] for uid in dict.fromkeys(struct_uids)
               if uid in index.objects and index.objects[uid].modality == STRUCT]
    for plan in plans:
        if frames and plan.frame and plan.frame not in frames:
            raise _Unpaired(UnpairedReason.CHAIN_CONTRADICTS_FRAME_OF_REFERENCE,
                            f"the dose's plan {plan.sop} is on frame of reference {plan.frame}, the dose on "
                            f"{dose.frame}")
    chained: set[str] = set()
    for struct in structs:
        try:
            chained.add(_resolve_linked(index, struct)[0])
        except _Unpaired:
            continue  # a broken structure set does not decide for the dose; its own report says why
    for series_uid in sorted(chained):
        if frames and index.frame_of(series_uid) not in frames:
            raise _Unpaired(UnpairedReason.CHAIN_CONTRADICTS_FRAME_OF_REFERENCE,
                            f"plan/structure set chain leads to series {series_uid} on frame of reference "
                            f"{index.frame_of(series_uid)}, the dose is on {dose.frame}", sorted(chained))
    if len(chained) > 1:
        raise _Unpaired(UnpairedReason.AMBIGUOUS_IMAGE_SERIES, "plan/structure set chain leads to "
                                                               f"{len(chained)} image series", chained)
    if chained:
        series_uid = next(iter(chained))
        _check_series(index, dose, series_uid, "chained")
        return series_uid, PairedBy.PLAN_CHAIN, plans, structs
    return _by_frame(index, dose, frames), PairedBy.FRAME_OF_REFERENCE, plans, structs


# ------------------------------------------------------------------------------------------------ building cases
def _fingerprint(index: _Index, paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        _, size, mtime, _ = index.files[path]
        digest.update(f"{path}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def _case_id(patient_id: str | None, series_uid: str) -> str:
    """Stable across runs and machines: the patient (made file-name safe) and a hash of the series UID."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", patient_id or "unknown").strip("._-")[:40] or "unknown"
    return f"{safe}-{hashlib.sha1(series_uid.encode()).hexdigest()[:12]}"


def _dose_groups(doses: list[DoseObject]) -> tuple[list[DoseGroup], list[str]]:
    """Per-beam doses grouped by plan, flagged when their units or types differ (they cannot be summed)."""
    by_plan: dict[str | None, list[DoseObject]] = defaultdict(list)
    for dose in doses:
        if (dose.summation_type or "").upper() == "BEAM":
            by_plan[dose.plan_sop_instance_uid].append(dose)
    groups, warnings = [], []
    for plan, members in sorted(by_plan.items(), key=lambda item: item[0] or ""):
        beams = [b for d in members for b in d.beam_numbers]
        units = sorted({d.units or "" for d in members})
        types = sorted({d.dose_type or "" for d in members})
        group = DoseGroup(plan, [d.sop_instance_uid for d in members], sorted(beams), units, types,
                          len(units) > 1, len(types) > 1, len(beams) != len(set(beams)))
        groups.append(group)
        if group.mixed_units or group.mixed_types:
            warnings.append(f"per-beam doses of plan {plan} mix units {units} / types {types}: not summable")
        if group.duplicate_beams:
            warnings.append(f"per-beam doses of plan {plan} repeat a beam number: {sorted(beams)}")
    return groups, warnings


def pair_cases(db_path: str | Path, image_modalities: tuple[str, ...] = IMAGE_MODALITIES) -> PairingResult:
    """Cases (an image series with its doses, structure sets, segmentations) and the objects left unpaired."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise InvalidInputFileError("no cohort index here: run index_tree first", db_path)
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        index = _Index(connection, image_modalities)
    except sqlite3.DatabaseError as exc:
        raise InvalidInputFileError(f"not a usable cohort index ({exc})", db_path) from exc
    finally:
        connection.close()

    unpaired: list[Unpaired] = []
    members: dict[str, dict[str, dict[str, tuple[_Object, PairedBy]]]] = defaultdict(lambda: defaultdict(dict))

    def report(obj: _Object, error: _Unpaired) -> None:
        unpaired.append(Unpaired(obj.sop, obj.path, obj.modality, obj.patient_id, error.reason, error.text,
                                 list(error.candidates)))

    for obj in index.duplicates:
        report(obj, _Unpaired(UnpairedReason.DUPLICATE_SOP_INSTANCE,
                              f"SOPInstanceUID also in {index.objects[obj.sop].path}; that file is used"))
    for obj in sorted(index.objects.values(), key=lambda o: o.path):
        if obj.modality not in (STRUCT, SEG):
            continue
        try:
            series_uid, how = _resolve_linked(index, obj)
        except _Unpaired as error:
            report(obj, error)
            continue
        members[series_uid][obj.modality][obj.sop] = (obj, how)
    for obj in sorted(index.objects.values(), key=lambda o: o.path):
        if obj.modality != DOSE:
            continue
        try:
            series_uid, how, plans, structs = _resolve_dose(index, obj)
        except _Unpaired as error:
            report(obj, error)
            continue
        members[series_uid][DOSE][obj.sop] = (obj, how)
        for plan in plans:
            members[series_uid][PLAN].setdefault(plan.sop, (plan, PairedBy.REFERENCE))
        for struct in structs:
            if struct.sop not in members[series_uid][STRUCT] and how == PairedBy.PLAN_CHAIN:
                members[series_uid][STRUCT][struct.sop] = (struct, PairedBy.PLAN_CHAIN)

    cases = []
    for series_uid, by_modality in members.items():
        row = index.series[series_uid]
        ct_files = index.sorted_files(series_uid)
        linked = {modality: [LinkedObject(obj.sop, obj.path, modality, how.value)
                             for obj, how in sorted(objs.values(), key=lambda item: item[0].path)]
                  for modality, objs in by_modality.items() if modality != DOSE}
        doses = []
        for obj, how in sorted(by_modality.get(DOSE, {}).values(), key=lambda item: item[0].path):
            plan_refs = obj.refs.get(RefKind.RT_PLAN.value, [])
            doses.append(DoseObject(obj.sop, obj.path, how.value, obj.summation, obj.units, obj.dose_type,
                                    plan_refs[0][0] if plan_refs else None,
                                    plan_refs[0][1] if plan_refs else None,
                                    sorted({ref[2] for ref in plan_refs if ref[2] is not None})))
        groups, warnings = _dose_groups(doses)
        if row[7]:
            warnings.insert(0, row[7])  # the series' geometry note: duplicate or missing slices, tilt
        paths = ct_files + [d.path for d in doses] + [o.path for objs in linked.values() for o in objs]
        cases.append(Case(
            case_id=_case_id(row[1], series_uid), patient_id=row[1] or "", study_uid=row[2],
            frame_of_reference_uid=row[4], ct_series_uid=series_uid,
            ct_folder=os.path.commonpath(ct_files) if len(ct_files) > 1 else os.path.dirname(ct_files[0]),
            ct_files=ct_files, doses=doses, dose_groups=groups, rtstructs=linked.get(STRUCT, []),
            segs=linked.get(SEG, []), plans=linked.get(PLAN, []), warnings=warnings,
            fingerprint=_fingerprint(index, paths)))
    cases.sort(key=lambda c: (c.patient_id, c.case_id))
    unpaired.sort(key=lambda u: (u.patient_id or "", u.path))
    lonely = sorted(index.image_series - set(members))
    return PairingResult(str(db_path), cases, unpaired, lonely, index.warnings)
