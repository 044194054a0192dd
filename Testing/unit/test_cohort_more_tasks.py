"""`dicomfidelity run export-seg | rtstruct-check` on a small generated cohort, with real files: label volumes named by
a manifest CSV become SEGs equal to the single-case `segqa export-seg`, bad rows fail with their reasons and the run
goes on; every case's RTSTRUCT (and SEG) gets the fidelity report of `segqa rtstruct-check` with per-structure loss
numbers. And the cohort builder's RTSTRUCTs lie on their (shifted) CT: non-empty masks, equal to the unshifted ones."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CohortsLib import cli as cohort_cli
from data_builders.cohort import build_cohort
from DicomFidelityCommonLib.dicom.series import read_image_series
from SegmentationQALib import cli as segqa_cli
from SegmentationQALib.rtstruct import read_rtstruct
from validators import assert_dciodvfy_clean

PATIENTS, SLICES, SEED = 5, 6, 7  # plan chain, SEG, RTSTRUCT, per-beam doses, dose only: four cases to check
TOTALSEG_VALUES = {"Heart": 51, "Lt Lung": 10, "Tumor Bed": 1}  # heart, lung_upper_lobe_left, spleen (any 3 values)


def _masks(cohort, case) -> dict[str, int]:
    """ROI name: voxels of the case's RTSTRUCT read on its CT (even-odd, as every reader of ours does)."""
    (uid,) = case.rtstruct_sop_uids
    loaded = read_rtstruct(cohort.paths[uid], read_image_series(sorted(case.ct_paths))).segmentation
    return {s.name: int(n) for s, n in zip(loaded.segments, loaded.voxel_counts())}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _ct_copy(case, folder: Path) -> Path:
    """The case's CT series alone in a folder (its own folder may hold other patients' files), as a user gives it."""
    folder.mkdir(parents=True)
    for number, path in enumerate(sorted(case.ct_paths)):
        shutil.copy(path, folder / f"{number}.dcm")
    return folder


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("cohort_more")
    built = build_cohort(root / "tree", patients=PATIENTS, slices=SLICES, seed=SEED, traps=False, data=shared_data)
    db = root / "cohort.sqlite"
    assert cohort_cli.main(["index", str(built.root), "--db", str(db), "--quiet"]) == 0
    return built, root, db


def test_builder_rtstructs_lie_on_their_shifted_ct_with_masks_equal_to_the_unshifted_placement(cohort, tmp_path,
                                                                                               shared_data):
    built, _, _ = cohort
    unshifted = build_cohort(tmp_path / "unshifted", patients=PATIENTS, slices=SLICES, seed=SEED, traps=False,
                             data=shared_data, shift=False)
    pairs = [(a, b) for a, b in zip(built.cases.values(), unshifted.cases.values()) if a.rtstruct_sop_uids]
    assert len(pairs) == 3 and all(any(a.shift) and not any(b.shift) for a, b in pairs)
    for shifted, original in pairs:
        counts, reference = _masks(built, shifted), _masks(unshifted, original)
        rtstruct = pydicom.dcmread(built.paths[next(iter(shifted.rtstruct_sop_uids))])
        contoured = {str(r.ROIName) for r, c in zip(rtstruct.StructureSetROISequence, rtstruct.ROIContourSequence)
                     if c.get("ContourSequence")}
        assert len(contoured) >= 8
        assert all(counts[name] > 0 for name in contoured), counts
        assert counts == reference  # same voxels, wherever the patient was moved
        # every contour references the CT image it lies on
        z_of = {str(ds.SOPInstanceUID): float(ds.ImagePositionPatient[2])
                for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in shifted.ct_paths)}
        for roi in rtstruct.ROIContourSequence:
            for contour in roi.get("ContourSequence", []):
                (image,) = contour.ContourImageSequence
                assert z_of[str(image.ReferencedSOPInstanceUID)] == pytest.approx(float(contour.ContourData[2]))


