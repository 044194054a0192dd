"""Label descriptions through the CLI: `export-seg --labels`, `load-seg` writing the description beside a label
volume, the round trip between them; and the two defects of what we wrote (algorithm type, empty Laterality)."""

from __future__ import annotations

import json
import subprocess

import pydicom
import pytest

from SegmentationQALib import cli
from validators import assert_dciodvfy_clean, dciodvfy_executable

TOTALSEG = "totalsegmentator/reference_files"


def _export(shared_data, tmp_path, name, segmentation, *extra):
    report = tmp_path / f"{name}.json"
    code = cli.main(["export-seg", "--segmentation", str(segmentation), "--reference",
                     str(shared_data / TOTALSEG / "example_ct.nii.gz"), "--export-reference",
                     "--output-dir", str(tmp_path / name), "--json", str(report), "--quiet", *extra])
    assert code == 0
    return json.loads(report.read_text())


def _segments(path) -> list:
    """The SEG's segments (a LABELMAP SEG also describes its background, segment 0)."""
    return [item for item in pydicom.dcmread(path).SegmentSequence if int(item.SegmentNumber) > 0]


def _codes(item) -> tuple:
    type_item = item.SegmentedPropertyTypeCodeSequence[0]
    modifiers = type_item.get("SegmentedPropertyTypeModifierCodeSequence", [])
    return (str(type_item.CodeValue), str(modifiers[0].CodeValue) if modifiers else None)


def test_totalsegmentator_labels_give_names_codes_and_laterality_and_round_trip(shared_data, tmp_path):
    labels = shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz"
    first = _export(shared_data, tmp_path, "first", labels, "--labels", "totalsegmentator:total")
    assert not any("no terminology" in w for w in first["warnings"])
    items = {str(item.SegmentLabel): item for item in _segments(first["outputs"]["seg"])}
    assert len(items) == 61
    assert _codes(items["liver"]) == ("10200004", None)
    assert _codes(items["kidney_left"]) == ("64033007", "7771000")
    assert _codes(items["kidney_right"]) == ("64033007", "24028007")
    assert_dciodvfy_clean(first["outputs"]["seg"])

    volume = tmp_path / "back" / "labels.nii.gz"
    assert cli.main(["load-seg", first["outputs"]["seg"], "--output", str(volume), "--json",
                     str(tmp_path / "load.json"), "--quiet"]) == 0
    loaded = json.loads((tmp_path / "load.json").read_text())
    description = loaded["outputs"]["labels_dcmqi_json"]
    assert description.endswith("labels.dcmqi.json") and loaded["outputs"]["labels_colour_table"]

    second = _export(shared_data, tmp_path, "second", volume, "--labels", description)
    again = _segments(second["outputs"]["seg"])
    original = _segments(first["outputs"]["seg"])
    assert [item.to_json_dict() for item in again] == [item.to_json_dict() for item in original]


