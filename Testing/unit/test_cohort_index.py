"""Cohort index on a cohort built from the real data: every file accounted for, values and references equal to
what pydicom reads, broken files recorded with why, and a second run that reads only what changed."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from data_builders.cohort import build_cohort
from DicomFidelityCommonLib.cohort import UnreadableKind, index_tree, open_index, pair_cases
from DicomFidelityCommonLib.cohort import index as index_module
from DicomFidelityCommonLib.cohort.index import parse_numbers
from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("cohort_index")
    cohort = build_cohort(root / "tree", patients=10, data=shared_data)
    db = root / "index.db"
    result = index_tree(cohort.root, db)
    return cohort, db, result


def _refs_and_beams(db) -> tuple[dict[str, set], dict[str, set]]:
    """The refs table by referencing file: {(kind, target)}, and the beams of plan references {(plan, beam)}."""
    refs: dict[str, set] = {}
    beams: dict[str, set] = {}
    for path, kind, target, beam in _rows(db, "SELECT path, kind, target_uid, beam_number FROM refs"):
        refs.setdefault(path, set()).add((kind, target))
        if beam is not None:
            beams.setdefault(path, set()).add((target, beam))
    return refs, beams


def _rows(db: Path, sql: str, *args) -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def test_first_run_reads_every_visible_file_and_skips_hidden_ones(indexed):
    cohort, db, result = indexed
    assert result.files_seen == cohort.visible_files
    assert result.files_read == result.files_seen and result.files_unchanged == 0
    assert result.instances == len(cohort.dicom_files)
    paths = {row[0] for row in _rows(db, "SELECT path FROM files")}
    assert paths == {str(p) for p in cohort.dicom_files} | set(cohort.unreadable)
    assert not any(str(hidden) in paths for hidden in cohort.hidden)
    assert result.to_json()["files_read"] == result.files_read
    # image slices take the fast path: full headers only for new series, referencing objects and broken files
    assert result.full_header_reads < result.files_read / 2


def test_unreadable_files_are_recorded_with_a_reason(indexed):
    cohort, db, result = indexed
    recorded = {path: (kind, reason) for path, kind, reason in _rows(db, "SELECT path, kind, reason FROM unreadable")}
    assert set(recorded) == set(cohort.unreadable)
    for path, allowed in cohort.unreadable.items():
        kind, reason = recorded[path]
        assert kind in allowed.split("|"), (path, kind, reason)
        assert reason
    assert {entry["path"] for entry in result.unreadable} == set(cohort.unreadable)
    assert result.unreadable_total == len(cohort.unreadable)


# an independent reading of the references: every (sequence path, keyword) the index is meant to follow
REFERENCE_PATHS = {
    ("ReferencedSeriesSequence", "SeriesInstanceUID"): "SERIES",
    ("ReferencedSeriesSequence", "ReferencedInstanceSequence", "ReferencedSOPInstanceUID"): "INSTANCE",
    ("ReferencedFrameOfReferenceSequence", "FrameOfReferenceUID"): "FRAME_OF_REFERENCE",
    ("ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence", "ReferencedSOPInstanceUID"): "STUDY",
    ("ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence", "RTReferencedSeriesSequence",
     "SeriesInstanceUID"): "SERIES",
    ("ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence", "RTReferencedSeriesSequence",
     "ContourImageSequence", "ReferencedSOPInstanceUID"): "INSTANCE",
    ("ReferencedRTPlanSequence", "ReferencedSOPInstanceUID"): "RT_PLAN",
    ("ReferencedStructureSetSequence", "ReferencedSOPInstanceUID"): "STRUCTURE_SET",
    ("ReferencedDoseSequence", "ReferencedSOPInstanceUID"): "DOSE",
}


def _pydicom_references(ds, trail=()) -> set[tuple[str, str]]:
    found = set()
    for element in ds:
        here = (*trail, element.keyword)
        if element.VR == "SQ":
            for item in element.value:
                found |= _pydicom_references(item, here)
        elif here in REFERENCE_PATHS and element.value:
            found.add((REFERENCE_PATHS[here], str(element.value)))
    return found


def _pydicom_beams(ds) -> set[tuple[str, int]]:
    return {(str(plan.ReferencedSOPInstanceUID), int(beam.ReferencedBeamNumber))
            for plan in ds.get("ReferencedRTPlanSequence", [])
            for group in plan.get("ReferencedFractionGroupSequence", [])
            for beam in group.get("ReferencedBeamSequence", [])}


def test_index_equals_a_full_pydicom_read_of_every_file(indexed):
    cohort, db, _ = indexed
    instances = {row[0]: row for row in _rows(
        db, "SELECT path, sop_instance_uid, sop_class_uid, modality, patient_id, study_uid, series_uid, "
            "frame_of_reference_uid, position, rows, columns, dose_summation_type, dose_units FROM instances")}
    refs, beams = _refs_and_beams(db)
    referencing = 0
    for path in cohort.dicom_files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        row = instances[str(path)]
        assert row[1:8] == (ds.SOPInstanceUID, ds.SOPClassUID, ds.Modality, ds.PatientID, ds.StudyInstanceUID,
                            ds.SeriesInstanceUID, ds.get("FrameOfReferenceUID")), path
        if "ImagePositionPatient" in ds:
            assert parse_numbers(row[8]) == pytest.approx([float(v) for v in ds.ImagePositionPatient])
            assert row[9] in (None, ds.Rows) and row[10] in (None, ds.Columns)  # None: slice read on the fast path
        assert (row[11], row[12]) == (ds.get("DoseSummationType"), ds.get("DoseUnits"))
        expected = _pydicom_references(ds)
        assert refs.get(str(path), set()) == expected, path
        assert beams.get(str(path), set()) == _pydicom_beams(ds), path
        referencing += bool(expected)
    assert referencing >= 20  # doses, plans, structure sets and SEGs of the cohort


def test_series_geometry_summary(indexed, shared_data):
    cohort, db, _ = indexed
    series = {row[0]: row for row in _rows(
        db, "SELECT series_uid, slice_count, slice_spacing, uniform_spacing, orientation, first_position, "
            "last_position, instance_count, rows, columns, pixel_spacing, geometry_note FROM series")}
    for uid, case in cohort.cases.items():
        row = series[uid]
        zs = sorted(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in case.ct_paths)
        assert row[1] == row[7] == len(case.ct_paths)
        assert row[2] == pytest.approx(2.0) and row[3] == 1 and row[11] is None
        assert parse_numbers(row[4]) == [1, 0, 0, 0, 1, 0]
        assert (parse_numbers(row[5])[2], parse_numbers(row[6])[2]) == pytest.approx((zs[0], zs[-1]))
        assert (row[8], row[9]) == (512, 512) and parse_numbers(row[10]) == pytest.approx([1.171875, 1.171875])
    patients = {row[0] for row in _rows(db, "SELECT patient_id FROM patients")}
    assert {case.patient_id for case in cohort.cases.values()} <= patients


def _snapshot(db: Path) -> dict[str, list]:
    """What an index holds, without the columns that depend on when it was built."""
    return {
        "instances": _rows(db, "SELECT path, sop_instance_uid, series_uid, frame_of_reference_uid, position, "
                               "dose_units FROM instances ORDER BY path"),
        "refs": _rows(db, "SELECT path, kind, target_uid, fraction_group, beam_number FROM refs "
                          "ORDER BY path, kind, target_uid"),
        "series": _rows(db, "SELECT * FROM series ORDER BY series_uid"),
        "studies": _rows(db, "SELECT * FROM studies ORDER BY study_uid"),
        "patients": _rows(db, "SELECT * FROM patients ORDER BY patient_id"),
        "unreadable": _rows(db, "SELECT path, kind FROM unreadable ORDER BY path"),
    }


def test_second_run_reads_only_new_or_changed_files(tmp_path, shared_data, monkeypatch):
    cohort = build_cohort(tmp_path / "tree", patients=5, data=shared_data)
    db = tmp_path / "index.db"
    first = index_tree(cohort.root, db)
    again = index_tree(cohort.root, db)
    assert again.files_read == 0 and again.files_unchanged == first.files_seen and again.full_header_reads == 0
    assert _snapshot(db) == _snapshot(db)

    seg_case = next(case for case in cohort.cases.values() if case.seg_sop_uids)
    seg_path = cohort.paths[next(iter(seg_case.seg_sop_uids))]
    seg_path.unlink()
    dose_case = next(case for case in cohort.cases.values() if case.dose_sop_uids and not case.beam_groups)
    touched = sorted(dose_case.ct_paths)[0]
    stat = os.stat(touched)
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    new_dose = pydicom.dcmread(cohort.paths[next(iter(dose_case.dose_sop_uids))])
    new_dose.SOPInstanceUID = new_dose.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    new_path = cohort.root / "late_arrivals" / "dose"
    new_path.parent.mkdir()
    new_dose.save_as(new_path, enforce_file_format=True)
    fixed = Path(next(p for p, kind in cohort.unreadable.items() if kind == "TRUNCATED"))
    shutil.copyfile(touched, fixed)  # a truncated file replaced by a good copy (same SOP: a duplicate slice)

    third = index_tree(cohort.root, db)
    assert third.files_read == 3  # the touched slice, the new dose, the repaired file
    assert third.files_removed == 1
    assert third.files_seen == first.files_seen and third.files_unchanged == third.files_seen - 3
    assert third.unreadable_total == first.unreadable_total - 1

    fresh = tmp_path / "fresh.db"
    monkeypatch.setattr(index_module, "PARALLEL_MIN_FILES", 10)
    index_tree(cohort.root, fresh, workers=2)  # forked readers, small batches
    assert _snapshot(db) == _snapshot(fresh)  # incremental == rebuilt from scratch

    pairing = pair_cases(db)
    assert pairing.case(seg_case.ct_series_uid) is None
    assert seg_case.ct_series_uid in pairing.image_series_without_objects
    duplicated = pairing.case(dose_case.ct_series_uid)
    assert len(duplicated.doses) == 2
    assert len(duplicated.ct_files) == len(dose_case.ct_paths) + 1
    notes = _rows(db, "SELECT geometry_note FROM series WHERE series_uid=?", dose_case.ct_series_uid)[0][0]
    assert "duplicate position" in notes and notes in duplicated.warnings


def test_progress_database_in_tree_and_errors(tmp_path, shared_data):
    cohort = build_cohort(tmp_path / "tree", patients=1, traps=False, slices=3, data=shared_data)
    db = cohort.root / "cohort.db"  # inside the tree, not hidden: still never indexed as a file
    seen: list[tuple[float, str]] = []
    result = index_tree(cohort.root, db, progress=lambda fraction, message: seen.append((fraction, message)))
    assert result.files_seen == len(cohort.dicom_files)
    fractions = [fraction for fraction, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    with pytest.raises(InvalidInputFileError):
        index_tree(tmp_path / "missing", tmp_path / "x.db")
    (tmp_path / "bad.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InvalidInputFileError):
        open_index(tmp_path / "bad.db")
    connection = open_index(db)
    connection.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    connection.commit()
    connection.close()
    with pytest.raises(DicomFidelityError, match="schema"):
        index_tree(cohort.root, db)
    assert {kind.value for kind in UnreadableKind} >= {"NOT_DICOM", "TRUNCATED"}


def test_a_series_rewritten_with_a_new_patient_id_is_read_again(tmp_path, shared_data):
    """Slices on the fast path take PatientID from their series' first file: a changed series must be re-read,
    not served from what the index remembered, and the objects that reference it then belong to someone else."""
    cohort = build_cohort(tmp_path / "tree", patients=1, traps=False, slices=3, data=shared_data)
    db = tmp_path / "index.db"
    index_tree(cohort.root, db)
    (uid, case), = cohort.cases.items()
    for path in case.ct_paths:
        ds = pydicom.dcmread(path)
        ds.PatientID = "RENAMED-0001"
        ds.save_as(path, enforce_file_format=True)
    result = index_tree(cohort.root, db)
    assert result.files_read == len(case.ct_paths)
    assert {row[0] for row in _rows(db, "SELECT patient_id FROM instances WHERE series_uid=?", uid)} == {"RENAMED-0001"}
    assert "RENAMED-0001" in {row[0] for row in _rows(db, "SELECT patient_id FROM patients")}
    pairing = pair_cases(db)
    assert pairing.case(uid) is None
    reasons = {u.sop_instance_uid: u.reason.value for u in pairing.unpaired}
    assert reasons == dict.fromkeys(case.rtstruct_sop_uids | case.dose_sop_uids, "PATIENT_MISMATCH")


def test_an_interrupted_run_is_completed_by_the_next(tmp_path, shared_data, monkeypatch):
    """Files are committed batch by batch with their series marked dirty, so a run killed before the series
    summaries leaves an index the next run completes without reading any file again."""
    cohort = build_cohort(tmp_path / "tree", patients=3, traps=False, slices=3, data=shared_data)
    db = tmp_path / "index.db"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(index_module, "_refresh_series", interrupted)
        with pytest.raises(KeyboardInterrupt):
            index_tree(cohort.root, db)
    assert _rows(db, "SELECT COUNT(*) FROM series")[0][0] == 0
    resumed = index_tree(cohort.root, db)
    written = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in cohort.dicom_files}
    assert resumed.files_read == 0 and resumed.series == len(written)
    index_tree(cohort.root, tmp_path / "fresh.db")
    assert _snapshot(db) == _snapshot(tmp_path / "fresh.db")


def _ds_text(value) -> str | None:
    """A DS value as the file states it ('x\\y\\z'), as pydicom gives it back."""
    if value is None or value == "":
        return None
    return "\\".join(str(v) for v in value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) \
        else str(value)


def _or_none(value):
    return None if value is None or value == "" else value


def test_index_of_the_real_data_equals_pydicom(tmp_path, shared_data):
    """Every file of the real data (CT slices on the fast path, SEGs with undefined-length sequences, RTSTRUCT,
    RTPLAN, RTDOSE read from their index elements only, and every non-DICOM file): what the index stores equals
    what pydicom.dcmread reads from it, value for value, references and series texts included."""
    db = tmp_path / "real.db"
    result = index_tree(shared_data, db)
    instances = {row[0]: row for row in _rows(
        db, "SELECT path, sop_instance_uid, sop_class_uid, modality, patient_id, study_uid, series_uid, "
            "frame_of_reference_uid, position, orientation, pixel_spacing, rows, columns, number_of_frames, "
            "dose_summation_type, dose_units, dose_type, size FROM instances")}
    unreadable = {row[0] for row in _rows(db, "SELECT path FROM unreadable")}
    refs, beams = _refs_and_beams(db)
    series_texts: dict[str, set] = {}
    checked = fast = 0
    for folder, folders, names in os.walk(shared_data):
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in (n for n in names if not n.startswith(".")):
            path = os.path.join(folder, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not DICOM: recorded as unreadable, never as an instance
                assert path in unreadable and path not in instances, path
                continue
            if not all(ds.get(k) for k in index_module.REQUIRED):
                assert path in unreadable, path
                continue
            row = instances[path]
            assert row[1:8] == (ds.SOPInstanceUID, ds.SOPClassUID, ds.Modality, _or_none(ds.get("PatientID")),
                                ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                _or_none(ds.get("FrameOfReferenceUID"))), path
            assert row[8:10] == (_ds_text(ds.get("ImagePositionPatient")),
                                 _ds_text(ds.get("ImageOrientationPatient"))), path
            if row[11] is None:  # a slice on the fast path: pixel geometry is its series'
                fast += 1
                assert row[10] is None and row[12] is None, path
            else:
                assert row[10:13] == (_ds_text(ds.get("PixelSpacing")), ds.Rows, ds.Columns), path
            assert row[13] == int(ds.get("NumberOfFrames") or 1), path
            assert row[14:17] == tuple(_or_none(ds.get(k)) for k in ("DoseSummationType", "DoseUnits", "DoseType"))
            assert row[17] == os.path.getsize(path)
            assert refs.get(path, set()) == _pydicom_references(ds), path
            assert beams.get(path, set()) == _pydicom_beams(ds), path
            spacing = ds.get("PixelSpacing")
            series_texts.setdefault(ds.SeriesInstanceUID, set()).add((
                *(None if ds.get(k) is None else (str(ds.get(k)) or None) for k in index_module.SERIES_TEXT),
                ds.get("Rows"), ds.get("Columns"), _ds_text(spacing), ds.get("SamplesPerPixel"),
                ds.get("BitsAllocated")))
            checked += 1
    assert checked > 200 and fast > 150 and result.instances == checked
    stored = {row[0]: row[1:] for row in _rows(db, "SELECT * FROM series_text")}
    assert set(stored) == set(series_texts)
    for uid, text in stored.items():  # read from one file of the series in full: that file's values
        assert text in series_texts[uid], uid
