"""Pairing on a generated cohort against its ground truth: every expected case with exactly its objects, every
trap reported unpaired with its reason, per-beam doses grouped (and mixed units flagged), stable ids and
fingerprints that change only with the case's files."""

from __future__ import annotations

import os
import re

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from data_builders.cohort import OFFSET_VARIANTS, build_cohort
from DicomFidelityCommonLib.cohort import PairedBy, UnpairedReason, index_tree, pair_cases
from DicomFidelityCommonLib.errors import InvalidInputFileError


@pytest.fixture(scope="module")
def paired(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("cohort_pairing")
    cohort = build_cohort(root / "tree", patients=10, seed=3, data=shared_data)
    db = root / "index.db"
    index_tree(cohort.root, db)
    return cohort, db, pair_cases(db)


def test_every_expected_case_is_found_with_exactly_its_objects(paired):
    cohort, _, result = paired
    assert {case.ct_series_uid for case in result.cases} == set(cohort.cases)
    for uid, expected in cohort.cases.items():
        case = result.case(uid)
        assert case.patient_id == expected.patient_id
        assert set(case.ct_files) == expected.ct_paths and len(case.ct_files) == len(expected.ct_paths)
        assert set(case.dose_sop_uids) == expected.dose_sop_uids
        assert set(case.rtstruct_sop_uids) == expected.rtstruct_sop_uids
        assert set(case.seg_sop_uids) == expected.seg_sop_uids
        assert {plan.sop_instance_uid for plan in case.plans} == expected.plan_sop_uids
        how = {obj.sop_instance_uid: obj.paired_by for obj in [*case.doses, *case.rtstructs, *case.segs]}
        assert how == expected.paired_by
        for obj in [*case.doses, *case.rtstructs, *case.segs, *case.plans]:
            assert cohort.paths[obj.sop_instance_uid] == type(cohort.root)(obj.path)


def test_ct_files_are_sorted_along_the_normal_whatever_their_names(paired):
    _, _, result = paired
    for case in result.cases:
        zs = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in case.ct_files]
        assert zs == sorted(zs)
        assert all(path.startswith(case.ct_folder) for path in case.ct_files)


def test_every_trap_is_reported_with_its_reason(paired):
    cohort, _, result = paired
    reported = {u.sop_instance_uid: u for u in result.unpaired}
    assert set(reported) == set(cohort.unpaired)
    for sop, expected in cohort.unpaired.items():
        found = reported[sop]
        assert found.reason == UnpairedReason(expected.reason), (found.reason, found.text)
        assert (found.path, found.patient_id) == (expected.path, expected.patient_id)
        assert found.text
    ambiguous = next(u for u in result.unpaired if u.reason == UnpairedReason.AMBIGUOUS_IMAGE_SERIES)
    assert len(ambiguous.candidate_series) == 2
    assert set(result.image_series_without_objects) == cohort.lonely_series


def test_per_beam_doses_are_grouped_and_mixed_units_flagged(paired):
    cohort, _, result = paired
    for uid, expected in cohort.cases.items():
        case = result.case(uid)
        assert [set(g.dose_sop_instance_uids) for g in case.dose_groups] == expected.beam_groups
        for group in case.dose_groups:
            assert group.mixed_units == expected.mixed_units
            assert group.beam_numbers == list(range(1, len(group.dose_sop_instance_uids) + 1))
            assert group.plan_sop_instance_uid in expected.plan_sop_uids
        assert any("not summable" in w for w in case.warnings) == expected.mixed_units
        for dose in case.doses:
            assert dose.units in ("GY", "RELATIVE") and dose.dose_type == "PHYSICAL"
    assert sum(bool(case.dose_groups) for case in result.cases) >= 3


def test_json_is_complete_and_pairing_is_deterministic(paired):
    _, db, result = paired
    data = result.to_json()
    assert len(data["cases"]) == len(result.cases) and len(data["unpaired"]) == len(result.unpaired)
    assert {u["reason"] for u in data["unpaired"]} <= {reason.value for reason in UnpairedReason}
    assert {d["paired_by"] for c in data["cases"] for d in c["doses"]} <= {p.value for p in PairedBy}
    assert pair_cases(db).to_json() == result.to_json()
    assert len({case.case_id for case in result.cases}) == len(result.cases)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", case.case_id) for case in result.cases)  # folder names


