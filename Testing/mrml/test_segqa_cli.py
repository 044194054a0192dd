"""`segqa` CLI end to end in plain Python (slicer-core wheel): exit codes, JSON, clean failures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from SegmentationQALib import cli
from validators import assert_dciodvfy_clean

TOTALSEG = "totalsegmentator/reference_files"


def test_export_and_load_seg(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["export-seg",
                     "--segmentation", str(shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz"),
                     "--reference", str(shared_data / TOTALSEG / "example_ct.nii.gz"), "--output-dir", str(out),
                     "--export-reference", "--json", str(tmp_path / "export.json"), "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "export.json").read_text())
    assert result["seg_type"] == "labelmap" and len(result["segments"]) == 61
    assert {"number", "label", "voxel_count"} <= set(result["segments"][0])
    assert result["segments"][0]["voxel_count"] > 0
    assert result["timings_seconds"]["in_process_total"] > 0
    assert result["outputs"]["seg"] == result["seg_path"] and len(result["outputs"]["reference_series"]) == 112
    assert result["ok"] and result["errors"] == [] and result["command"] == "export-seg"
    assert_dciodvfy_clean(result["seg_path"])

    code = cli.main(["load-seg", result["seg_path"], "--output", str(tmp_path / "back.seg.nrrd"),
                     "--json", str(tmp_path / "load.json"), "--quiet"])
    assert code == 0
    loaded = json.loads((tmp_path / "load.json").read_text())
    assert loaded["outputs"] == {"segmentation": str(tmp_path / "back.seg.nrrd")}
    assert [s["voxel_count"] for s in loaded["segments"]] == [s["voxel_count"] for s in result["segments"]]
    assert cli.main(["load-seg", result["seg_path"], "--output", str(tmp_path / "back.nii.gz"), "--quiet"]) == 0


@pytest.mark.parametrize("case", ["corrupt", "not-a-segmentation", "empty", "no-reference-option", "labelmap-overlap",
                                  "frame-of-reference"])
def test_bad_inputs_fail_with_one_line_and_no_output(shared_data, tmp_path, capsys, case):
    import numpy as np
    import SimpleITK as sitk

    out = tmp_path / "out"
    reference = str(shared_data / TOTALSEG / "example_ct.nii.gz")
    segmentation = str(shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz")
    extra = []
    if case == "corrupt":
        segmentation = str(tmp_path / "corrupt.seg.nrrd")
        (tmp_path / "corrupt.seg.nrrd").write_bytes(b"NRRD0004\nnonsense")
    elif case == "not-a-segmentation":
        segmentation = str(shared_data / "dicompyler-sample" / "ct.0.dcm")
    elif case == "empty":
        image = sitk.ReadImage(reference)
        empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8))
        empty.CopyInformation(image)
        segmentation = str(tmp_path / "empty.nii.gz")
        sitk.WriteImage(empty, segmentation)
    elif case == "labelmap-overlap":
        segmentation = str(shared_data / "dcmqi/segmentations/partial_overlaps.dcm")
        reference = str(shared_data / "dcmqi/segmentations/ct-3slice")
        extra = ["--seg-type", "labelmap"]
    elif case == "frame-of-reference":  # a SEG on pydicom's CT, exported against dcmqi's CT
        segmentation = str(shared_data / "highdicom/test_files/seg_image_ct_binary.dcm")
        reference = str(shared_data / "dcmqi/segmentations/ct-3slice")
    if case != "no-reference-option":
        extra.append("--export-reference")
    code = cli.main(["export-seg", "--segmentation", segmentation, "--reference", reference,
                     "--output-dir", str(out), "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: ")
    if case == "frame-of-reference":
        assert "FrameOfReferenceUID" in err[-1] and "ct-3slice" in err[-1]
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_runs_as_a_script_like_slicer_python_script(shared_data, tmp_path):
    """What `Slicer --no-main-window --python-script .../cli.py` does: run the file as __main__."""
    script = cli.__file__
    result = subprocess.run([sys.executable, script, "load-seg", str(shared_data / "dcmqi/segmentations/liver.dcm"),
                             "--output", str(tmp_path / "liver.seg.nrrd"), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "liver.seg.nrrd").stat().st_size > 0
