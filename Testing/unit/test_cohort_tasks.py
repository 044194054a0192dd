"""`dicomfidelity index | pairs | run ml-dataset` end to end on a generated cohort: every paired case gets its CT,
dose (equal bit for bit to the single-case `dosealign`) and structure masks; traps and bad cases are reported with
their reasons and the run completes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CohortsLib import cli as cohort_cli
from CohortsLib.tasks import doses_to_sum
from data_builders.cohort import build_cohort
from DoseAlignmentLib import cli as dose_cli


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("cohort_tasks")
    cohort = build_cohort(root / "tree", patients=4, slices=8, seed=5, data=shared_data)
    db, out = root / "cohort.sqlite", root / "out"
    assert cohort_cli.main(["index", str(cohort.root), "--db", str(db), "--quiet"]) == 0
    assert cohort_cli.main(["pairs", "--db", str(db), "--json", str(root / "pairs.json"), "--quiet"]) == 0
    assert cohort_cli.main(["run", "ml-dataset", "--db", str(db), "--output-dir", str(out), "--workers", "1",
                            "--json", str(root / "run.json"), "--quiet"]) == 0
    with open(out / "manifest.csv", newline="") as handle:
        manifest = {row["case"]: row for row in csv.DictReader(handle)}
    for row in manifest.values():  # the task's outputs, relative to the output folder
        assert {"case", "patient_id", "ct_series_uid", "rtdose_sop_uids", "rtstruct_sop_uid", "status", "error",
                "warnings", "seconds", "ct_path"} <= set(row)  # the columns the issue names
        for key in ("dose_path", "ct_path", "masks_dir"):
            value = row.get(key)
            row[key] = str(out / value) if value else ""
    return cohort, root, manifest, json.loads((root / "pairs.json").read_text())


def test_every_paired_case_is_in_the_manifest_and_traps_are_reported(cohort_run):
    cohort, _, manifest, pairs = cohort_run
    assert {case["ct_series_uid"] for case in pairs["cases"]} == set(cohort.cases)
    assert {row["ct_series_uid"] for row in manifest.values()} == set(cohort.cases)
    assert {u["sop_instance_uid"] for u in pairs["unpaired"]} == set(cohort.unpaired)
    assert all(u["reason"] and u["text"] for u in pairs["unpaired"])
    failed = {row["case"]: row["error"] for row in manifest.values() if row["status"] == "failed"}
    mixed = {uid for uid, case in cohort.cases.items() if case.mixed_units}
    assert {manifest[c]["ct_series_uid"] for c in failed} == mixed  # the mixed-unit beams, and nothing else
    assert all("units" in error for error in failed.values())


def test_dose_on_the_ct_grid_equals_single_case_dosealign_bit_for_bit(cohort_run, tmp_path):
    _, root, manifest, pairs = cohort_run
    cases = {case["case_id"]: case for case in pairs["cases"]}
    checked = 0
    for case_id, row in manifest.items():
        if row["status"] != "ok" or not row.get("dose_path"):
            continue
        dose_paths, _ = doses_to_sum(cases[case_id])
        single = tmp_path / f"{case_id}.nii.gz"
        ct_folder = tmp_path / f"{case_id}-ct"  # the case's series alone (its folder may hold other patients')
        ct_folder.mkdir()
        for number, path in enumerate(cases[case_id]["ct_files"]):
            shutil.copy(path, ct_folder / f"{number}.dcm")
        arguments = ["resample", "--reference", str(ct_folder), "--output", str(single), "--quiet"]
        for path in dose_paths:
            arguments += ["--dose", path]
        assert dose_cli.main(arguments) == 0
        ours, theirs = sitk.ReadImage(row["dose_path"]), sitk.ReadImage(str(single))
        assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs))
        assert ours.GetOrigin() == theirs.GetOrigin() and ours.GetSpacing() == theirs.GetSpacing()
        ct = sitk.ReadImage(row["ct_path"])
        assert ct.GetSize() == ours.GetSize()
        checked += 1
    assert checked >= 2


def test_structures_become_masks_on_the_ct_grid_with_a_case_json(cohort_run):
    import pydicom

    _, _, manifest, pairs = cohort_run
    with_structures = [c for c in pairs["cases"] if c["rtstructs"] and manifest[c["case_id"]]["status"] == "ok"]
    assert with_structures
    for case in with_structures:
        row = manifest[case["case_id"]]
        masks = sorted(Path(row["masks_dir"]).iterdir())
        rois = [str(r.ROIName) for r in pydicom.dcmread(case["rtstructs"][0]["path"]).StructureSetROISequence]
        assert len(masks) == len(rois), case["case_id"]
        described = json.loads((Path(row["ct_path"]).parent / "case.json").read_text())
        assert described["ct_series_uid"] == case["ct_series_uid"] and sorted(described["structures"]) == sorted(rois)
        ct = sitk.ReadImage(row["ct_path"])
        assert all(sitk.ReadImage(str(m)).GetSize() == ct.GetSize() for m in masks)
        # the builder puts the contours on the (shifted) CT: every contoured ROI is a non-empty mask
        rtstruct = pydicom.dcmread(case["rtstructs"][0]["path"])
        contoured = sum(1 for c in rtstruct.ROIContourSequence if c.get("ContourSequence"))
        filled = sum(1 for m in masks if np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(m)))))
        assert filled == contoured >= 8, case["case_id"]