@pytest.fixture(scope="module")
def export_run(cohort):
    """A label manifest: label volumes drawn from the RTSTRUCT masks (by CT series UID and by CT folder, with a
    built-in map and with a colour table), one flipped but on the CT grid, and four bad rows."""
    built, root, db = cohort
    labels_dir = root / "labels"
    labels_dir.mkdir()
    (labels_dir / "three.ctbl").write_text("0 background 0 0 0 0\n1 spleen 200 100 50 255\n"
                                           "10 left_lung 50 100 200 255\n51 heart 250 20 20 255\n")
    rows, expected = [], {}
    with_rtstruct = [c for c in built.cases.values() if c.rtstruct_sop_uids]
    for number, case in enumerate(with_rtstruct):
        series = read_image_series(sorted(case.ct_paths))
        (uid,) = case.rtstruct_sop_uids
        loaded = read_rtstruct(built.paths[uid], series).segmentation
        labels = np.zeros(series.geometry.shape, np.uint8)
        for index, segment in enumerate(loaded.segments):
            if segment.name in TOTALSEG_VALUES:
                labels[loaded.mask(index)] = TOTALSEG_VALUES[segment.name]
        image = series.geometry.to_sitk(labels)
        name = f"labels/{case.patient_id}.nii.gz"
        sitk.WriteImage(image, str(root / name))
        description = "totalsegmentator:total" if number == 0 else "labels/three.ctbl"
        rows.append({"ct_series_uid": case.ct_series_uid, "label_file": name, "labels": description})
        expected[case.ct_series_uid] = "ok"
        if number == 1:  # the same labels stored with flipped axes: same voxel centres, so no resampling
            sitk.WriteImage(sitk.Flip(image, [True, False, True]), str(labels_dir / "flipped.nii.gz"))
            rows.append({"ct_series_uid": case.ct_series_uid, "label_file": "labels/flipped.nii.gz",
                         "labels": description})
        if number == 2:  # a wrong grid: one slice short
            sitk.WriteImage(image[:, :, 1:], str(labels_dir / "short.nii.gz"))
            rows.append({"ct_series_uid": case.ct_series_uid, "label_file": "labels/short.nii.gz", "labels": ""})
    # by folder: a case whose CT slices are the only image files in their folder (the builder's layouts vary)
    folder_of = {uid: {str(Path(p).parent) for p in c.ct_paths} for uid, c in built.cases.items()}
    alone = [uid for uid, folders in folder_of.items() if len(folders) == 1
             and sum(1 for other in folder_of.values() if folders & other) == 1]
    assert alone, "the builder's layout for this seed has no CT series alone in its folder"
    series = read_image_series(sorted(built.cases[alone[0]].ct_paths))
    box = np.zeros(series.geometry.shape, np.uint8)
    box[1:4, 200:260, 220:300] = 51
    sitk.WriteImage(series.geometry.to_sitk(box), str(labels_dir / "box.nii.gz"))
    (labels_dir / "garbage.nii.gz").write_bytes(b"not a volume" * 10)
    rows += [
        {"ct_series_uid": "", "ct_folder": next(iter(folder_of[alone[0]])), "label_file": "labels/box.nii.gz",
         "labels": "totalsegmentator:total"},
        {"ct_series_uid": "1.2.3.999", "label_file": rows[0]["label_file"], "labels": ""},  # not in the index
        {"ct_series_uid": with_rtstruct[0].ct_series_uid, "label_file": "labels/garbage.nii.gz", "labels": ""},
        {"ct_series_uid": "", "ct_folder": str(built.root), "label_file": rows[0]["label_file"], "labels": ""},
    ]
    manifest = root / "labels.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["ct_series_uid", "ct_folder", "label_file", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    out = root / "export"
    arguments = ["run", "export-seg", "--db", str(db), "--output-dir", str(out), "--manifest", str(manifest),
                 "--workers", "1", "--json", str(root / "export.json"), "--quiet"]
    assert cohort_cli.main(arguments) == 0
    return built, root, out, rows, arguments


