"""`segqa compare` end to end: three "models" of the real TotalSegmentator labels (as is; with other label numbers,
described by a label file; shifted with a structure removed), matched by code, compared on the CT grid."""

from __future__ import annotations

import csv
import json

import numpy as np
import SimpleITK as sitk

from SegmentationQALib import cli
from validators import assert_dciodvfy_clean

TOTALSEG = "totalsegmentator/reference_files"


def _models(shared_data, tmp_path):
    source = sitk.ReadImage(str(shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz"))
    labels = sitk.GetArrayFromImage(source)

    def save(array, name):
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.CopyInformation(source)
        sitk.WriteImage(image, str(tmp_path / name))
        return tmp_path / name

    renumbered = np.where(labels > 0, 200 - labels, 0)  # other numbers: only the label description matches them
    description = tmp_path / "renumbered.txt"  # ITK-SNAP label file naming the new numbers
    left, right = 200 - 3, 200 - 2  # kidney_left is 3, kidney_right 2 in TotalSegmentator's numbering
    description.write_text(f'{left} 255 0 0 1 1 1 "kidney_left"\n{right} 0 255 0 1 1 1 "kidney_right"\n')
    shifted = np.roll(labels, 2, axis=2)
    shifted[shifted == 5] = 0  # the liver (5) missing from this model
    return save(labels, "a.nii.gz"), save(renumbered, "b.nii.gz"), description, save(shifted, "c.nii.gz")


def test_compare_three_models_matches_by_code_and_flags_the_shifted_one(shared_data, tmp_path):
    a, b, description, c = _models(shared_data, tmp_path)
    out = tmp_path / "review"
    code = cli.main(["compare", "--reference", str(shared_data / TOTALSEG / "example_ct.nii.gz"),
                     "--segmentation", str(a), "--labels", "totalsegmentator:total", "--name", "asis",
                     "--segmentation", str(b), "--labels", str(description), "--name", "renumbered",
                     "--segmentation", str(c), "--labels", "totalsegmentator:total", "--name", "shifted",
                     "--output-dir", str(out), "--json", str(tmp_path / "r.json"), "--quiet"])
    assert code == 0
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["ok"] and document["models"] == ["asis", "renumbered", "shifted"]
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"structure", "code", "model_a", "model_b", "dice", "hd95_mm", "msd_mm", "surface_dice", "volume_a_ml",
            "volume_b_ml"} <= set(rows[0])

    def dice(code, model_a, model_b):
        row = next(r for r in rows if r["code"] == code and {r["model_a"], r["model_b"]} == {model_a, model_b})
        return float(row["dice"])

    # the renumbered model's kidneys (labels 197 and 198, named only by its ITK-SNAP file) are matched by the code
    # their names have in the label maps, left and right apart, and are the same voxels
    left, right = "SCT:64033007/SCT:7771000", "SCT:64033007/SCT:24028007"
    assert dice(left, "asis", "renumbered") == 1.0 and dice(right, "asis", "renumbered") == 1.0
    assert dice(left, "asis", "shifted") < 1.0
    missing = document["matching"]
    assert "liver" in json.dumps(missing)  # the shifted model lacks the liver: reported, not dropped
    assert (out / "report.html").is_file() and (out / "dice_heatmap.png").is_file()
    assert any(o["model"] == "shifted" for o in document["outliers"])


def test_consensus_seg_needs_a_dicom_reference_and_nothing_is_written_without(shared_data, tmp_path, capsys):
    a, _, _, c = _models(shared_data, tmp_path)
    out = tmp_path / "review"
    code = cli.main(["compare", "--reference", str(shared_data / TOTALSEG / "example_ct.nii.gz"),
                     "--segmentation", str(a), "--segmentation", str(c), "--output-dir", str(out),
                     "--export-consensus", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: ") and "DICOM" in err[-1]
    assert not out.exists()


def test_rtstruct_models_are_read_on_the_ct_planes(shared_data, tmp_path, capsys):
    """TotalSegmentator's labels as label NIfTI, as our DICOM SEG and as our RTSTRUCT (on a CT series written for
    them): the RTSTRUCT is rasterised on the CT planes, every structure is matched by its code across the three
    formats, and the SEG and the RTSTRUCT both equal the labels (our contours read back exactly on their planes)."""
    labels = shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz"
    assert cli.main(["export-seg", "--segmentation", str(labels), "--labels", "totalsegmentator:total",
                     "--reference", str(shared_data / TOTALSEG / "example_ct.nii.gz"), "--export-reference",
                     "--body-part", "ABDOMEN", "--output-dir", str(tmp_path / "seg"), "--quiet"]) == 0
    ct, seg = tmp_path / "seg" / "reference", next((tmp_path / "seg").glob("*.seg.dcm"))
    assert cli.main(["export-rtstruct", "--segmentation", str(seg), "--reference", str(ct), "--output-dir",
                     str(tmp_path / "rt"), "--json", str(tmp_path / "rt.json"), "--quiet"]) == 0
    rtstruct = json.loads((tmp_path / "rt.json").read_text())["path"]
    code = cli.main(["compare", "--reference", str(ct), "--segmentation", str(labels), "--labels",
                     "totalsegmentator:total", "--name", "nifti", "--segmentation", str(seg), "--name", "seg",
                     "--segmentation", rtstruct, "--name", "rtstruct", "--output-dir", str(tmp_path / "review"),
                     "--export-consensus", "--json", str(tmp_path / "r.json"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "r.json").read_text())
    structures = document["matching"]["structures"]
    assert len(structures) == 61 and all(len(s["members"]) == 3 and s["method"] == "code" for s in structures)
    assert not any(document["matching"]["unmatched"].values())
    rows = [r for r in document["rows"] if r["model_b"] != "consensus"]
    same = [r for r in rows if {r["model_a"], r["model_b"]} == {"nifti", "seg"}]
    assert len(same) == 61 and all(r["dice"] == 1.0 and r["hd95_mm"] == 0.0 for r in same)
    contoured = [r for r in rows if "rtstruct" in (r["model_a"], r["model_b"])]
    assert len(contoured) == 122 and all(r["status"] == "both_present" and r["dice"] == 1.0 for r in contoured)
    assert_dciodvfy_clean(tmp_path / "review" / "consensus.seg.dcm")


def test_an_rtstruct_model_needs_a_dicom_reference(shared_data, tmp_path, capsys):
    rs = shared_data / "dicompyler-core" / "rtss.dcm"
    a, _, _, _ = _models(shared_data, tmp_path)
    code = cli.main(["compare", "--reference", str(shared_data / TOTALSEG / "example_ct.nii.gz"), "--segmentation",
                     str(a), "--segmentation", str(rs), "--output-dir", str(tmp_path / "review"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"error: {rs}: an RTSTRUCT is read onto the planes of its CT: give --reference as "
                                 "the CT's DICOM folder"]
    code = cli.main(["compare", "--reference", str(shared_data / "dicompyler-core"), "--segmentation", str(rs),
                     "--labels", "totalsegmentator:total", "--segmentation", str(rs), "--output-dir",
                     str(tmp_path / "review"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith(f"error: {rs}: --labels describes")
    assert not (tmp_path / "review").exists()