def test_builder_dose_offset_variants_describe_the_same_shifted_grid(paired, shared_data):
    """The cohort's doses must be right for anything downstream to trust it: relative, absolute and descending
    GridFrameOffsetVector all give the source's frame z positions plus the patient's shift."""
    cohort, _, result = paired
    source = pydicom.dcmread(shared_data / "dicompyler-sample" / "rtdose.dcm", stop_before_pixels=True)
    source_z = float(source.ImagePositionPatient[2]) + np.asarray(source.GridFrameOffsetVector, float)
    frame_bytes = source.Rows * source.Columns * 2
    source_pixels = pydicom.dcmread(shared_data / "dicompyler-sample" / "rtdose.dcm").PixelData
    seen_kinds = set()
    for case in result.cases:
        ct_shift = float(pydicom.dcmread(case.ct_files[0], stop_before_pixels=True).ImagePositionPatient[2]) - (-734.0)
        for dose in case.doses:
            ds = pydicom.dcmread(dose.path)
            offsets = np.asarray(ds.GridFrameOffsetVector, float)
            z0 = float(ds.ImagePositionPatient[2])
            zs = offsets if offsets[0] != 0 else z0 + offsets
            seen_kinds.add("absolute" if offsets[0] != 0 else "descending" if offsets[-1] < 0 else "relative")
            order = np.argsort(zs)
            np.testing.assert_allclose(zs[order], source_z[:len(zs)] + ct_shift, atol=1e-3)
            frames = [ds.PixelData[i * frame_bytes:(i + 1) * frame_bytes] for i in order]
            assert frames == [source_pixels[i * frame_bytes:(i + 1) * frame_bytes] for i in range(len(zs))]
    assert seen_kinds == set(OFFSET_VARIANTS)


def test_a_second_ct_on_the_frame_makes_a_dose_ambiguous_and_fingerprints_follow_files(tmp_path, shared_data):
    cohort = build_cohort(tmp_path / "tree", patients=5, traps=False, slices=3, data=shared_data)
    db = tmp_path / "index.db"
    index_tree(cohort.root, db)
    before = pair_cases(db)
    by_frame = next(case for case in cohort.cases.values() if "FRAME_OF_REFERENCE" in case.paired_by.values())
    chained = next(case for case in cohort.cases.values() if "PLAN_CHAIN" in case.paired_by.values())
    untouched = {case.case_id: case.fingerprint for case in before.cases
                 if case.ct_series_uid not in (by_frame.ct_series_uid, chained.ct_series_uid)}

    for uid in (by_frame.ct_series_uid, chained.ct_series_uid):  # a second series on each frame of reference
        rescan = generate_uid()
        for n, path in enumerate(sorted(cohort.cases[uid].ct_paths)):
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = rescan
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            target = cohort.root / "rescan" / uid[-6:] / f"{n}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
    index_tree(cohort.root, db)
    after = pair_cases(db)
    dose = next(iter(by_frame.dose_sop_uids))
    reported = {u.sop_instance_uid: u for u in after.unpaired}
    assert reported[dose].reason == UnpairedReason.AMBIGUOUS_IMAGE_SERIES
    assert after.case(by_frame.ct_series_uid) is None
    # the plan chain names the series, so the same ambiguity on its frame of reference does not matter
    assert set(after.case(chained.ct_series_uid).dose_sop_uids) == chained.dose_sop_uids
    assert {case.case_id: case.fingerprint for case in after.cases if case.case_id in untouched} == untouched

    case = after.case(chained.ct_series_uid)
    path = case.ct_files[0]
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    index_tree(cohort.root, db)
    changed = pair_cases(db).case(chained.ct_series_uid)
    assert changed.case_id == case.case_id and changed.fingerprint != case.fingerprint


def test_missing_index_is_a_typed_error(tmp_path):
    with pytest.raises(InvalidInputFileError):
        pair_cases(tmp_path / "nothing.db")