def test_export_seg_writes_one_seg_per_row_and_bad_rows_fail_with_their_reasons(export_run):
    built, root, out, rows, arguments = export_run
    manifest = _rows(out / "manifest.csv")
    assert [int(r["manifest_row"]) for r in manifest] == list(range(2, len(rows) + 2))  # one case per row, in order
    columns = {"case", "status", "error", "ct_series_uid", "label_file", "labels", "seg", "export_json"}
    assert columns <= set(manifest[0])
    failed = {Path(r["label_file"]).name + "@" + r["manifest_row"]: r["error"] for r in manifest
              if r["status"] == "failed"}
    assert len(failed) == 4, failed
    assert any("CT series 1.2.3.999 is not in the cohort index" in e and "labels.csv: row" in e
               for e in failed.values())
    assert any("short.nii.gz" in e and "is not the grid of CT series" in e for e in failed.values())
    assert any("garbage.nii.gz" in e for e in failed.values())
    assert any("ct_folder" in e and "image series" in e and "give ct_series_uid" in e for e in failed.values())
    ok = [r for r in manifest if r["status"] == "ok"]
    assert len(ok) == 5  # three label files, the flipped copy, the box by CT folder
    for row in ok:
        seg = pydicom.dcmread(out / row["seg"])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == row["ct_series_uid"]
        case = built.cases[row["ct_series_uid"]]
        ct = pydicom.dcmread(next(iter(case.ct_paths)), stop_before_pixels=True)
        assert seg.FrameOfReferenceUID == ct.FrameOfReferenceUID and seg.PatientID == case.patient_id
        names = sorted(str(s.SegmentLabel) for s in seg.SegmentSequence if int(s.SegmentNumber) > 0)
        assert names == (["heart"] if row["label_file"].endswith("box.nii.gz") else
                         ["heart", "left lung", "spleen"] if row["labels"].endswith("three.ctbl")
                         else ["heart", "lung_upper_lobe_left", "spleen"])
        details = json.loads((out / row["export_json"]).read_text())
        assert details["ct_series_uid"] == row["ct_series_uid"] and len(details["segments"]) == len(names)
    by_folder = next(r for r in ok if r["label_file"].endswith("box.nii.gz"))
    folder = next(r["ct_folder"] for r in rows if r["label_file"].endswith("box.nii.gz"))
    assert {str(Path(p).parent) for p in built.cases[by_folder["ct_series_uid"]].ct_paths} == {folder}
    flipped = next(r for r in ok if r["label_file"].endswith("flipped.nii.gz"))
    unflipped = next(r for r in ok if r["ct_series_uid"] == flipped["ct_series_uid"] and r is not flipped)
    assert "axes reordered" in flipped["warnings"]
    assert np.array_equal(pydicom.dcmread(out / flipped["seg"]).pixel_array,
                          pydicom.dcmread(out / unflipped["seg"]).pixel_array)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 4 and summary["counts"]["ok"] == len(ok)
    assert all(f["error"] for f in summary["failures"])
    assert "Failures" in (out / "index.html").read_text()
    # a second run finds every case done (stable case ids and fingerprints); failed rows are not retried
    assert cohort_cli.main(arguments) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["counts"]["ran"] == 0 and again["counts"]["from_earlier_runs"] == len(rows)


def test_cohort_seg_equals_single_case_segqa_export_seg_and_is_dciodvfy_clean(export_run, tmp_path):
    built, root, out, _, _ = export_run
    row = next(r for r in _rows(out / "manifest.csv") if r["status"] == "ok" and r["labels"] == "totalsegmentator:total"
               and r["label_file"].endswith(".nii.gz") and "flipped" not in r["label_file"])
    folder = _ct_copy(built.cases[row["ct_series_uid"]], tmp_path / "ct")
    report = tmp_path / "single.json"
    assert segqa_cli.main(["export-seg", "--segmentation", row["label_file"], "--reference", str(folder),
                           "--labels", row["labels"], "--output-dir", str(tmp_path / "single"), "--json", str(report),
                           "--quiet"]) == 0
    single = pydicom.dcmread(json.loads(report.read_text())["outputs"]["seg"])
    ours = pydicom.dcmread(out / row["seg"])
    assert ours.SOPClassUID == single.SOPClassUID and ours.file_meta.TransferSyntaxUID == \
        single.file_meta.TransferSyntaxUID
    assert np.array_equal(ours.pixel_array, single.pixel_array)
    assert ours.SegmentSequence == single.SegmentSequence  # names, codes, colours, algorithm: item for item
    assert ours.ReferencedSeriesSequence == single.ReferencedSeriesSequence
    assert ours.PerFrameFunctionalGroupsSequence == single.PerFrameFunctionalGroupsSequence
    assert_dciodvfy_clean(out / row["seg"])


def test_rtstruct_check_reports_every_rtstruct_and_seg_with_per_structure_losses(cohort, tmp_path):
    built, root, db = cohort
    out = root / "rtstruct_check"
    assert cohort_cli.main(["run", "rtstruct-check", "--db", str(db), "--output-dir", str(out), "--workers", "1",
                            "--json", str(root / "rtstruct_check.json"), "--quiet"]) == 0
    manifest = {r["ct_series_uid"]: r for r in _rows(out / "manifest.csv")}
    assert set(manifest) == set(built.cases)
    for uid, case in built.cases.items():
        row = manifest[uid]
        if not case.rtstruct_sop_uids and not case.seg_sop_uids:
            assert row["status"] == "skipped" and "no RTSTRUCT or SEG" in row["error"]
            continue
        assert row["status"] == "ok", row["error"]
        structures = json.loads(row["structures"])
        check = json.loads((out / row["check_json"]).read_text())
        assert row["verdict"] == check["verdict"] and len(check["sources"]) == 1
        report_dir = out / row["report_dirs"]
        assert {"fidelity.json", "fidelity.csv", "index.html"} <= {p.name for p in report_dir.iterdir()}
        fidelity = json.loads((report_dir / "fidelity.json").read_text())
        assert fidelity["source"] == check["sources"][0]["source"]
        if case.rtstruct_sop_uids:
            assert fidelity["kind"] == "rtstruct" and fidelity["file_check"]["ok"]
            counts = _masks(built, case)
            assert {k.split("/", 1)[1]: v["voxels_original"] for k, v in structures.items()} == counts
            assert all(v["voxels_lost"] >= 0 and v["verdict"] in ("lossless", "minor", "lossy")
                       for v in structures.values())
        else:
            assert fidelity["kind"] == "seg" and structures
        assert len(_rows(out / row["structures_csv"])) == len(structures)


