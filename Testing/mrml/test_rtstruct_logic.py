"""RTSTRUCT logic (mixin on SegmentationQAMRMLLogic) and `segqa` RTSTRUCT commands under the slicer-core wheel."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib import cli
from SegmentationQALib.rtstruct.fidelity import FidelityGateError, Verdict
from SegmentationQALib.segmentation import LayeredSegmentation
from validators import assert_dciodvfy_clean

TOTALSEG = "totalsegmentator/reference_files"


def synthetic(logic):
    geometry = VolumeGeometry.from_origin_spacing_direction((12, 40, 40), (-20, -25, -18), (1.0, 1.0, 2.5), np.eye(3))
    kk, jj, ii = np.mgrid[0:12, 0:40, 0:40]
    r = np.hypot(jj - 20, ii - 20)
    labels = np.zeros(geometry.shape, np.uint8)
    labels[(r <= 9) & (r > 4) & (kk > 2) & (kk < 9)] = 1
    labels[(jj == 5) & (ii == 5) & (kk > 1)] = 2
    image = np.where(labels > 0, 50, -1000).astype(np.int16)
    volume = logic.volumeNodeFromArray(image, geometry, "CT")
    node = logic.segmentationNodeFromLayered(
        LayeredSegmentation.from_label_volume(geometry, labels, {1: "ring", 2: "wire"}), "Seg", volume)
    return volume, node, labels


def test_check_and_export_with_reference_volume_not_from_dicom(logic, tmp_path):
    volume, node, labels = synthetic(logic)
    result = logic.rtstruct.checkFidelity(node, volume, reportDir=tmp_path / "report")
    table = logic.rtstruct.verdictTable(result)
    assert [(row["name"], row["verdict"]) for row in table] == [("ring", "lossless"), ("wire", "lossy")]
    assert (tmp_path / "report" / "index.html").exists()
    with pytest.raises(Exception, match="not loaded from DICOM"):
        logic.rtstruct.export(node, volume, tmp_path / "out")
    with pytest.raises(FidelityGateError):
        logic.rtstruct.export(node, volume, tmp_path / "gated", exportReference=True, failOn=Verdict.LOSSY)
    assert not (tmp_path / "gated").exists() or not any((tmp_path / "gated").iterdir())
    export, fidelity = logic.rtstruct.export(node, volume, tmp_path / "out", exportReference=True)
    assert len(export.reference_paths) == 12
    assert_dciodvfy_clean([export.path])
    loaded_node, loaded = logic.rtstruct.load(export.path, tmp_path / "out" / "reference")
    counts = dict(zip([s.name for s in loaded.segmentation.segments], loaded.segmentation.voxel_counts()))
    assert counts == {"ring": int((labels == 1).sum()), "wire": int((labels == 2).sum())}
    assert loaded_node.GetSegmentation().GetNumberOfSegments() == 2


def test_cli_dicompyler_load_check_export_load(shared_data, tmp_path):
    folder = shared_data / "dicompyler-core"
    rs = folder / "rtss.dcm"
    assert cli.main(["load-rtstruct", str(rs), "--reference", str(folder), "--output", str(tmp_path / "a.seg.nrrd"),
                     "--json", str(tmp_path / "load1.json"), "--quiet"]) == 0
    assert cli.main(["rtstruct-check", "--segmentation", str(tmp_path / "a.seg.nrrd"), "--reference", str(folder),
                     "--planes-from", str(rs), "--report", str(tmp_path / "report"), "--json",
                     str(tmp_path / "check.json"), "--quiet"]) == 0
    check = json.loads((tmp_path / "check.json").read_text())
    assert {"name", "verdict", "voxels_lost", "voxels_gained", "volume_change_percent", "dice", "islands", "holes",
            "slices_affected"} <= set(check["segments"][0])
    assert check["timings_seconds"]["in_process_total"] > 0
    assert cli.main(["export-rtstruct", "--segmentation", str(tmp_path / "a.seg.nrrd"), "--reference", str(folder),
                     "--planes-from", str(rs), "--output-dir", str(tmp_path / "out"), "--json",
                     str(tmp_path / "export.json"), "--quiet"]) == 0
    export = json.loads((tmp_path / "export.json").read_text())
    assert_dciodvfy_clean([export["path"]])
    assert cli.main(["load-rtstruct", export["path"], "--reference", str(folder), "--output",
                     str(tmp_path / "b.seg.nrrd"), "--json", str(tmp_path / "load2.json"), "--quiet"]) == 0
    before = json.loads((tmp_path / "load1.json").read_text())["voxel_counts"]
    after = json.loads((tmp_path / "load2.json").read_text())["voxel_counts"]
    for segment in check["segments"]:
        name = segment["name"]
        measured = 100.0 * (after[name] - before[name]) / before[name] if before[name] else 0.0
        assert segment["volume_change_percent"] == pytest.approx(measured, abs=1e-3)
    assert len(pydicom.dcmread(export["path"]).StructureSetROISequence) == 10


def test_cli_fail_on_and_bad_input(shared_data, tmp_path, capsys):
    data = shared_data / TOTALSEG
    args = ["export-rtstruct", "--segmentation", str(data / "example_seg_fast_force_split.nii.gz"), "--reference",
            str(data / "example_ct.nii.gz"), "--export-reference", "--output-dir", str(tmp_path / "out"), "--quiet"]
    assert cli.main(args + ["--fail-on", "lossy"]) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "example_seg_fast_force_split" in err[-1] and "export refused" in err[-1]
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"nope")
    assert cli.main(["load-rtstruct", str(junk), "--reference", str(shared_data / "dicompyler-core"),
                     "--output", str(tmp_path / "x.seg.nrrd"), "--quiet"]) == 1
    assert "junk.dcm" in capsys.readouterr().err
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_a_node_loaded_from_an_rtstruct_names_it_when_its_frame_of_reference_differs(logic, shared_data, tmp_path):
    """Exported onto another CT's frame of reference, a segmentation loaded from an RTSTRUCT is refused with the
    RTSTRUCT named (as a SEG-loaded one names its SEG), and nothing is written into the output folder."""
    from DicomFidelityCommonLib.errors import FrameOfReferenceMismatchError

    folder = shared_data / "dicompyler-core"
    node, _ = logic.rtstruct.load(folder / "rtss.dcm", folder)
    with pytest.raises(FrameOfReferenceMismatchError) as raised:
        logic.exportDicomSeg(node, outputDir=tmp_path / "out",
                             referenceDicomFolder=shared_data / "dcmqi/segmentations/ct-3slice")
    assert raised.value.path is not None and str(raised.value.path).endswith("rtss.dcm")
    assert list((tmp_path / "out").glob("*")) == []  # nothing written (an empty folder at most)
    assert list((tmp_path / "out").glob("*")) == []  # nothing written (an empty folder at most)