def test_labels_need_a_label_volume(shared_data, tmp_path, capsys):
    seg = shared_data / "dcmqi/segmentations/liver.dcm"
    code = cli.main(["export-seg", "--segmentation", str(seg), "--reference",
                     str(shared_data / "dcmqi/segmentations/ct-3slice"), "--output-dir", str(tmp_path / "out"),
                     "--labels", "totalsegmentator:total", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: ") and "liver.dcm" in err[-1] and "--labels" in err[-1]


def test_algorithm_type_option_is_honoured(shared_data, tmp_path):
    result = _export(shared_data, tmp_path, "auto", shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz",
                     "--algorithm-type", "automatic")
    items = _segments(result["outputs"]["seg"])
    assert {str(item.SegmentAlgorithmType) for item in items} == {"AUTOMATIC"}
    assert {str(item.SegmentAlgorithmName) for item in items} == {"DicomFidelity"}
    manual = _export(shared_data, tmp_path, "manual", shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz")
    assert {str(item.SegmentAlgorithmType) for item in _segments(manual["outputs"]["seg"])} == {"MANUAL"}


def test_reference_series_states_its_body_part_instead_of_an_empty_laterality(shared_data, tmp_path):
    labels = shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz"
    result = _export(shared_data, tmp_path, "ref", labels, "--body-part", "abdomen")
    first_slice = result["outputs"]["reference_series"][0]
    written = pydicom.dcmread(first_slice)
    assert "Laterality" not in written and written.BodyPartExamined == "ABDOMEN"
    report = subprocess.run([dciodvfy_executable(), "-new", first_slice], capture_output=True, text=True, timeout=120)
    assert "Laterality" not in report.stdout + report.stderr
    assert_dciodvfy_clean(first_slice)
    unknown = _export(shared_data, tmp_path, "unknown", labels)  # not told: empty (unknown), and the user is told
    assert pydicom.dcmread(unknown["outputs"]["reference_series"][0]).Laterality == ""
    assert any("--body-part" in warning for warning in unknown["warnings"])


@pytest.mark.parametrize("output", ["labels.seg.nrrd"])
def test_seg_nrrd_output_keeps_terminology_without_side_files(shared_data, tmp_path, output):
    first = _export(shared_data, tmp_path, "first", shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz",
                    "--labels", "totalsegmentator:total")
    target = tmp_path / output
    assert cli.main(["load-seg", first["outputs"]["seg"], "--output", str(target), "--json",
                     str(tmp_path / "load.json"), "--quiet"]) == 0
    loaded = json.loads((tmp_path / "load.json").read_text())
    assert list(loaded["outputs"]) == ["segmentation"]
    header = target.read_bytes()[:200_000].decode("latin-1")
    assert "64033007" in header and "7771000" in header  # Slicer's TerminologyEntry tags carry the codes


def test_logic_applies_a_description_to_a_loaded_segmentation(logic, shared_data, tmp_path):
    """The panel's Apply button: a label volume loaded without a description gets names, colours and codes."""
    node = logic.loadSegmentationFile(shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz")
    warnings = logic.applyLabelDescription(node, "totalsegmentator:total")
    assert warnings == []
    segmentation = node.GetSegmentation()
    names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    assert {"liver", "kidney_left", "kidney_right"} <= names and not any(n.startswith("Segment_") for n in names)
    layered = logic.layeredSegmentationFromNode(node)
    left = next(s for s in layered.segments if s.name == "kidney_left")
    assert (left.terminology.type.value, left.terminology.type_modifier.value) == ("64033007", "7771000")
    reference = logic.loadVolumeFile(shared_data / TOTALSEG / "example_ct.nii.gz")
    result = logic.exportDicomSeg(node, reference, tmp_path / "out", exportReference=True)
    items = {str(item.SegmentLabel): item for item in _segments(result.seg_path)}
    assert _codes(items["kidney_left"]) == ("64033007", "7771000")


@pytest.mark.parametrize("compatibility, sop_class, syntax", [
    ("default", "1.2.840.10008.5.1.4.1.1.66.7", "1.2.840.10008.1.2.1.99"),
    ("viewer", "1.2.840.10008.5.1.4.1.1.66.7", "1.2.840.10008.1.2.5"),
    ("legacy", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.1.2.1"),
])
def test_compatibility_chooses_sop_class_and_transfer_syntax(shared_data, tmp_path, compatibility, sop_class, syntax):
    """default: LABELMAP + deflate; viewer: LABELMAP + RLE (OHIF's own); legacy: BINARY uncompressed. Same voxels."""
    labels = shared_data / TOTALSEG / "example_seg_fast_force_split.nii.gz"
    result = _export(shared_data, tmp_path, compatibility, labels, "--compatibility", compatibility)
    written = pydicom.dcmread(result["outputs"]["seg"])
    assert (written.SOPClassUID, written.file_meta.TransferSyntaxUID) == (sop_class, syntax)
    back = tmp_path / f"{compatibility}.nii.gz"
    assert cli.main(["load-seg", result["outputs"]["seg"], "--output", str(back), "--quiet"]) == 0
    import SimpleITK as sitk

    original, loaded = sitk.ReadImage(str(labels)), sitk.ReadImage(str(back))
    assert (sitk.GetArrayViewFromImage(original) > 0).sum() == (sitk.GetArrayViewFromImage(loaded) > 0).sum()
    if compatibility != "default":
        assert_dciodvfy_clean(result["outputs"]["seg"])