def test_rtstruct_check_numbers_equal_single_case_segqa(cohort, tmp_path):
    """The cohort's numbers for an RTSTRUCT equal `segqa load-rtstruct` then `segqa rtstruct-check` on one case."""
    built, root, db = cohort
    out = root / "rtstruct_check"
    if not (out / "manifest.csv").is_file():
        assert cohort_cli.main(["run", "rtstruct-check", "--db", str(db), "--output-dir", str(out), "--workers", "1",
                                "--quiet"]) == 0
    case = next(c for c in built.cases.values() if c.rtstruct_sop_uids)
    row = next(r for r in _rows(out / "manifest.csv") if r["ct_series_uid"] == case.ct_series_uid)
    folder = _ct_copy(case, tmp_path / "ct")
    loaded = tmp_path / "rs.seg.nrrd"
    assert segqa_cli.main(["load-rtstruct", str(built.paths[next(iter(case.rtstruct_sop_uids))]), "--reference",
                           str(folder), "--output", str(loaded), "--quiet"]) == 0
    assert segqa_cli.main(["rtstruct-check", "--segmentation", str(loaded), "--reference", str(folder), "--report",
                           str(tmp_path / "report"), "--quiet"]) == 0
    single = json.loads((tmp_path / "report" / "fidelity.json").read_text())
    ours = json.loads((out / row["report_dirs"] / "fidelity.json").read_text())
    columns = ("name", "verdict", "voxels_original", "voxels_lost", "voxels_gained", "volume_change_percent",
               "contour_volume_change_percent", "dice", "hd95_mm", "islands", "holes", "contours", "thin_voxels")
    nonempty = [s for s in single["segments"] if s["voxels_original"]]  # a .seg.nrrd keeps no empty segment
    assert [{c: s[c] for c in columns} for s in nonempty] == \
        [{c: s[c] for c in columns} for s in ours["segments"] if s["voxels_original"]]
    assert single["verdict"] == ours["verdict"]


def test_export_seg_without_a_usable_manifest_is_one_error_line(cohort, tmp_path, capsys):
    _, _, db = cohort
    run = ["run", "export-seg", "--db", str(db), "--output-dir", str(tmp_path / "out"), "--quiet"]
    assert cohort_cli.main(run) != 0
    assert "export-seg needs a label manifest" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("series,file\n1.2.3,x.nii.gz\n")
    assert cohort_cli.main([*run, "--manifest", str(bad)]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {bad}: ") and "label_file" in error[0]


def test_manifest_paths_relative_to_the_manifest_and_labels_option_to_the_working_folder(shared_data, tmp_path,
                                                                                          monkeypatch):
    """A manifest cell is relative to the manifest's folder; the --labels default, typed on the command line, is
    relative to where it was typed."""
    from CohortsLib.label_manifest import read_label_manifest

    db = tmp_path / "cohort.sqlite"
    assert cohort_cli.main(["index", str(shared_data / "dcmqi/segmentations/ct-3slice"), "--db", str(db),
                            "--quiet"]) == 0
    uid = str(pydicom.dcmread(next((shared_data / "dcmqi/segmentations/ct-3slice").glob("*.dcm"))).SeriesInstanceUID)
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "labels.csv"
    manifest.write_text(f"ct_series_uid,label_file,labels\n{uid},a.nii.gz,\n{uid},b.nii.gz,cell.txt\n")
    monkeypatch.chdir(tmp_path)
    default_row, cell_row = read_label_manifest(manifest, db, "typed.txt")
    assert default_row["labels"] == str(tmp_path / "typed.txt")
    assert cell_row["labels"] == str(tmp_path / "sub" / "cell.txt")
    assert cell_row["label_file"] == str(tmp_path / "sub" / "b.nii.gz") and not cell_row["row_problem"]
    assert read_label_manifest(manifest, db, "totalsegmentator:total")[0]["labels"] == "totalsegmentator:total"
