"""`segqa compare` end to end: three "models" of the real TotalSegmentator labels (as is; with other label numbers,
described by a label file; shifted with a structure removed), matched by code, compared on the CT grid."""

from __future__ import annotations

import csv
import json

import numpy as np
import SimpleITK as sitk

from SegmentationQALib import cli

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
