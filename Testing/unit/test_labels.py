"""Label descriptions: built-in model maps, dcmqi JSON, Slicer colour tables, ITK-SNAP, applying them to label
volumes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.labels import (
    AlgorithmType,
    LabelDescription,
    LabelEntry,
    LabelFormat,
    UnknownLabelMapError,
    apply_label_description,
    available_model_maps,
    check_label_description,
    dcmqi_json_from_description,
    description_from_segmentation,
    detect_label_format,
    identify_model_map,
    label_segmentation,
    load_model_map,
    read_label_description,
    read_nifti_label_table,
    write_description_beside,
    write_label_description,
)
from SegmentationQALib.labels.dcmqi_json import parse_dcmqi_json
from SegmentationQALib.labels.slicer_ctbl import parse_ctbl, parse_slicer_csv
from SegmentationQALib.segmentation import CodedTerm, LayeredSegmentation, Segment, SegmentTerminology

TOTALSEG = "totalsegmentator/reference_files"
FORCE_SPLIT = f"{TOTALSEG}/example_seg_fast_force_split.nii.gz"
LEFT, RIGHT = ("7771000", "SCT"), ("24028007", "SCT")
ANATOMY = CodedTerm("123037004", "SCT", "Anatomical Structure")


def code(term):
    return (term.value, term.scheme) if term is not None else None


def side_of(name: str) -> str | None:
    tokens = name.lower().split("_")
    return "left" if "left" in tokens else "right" if "right" in tokens else None


# ---- built-in maps ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("map_name", available_model_maps())
def test_builtin_map_entries_are_complete_and_lateral(map_name):
    description = load_model_map(map_name)
    assert len(description) > 0
    values = [e.label_value for e in description.entries]
    assert values == list(range(1, len(values) + 1)), "model class maps are numbered 1..N without gaps"
    keys = Counter()
    for entry in description.entries:
        assert entry.name.strip() and " " not in entry.name, entry
        term = entry.terminology
        for part in (term.category, term.type):
            assert part.value.isdigit() and part.scheme == "SCT" and part.meaning.strip(), entry
        assert entry.algorithm_type is AlgorithmType.AUTOMATIC and entry.algorithm_name
        assert entry.color is not None and all(0 <= c <= 255 for c in entry.color)
        side = side_of(entry.name)
        modifiers = {code(term.type_modifier), code(term.anatomic_region_modifier)} - {None}
        if side is None:
            assert not modifiers & {LEFT, RIGHT}, f"{entry.name} is not lateral but carries a side"
        else:
            wrong = RIGHT if side == "left" else LEFT
            right_code = LEFT if side == "left" else RIGHT
            intrinsic = side in term.type.meaning.lower()  # e.g. "Left atrium", "Middle lobe of right lung"
            assert wrong not in modifiers, f"{entry.name} carries the opposite side"
            assert right_code in modifiers or intrinsic, f"{entry.name} has no laterality"
        keys[(code(term.type), code(term.type_modifier), code(term.anatomic_region),
              code(term.anatomic_region_modifier))] += 1
    duplicates = [key for key, count in keys.items() if count > 1]
    assert not duplicates, f"labels share a structure code: {duplicates}"
    assert check_label_description(description) == []


def test_check_label_description_catches_laterality_and_duplicate_mistakes():
    entries = {e.name: e for e in load_model_map("totalsegmentator:total").entries}
    right = entries["kidney_right"].terminology.type_modifier

    def with_terms(name, **changes):
        entry = entries[name]
        return dataclasses.replace(entry, terminology=dataclasses.replace(entry.terminology, **changes))

    broken = LabelDescription([
        with_terms("kidney_left", type_modifier=right),  # opposite side
        with_terms("femur_left", type_modifier=None),  # side lost
        dataclasses.replace(entries["kidney_right"], label_value=200, name="kidney_right_again"),  # same code twice
        entries["kidney_right"],
        LabelEntry(7, "blob", terminology=SegmentTerminology(CodedTerm("85756007", "SCT", "Tissue"),
                                                             CodedTerm("85756007", "SCT", "Tissue"))),
        entries["lung_middle_lobe_right"],  # lateral concept, no modifier needed
    ])
    legacy = LabelEntry(9, "Left kidney", terminology=SegmentTerminology(  # SNOMED-RT codes count as laterality too
        CodedTerm("T-D000A", "SRT", "Anatomical Structure"), CodedTerm("T-71000", "SRT", "Kidney"),
        CodedTerm("G-A101", "SRT", "Left")))
    broken.entries.append(legacy)
    problems = check_label_description(broken)
    expected = ["label 3 (kidney_left): name says left but the code says right",
                "label 75 (femur_left): name says left but no laterality modifier",
                "label 200 (kidney_right_again) has the same structure code as label 3 (kidney_left)",  # flipped one
                "label 2 (kidney_right) has the same structure code as label 3 (kidney_left)",
                "label 7 (blob): no terminology"]
    assert len(problems) == len(expected), problems
    for text, problem in zip(expected, problems):
        assert problem.startswith(text), problem


def test_totalsegmentator_total_has_all_117_classes_with_expected_codes():
    description = read_label_description("totalsegmentator:total")
    assert len(description) == 117
    entries = {e.name: e for e in description.entries}
    assert entries["liver"].label_value == 5 and entries["liver"].terminology.type.value == "10200004"
    assert entries["costal_cartilages"].label_value == 117
    kidney_left = entries["kidney_left"]
    assert kidney_left.label_value == 3
    assert code(kidney_left.terminology.type) == ("64033007", "SCT")
    assert code(kidney_left.terminology.type_modifier) == LEFT
    assert code(entries["kidney_right"].terminology.type_modifier) == RIGHT
    assert code(entries["rib_right_7"].terminology.type) == ("24915002", "SCT")
    cyst = entries["kidney_cyst_left"].terminology
    assert code(cyst.anatomic_region) == ("64033007", "SCT") and code(cyst.anatomic_region_modifier) == LEFT
    # aliases and errors
    assert read_label_description("TotalSegmentator:total_fast") == description
    with pytest.raises(UnknownLabelMapError, match="moose:clin_ct_organs"):
        read_label_description("totalsegmentator:nonexistent_task")


def test_moose_organs_map():
    description = read_label_description("moose:organs")
    assert description.source == "moose:clin_ct_organs" and len(description) == 19
    entries = {e.name: e for e in description.entries}
    assert entries["liver"].label_value == 8 and entries["liver"].terminology.type.value == "10200004"
    assert code(entries["thyroid_right"].terminology.type_modifier) == RIGHT


def test_builtin_map_numbering_matches_the_real_totalsegmentator_file(shared_data):
    """The 61-label file embeds TotalSegmentator's own label table: every value it uses has the same name here."""
    embedded = read_label_description(shared_data / FORCE_SPLIT)
    assert detect_label_format(shared_data / FORCE_SPLIT) is LabelFormat.NIFTI_TABLE
    ours = load_model_map("totalsegmentator:total")
    assert [(e.label_value, e.name) for e in embedded.entries] == [(e.label_value, e.name) for e in ours.entries]
    raw = read_nifti_label_table(shared_data / FORCE_SPLIT)  # the table alone: names and colours
    assert raw.entries[4].terminology is None and identify_model_map(raw) == "totalsegmentator:total"
    liver = embedded.find(5)  # read_label_description adds the model's codes, keeps the file's colours
    assert liver.name == "liver" and liver.color == (0, 255, 255) and liver.terminology.type.value == "10200004"
    assert "codes from totalsegmentator:total" in embedded.source
    renamed = LabelDescription([dataclasses.replace(e, name="Leber") if e.label_value == 5 else e
                                for e in raw.entries])
    assert identify_model_map(renamed) is None  # a look-alike table is not taken for the model


def test_the_totalsegmentator_file_describes_itself(shared_data, totalseg_labels):
    layered, warnings = label_segmentation(totalseg_labels, shared_data / FORCE_SPLIT)
    assert warnings == []
    kidney = next(s for s in layered.segments if s.label_value == 3)
    assert kidney.name == "kidney_left" and code(kidney.terminology.type_modifier) == LEFT
    assert kidney.color == (1.0, 1.0, 0.0)  # TotalSegmentator's own colour for label 3


# ---- applying to the real 61-label TotalSegmentator file -------------------------------------------------------

@pytest.fixture(scope="module")
def totalseg_labels(shared_data):
    image = sitk.ReadImage(str(shared_data / FORCE_SPLIT))
    labels = sitk.GetArrayFromImage(image)
    return LayeredSegmentation.from_label_volume(VolumeGeometry.from_sitk(image), labels)


def test_totalsegmentator_map_names_and_codes_the_real_file(totalseg_labels):
    assert len(totalseg_labels.segments) == 61
    assert totalseg_labels.segments[4].name == "Segment_5"  # what the export wrote before
    layered, warnings = label_segmentation(totalseg_labels, "totalsegmentator:total")
    assert warnings == []
    by_name = {s.name: s for s in layered.segments}
    assert len(by_name) == 61 and not any(name.startswith("Segment_") for name in by_name)
    liver = by_name["liver"]
    assert liver.label_value == 5 and code(liver.terminology.type) == ("10200004", "SCT")
    assert not liver.terminology.is_generic_default()
    kidney = by_name["kidney_left"]
    assert code(kidney.terminology.type) == ("64033007", "SCT") and code(kidney.terminology.type_modifier) == LEFT
    assert kidney.algorithm_type == "AUTOMATIC" and kidney.algorithm_name == "TotalSegmentator"
    assert kidney.color == pytest.approx(tuple(c / 255 for c in load_model_map("totalsegmentator:total").find(3).color))
    assert layered.layers[0] is totalseg_labels.layers[0]  # no copy of the voxels
    assert totalseg_labels.segments[4].name == "Segment_5"  # the input is not modified


def test_one_summary_warning_for_labels_without_description(totalseg_labels):
    lungs = read_label_description("moose:clin_ct_lungs")  # 5 classes, numbered 1..5
    layered, warnings = apply_label_description(totalseg_labels, lungs)
    assert len(warnings) == 1
    assert warnings[0].startswith("56 labels have no description in moose:clin_ct_lungs: 6, 7, 8, 9, 10, 11, 14,")
    assert warnings[0].endswith("and 36 more")
    assert [s.name for s in layered.segments[:5]] == [e.name for e in lungs.entries]
    assert layered.segments[5].name == "Segment_6"

    small = LabelDescription([LabelEntry(1, "a"), LabelEntry(2, "b")])
    few = LayeredSegmentation.from_label_volume(VolumeGeometry((1, 2, 3), np.eye(4)),
                                                np.array([[[1, 2, 7], [9, 12, 0]]], np.uint8))
    _, warnings = apply_label_description(few, small)
    assert warnings == ["3 labels have no description: 7, 9, 12"]


# ---- dcmqi JSON ------------------------------------------------------------------------------------------------

def sample_description() -> LabelDescription:
    kidney = CodedTerm("64033007", "SCT", "Kidney")
    return LabelDescription([
        LabelEntry(1, "Liver", (221, 130, 101), SegmentTerminology(ANATOMY, CodedTerm("10200004", "SCT", "Liver")),
                   AlgorithmType.SEMIAUTOMATIC, "GrowCut", "Liver segmentation"),
        LabelEntry(2, "left kidney", (185, 102, 83),
                   SegmentTerminology(ANATOMY, kidney, CodedTerm("7771000", "SCT", "Left")),
                   AlgorithmType.AUTOMATIC, "TotalSegmentator"),
        LabelEntry(5, "kidney cyst, right", (144, 238, 144),
                   SegmentTerminology(CodedTerm("49755003", "SCT", "Morphologically Altered Structure"),
                                      CodedTerm("367643001", "SCT", "Cyst"), None, kidney,
                                      CodedTerm("24028007", "SCT", "Right")),
                   AlgorithmType.MANUAL),
    ], series_attributes={"SeriesDescription": "Organs", "ContentCreatorName": "Doe^Jane"})


def test_dcmqi_json_round_trip(tmp_path):
    original = sample_description()
    path = write_label_description(original, tmp_path / "meta.json")
    assert detect_label_format(path) is LabelFormat.DCMQI_JSON
    data = json.loads(path.read_text())
    assert data["SeriesDescription"] == "Organs" and len(data["segmentAttributes"]) == 1
    item = data["segmentAttributes"][0][1]
    left = {"CodeValue": "7771000", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Left"}
    assert item["SegmentedPropertyTypeModifierCodeSequence"] == left
    assert item["recommendedDisplayRGBValue"] == [185, 102, 83] and item["SegmentAlgorithmType"] == "AUTOMATIC"
    again = read_label_description(path)
    assert again == original
    # and through a segmentation: apply, take the description back out, write, read
    layered = LayeredSegmentation.from_label_volume(VolumeGeometry((1, 1, 3), np.eye(4)),
                                                    np.array([[[1, 2, 5]]], np.uint8))
    applied, warnings = apply_label_description(layered, again)
    assert warnings == []
    back = description_from_segmentation(applied)
    assert [(e.label_value, e.name, e.color, e.terminology, e.algorithm_type, e.algorithm_name)
            for e in back.entries] == [(e.label_value, e.name, e.color, e.terminology, e.algorithm_type,
                                        e.algorithm_name) for e in original.entries]


def test_dcmqi_json_multiple_files_become_layers():
    data = {"segmentAttributes": [
        [{"labelID": 1, "SegmentLabel": "Liver", "SegmentAlgorithmType": "MANUAL",
          "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT",
                                                    "CodeMeaning": "Tissue"},
          "SegmentedPropertyTypeCodeSequence": {"CodeValue": "10200004", "CodingSchemeDesignator": "SCT",
                                                "CodeMeaning": "Liver"}}],
        [{"labelID": 1, "SegmentLabel": "Spine", "SegmentAlgorithmType": "MANUAL"}],
    ]}
    description = parse_dcmqi_json(data, "x.json")
    assert [(e.layer, e.label_value, e.name) for e in description.entries] == [(0, 1, "Liver"), (1, 1, "Spine")]
    assert description.entries[1].terminology is None
    assert dcmqi_json_from_description(description)["segmentAttributes"][1][0]["SegmentLabel"] == "Spine"


@pytest.mark.parametrize("item, field", [
    ({"SegmentLabel": "x"}, "segmentAttributes[0][0].labelID"),
    ({"labelID": 1, "SegmentedPropertyTypeCodeSequence": {"CodeValue": "1", "CodingSchemeDesignator": "SCT"}},
     "segmentAttributes[0][0].SegmentedPropertyTypeCodeSequence"),
    ({"labelID": 1, "recommendedDisplayRGBValue": [300, 0, 0]}, "segmentAttributes[0][0].recommendedDisplayRGBValue"),
    ({"labelID": 1, "SegmentAlgorithmType": "GUESS"}, "segmentAttributes[0][0].SegmentAlgorithmType"),
])
def test_dcmqi_json_errors_name_the_field(tmp_path, item, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"segmentAttributes": [[item]]}))
    with pytest.raises(InvalidInputFileError) as caught:
        read_label_description(path)
    assert str(path) in str(caught.value) and caught.value.tag == field


def test_json_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "segmentAttributes": [[\n    {"labelID": 1,}\n  ]]\n}\n')
    with pytest.raises(InvalidInputFileError, match="line 3"):
        read_label_description(path)


def dcmqi_exe(name: str) -> Path:
    exe = Path(sys.executable).with_name(name)
    if not exe.exists():
        pytest.skip(f"{name} (dcmqi) is not installed")
    return exe


@pytest.mark.parametrize("seg_name", ["liver.dcm", "partial_overlaps.dcm"])
def test_dcmqi_own_metadata_json_parses(shared_data, tmp_path, seg_name):
    """dcmqi's test SEGs -> dcmqi's segimage2itkimage -> its meta.json -> our reader."""
    seg = shared_data / "dcmqi" / "segmentations" / seg_name
    subprocess.run([str(dcmqi_exe("segimage2itkimage")), "--inputDICOM", str(seg), "--outputDirectory",
                    str(tmp_path), "--outputType", "nrrd"], check=True, capture_output=True, timeout=300)
    description = read_label_description(tmp_path / "meta.json")
    raw = json.loads((tmp_path / "meta.json").read_text())
    assert len(description) == sum(1 for group in raw["segmentAttributes"] for item in group if item["labelID"])
    for entry in description.entries:
        assert entry.terminology is not None and entry.terminology.type.value
        assert entry.algorithm_type is not None and entry.color is not None
    if seg_name == "liver.dcm":
        liver = description.entries[0].terminology.type  # dcmqi's 2016 test SEG: the legacy SNOMED-RT code
        assert (liver.value, liver.scheme, liver.meaning) == ("T-62000", "SRT", "Liver")


def test_our_dcmqi_json_drives_itkimage2segimage(shared_data, tmp_path):
    """The JSON we write is accepted by dcmqi and comes back out of the SEG it makes with the same meaning."""
    data = shared_data / "dcmqi" / "segmentations"
    labels = sitk.ReadImage(str(data / "liver_spine_seg.nrrd"))  # values 1 and 2 on ct-3slice
    assert sorted(np.unique(sitk.GetArrayFromImage(labels)).tolist()) == [0, 1, 2]
    description = LabelDescription(sample_description().entries[:2])
    meta = write_label_description(description, tmp_path / "meta.json")
    seg_path = tmp_path / "out.dcm"
    subprocess.run([str(dcmqi_exe("itkimage2segimage")), "--inputImageList", str(data / "liver_spine_seg.nrrd"),
                    "--inputDICOMDirectory", str(data / "ct-3slice"), "--outputDICOM", str(seg_path),
                    "--inputMetadata", str(meta)], check=True, capture_output=True, timeout=300)
    out_dir = tmp_path / "back"
    out_dir.mkdir()
    subprocess.run([str(dcmqi_exe("segimage2itkimage")), "--inputDICOM", str(seg_path), "--outputDirectory",
                    str(out_dir), "--outputType", "nrrd"], check=True, capture_output=True, timeout=300)
    back = read_label_description(out_dir / "meta.json")
    assert [(e.name, e.terminology, e.algorithm_type, e.algorithm_name) for e in back.entries] == [
        (e.name, e.terminology, e.algorithm_type, e.algorithm_name) for e in description.entries]
    for ours, theirs in zip(description.entries, back.entries):  # dcmqi stores CIELab: allow its rounding
        assert max(abs(a - b) for a, b in zip(ours.color, theirs.color)) <= 1


# ---- Slicer colour tables --------------------------------------------------------------------------------------

def test_slicer_csv_round_trip_with_terminology(tmp_path):
    original = load_model_map("totalsegmentator:total")
    path = write_label_description(original, tmp_path / "total.labels.csv")
    header = path.read_text().splitlines()[0]
    assert header.startswith("LabelValue,Name,Color_R,Color_G,Color_B,Color_A,Category_CodingScheme,")
    assert detect_label_format(path) is LabelFormat.SLICER_CSV
    again = read_label_description(path)
    assert [(e.label_value, e.name, e.color, e.terminology) for e in again.entries] == [
        (e.label_value, e.name, e.color, e.terminology) for e in original.entries]
    sample = LabelDescription([LabelEntry(e.label_value, e.name, e.color, e.terminology)
                               for e in sample_description().entries])  # a name with a comma gets quoted
    assert read_label_description(write_label_description(sample, tmp_path / "s.csv")) == sample


def test_slicer_csv_as_slicer_documents_it():
    """The example in Slicer's Docs/developer_guide/modules/colors.md (typed in, not copied from a file)."""
    text = ("LabelValue,Name,Color_R,Color_G,Color_B,Color_A,Category_CodingScheme,Category_CodeValue,"
            "Category_CodeMeaning,Type_CodingScheme,Type_CodeValue,Type_CodeMeaning,TypeModifier_CodingScheme,"
            "TypeModifier_CodeValue,TypeModifier_CodeMeaning,Region_CodingScheme,Region_CodeValue,Region_CodeMeaning,"
            "RegionModifier_CodingScheme,RegionModifier_CodeValue,RegionModifier_CodeMeaning\n"
            "1,left_kidney,185,102,83,255,SCT,123037004,Anatomical Structure,SCT,64033007,Kidney,SCT,7771000,Left,"
            ",,,,,\n"
            "6,right_kidney_mass,144,238,144,255,SCT,49755003,Morphologically Altered Structure,SCT,4147007,Mass,,,,"
            "SCT,64033007,Kidney,SCT,24028007,Right\n"
            '10,"catheter, renal",127,127,127,255,SCT,260787004,Physical object,SCT,19923001,Catheter,,,,'
            "SCT,2841007,Renal artery,,,\n")
    description = parse_slicer_csv(text, "colors.csv")
    assert [e.name for e in description.entries] == ["left_kidney", "right_kidney_mass", "catheter, renal"]
    assert code(description.entries[0].terminology.type_modifier) == LEFT
    assert code(description.entries[1].terminology.anatomic_region_modifier) == RIGHT
    assert description.entries[2].terminology.anatomic_region.meaning == "Renal artery"
    with pytest.raises(InvalidInputFileError, match="line 2") as caught:
        parse_slicer_csv(text.replace("SCT,64033007,Kidney,SCT,7771000", ",,,SCT,7771000", 1), "colors.csv")
    assert "Type_" in str(caught.value)


def test_slicer_ctbl_text_table(tmp_path):
    description = LabelDescription([LabelEntry(1, "left kidney", (185, 102, 83)), LabelEntry(3, "Liver", (1, 2, 3))])
    path = write_label_description(description, tmp_path / "t.ctbl")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# Color table file") and lines[2] == "1 left_kidney 185 102 83 255"
    assert detect_label_format(path) is LabelFormat.SLICER_CTBL
    assert read_label_description(path) == description  # spaces come back, as Slicer reads them
    # Slicer's own test table (0 is background), and a .txt that Slicer wrote
    slicer = parse_ctbl("# Color table file x\n# 3 values\n0 zero 0 0 0 255\n1 one 255 59 21 255\n"
                        "2 two_words 41 84 255 255\n", "ColorTest.ctbl")
    assert [(e.label_value, e.name, e.color) for e in slicer.entries] == [(1, "one", (255, 59, 21)),
                                                                           (2, "two words", (41, 84, 255))]
    txt = tmp_path / "colors.txt"
    txt.write_text("# Color table file colors.txt\n1 liver 221 130 101 255\n")
    assert detect_label_format(txt) is LabelFormat.SLICER_CTBL
    bad = tmp_path / "bad.ctbl"
    bad.write_text("# Color table file\n1 liver 221 130 101 255\n2 spleen red 0 0 255\n")
    with pytest.raises(InvalidInputFileError, match="line 3"):
        read_label_description(bad)


# ---- ITK-SNAP --------------------------------------------------------------------------------------------------

def test_itksnap_round_trip_and_parse(tmp_path):
    description = LabelDescription([LabelEntry(1, "Liver (whole)", (221, 130, 101)),
                                    LabelEntry(7, "spleen", (1, 2, 3))])
    path = write_label_description(description, tmp_path / "labels.txt")
    assert detect_label_format(path) is LabelFormat.ITKSNAP
    assert read_label_description(path) == description
    handmade = tmp_path / "snap.label"
    handmade.write_text('# ITK-SnAP Label Description File\n    0     0    0    0        0  0  0    "Clear Label"\n'
                        '    1   255    0    0        1  1  1    "Label 1"\n'
                        '   12     0  255    0      0.5  1  0    "left kidney"\n')
    parsed = read_label_description(handmade)
    assert [(e.label_value, e.name, e.color) for e in parsed.entries] == [(1, "Label 1", (255, 0, 0)),
                                                                           (12, "left kidney", (0, 255, 0))]
    handmade.write_text('# ITK-SnAP Label Description File\n    1   255    0    0        1  1  1    Label 1\n')
    with pytest.raises(InvalidInputFileError, match="line 2"):
        read_label_description(handmade)


# ---- loader, errors, CLI helpers -------------------------------------------------------------------------------

def test_description_validation_and_loader_errors(tmp_path, shared_data):
    with pytest.raises(InvalidInputFileError, match="described twice"):
        LabelDescription([LabelEntry(1, "a"), LabelEntry(1, "b")], source="x")
    with pytest.raises(InvalidInputFileError, match="positive integer"):
        LabelDescription([LabelEntry(0, "background")])
    with pytest.raises(InvalidInputFileError, match="not found"):
        read_label_description(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text('{"labels": {}}')
    with pytest.raises(InvalidInputFileError, match="segmentAttributes"):
        read_label_description(other)
    with pytest.raises(InvalidInputFileError, match="unknown label description format"):
        read_label_description(shared_data / "dcmqi" / "segmentations" / "liver_seg.nrrd")  # a volume, not labels
    plain = tmp_path / "notes.txt"
    plain.write_text("these are my notes\n")
    with pytest.raises(InvalidInputFileError, match="unknown label description format"):
        read_label_description(plain)
    with pytest.raises(InvalidInputFileError, match="no embedded label table"):
        image = sitk.Image(2, 2, 2, sitk.sitkUInt8)
        sitk.WriteImage(image, str(tmp_path / "plain.nii.gz"))
        read_label_description(tmp_path / "plain.nii.gz")
    with pytest.raises(DicomFidelityError, match="64 characters"):
        dcmqi_json_from_description(LabelDescription([LabelEntry(1, "x" * 65)]))
    bad_algorithm = LabelDescription([LabelEntry(1, "a", algorithm_type=AlgorithmType.AUTOMATIC)])
    with pytest.raises(DicomFidelityError, match="SegmentAlgorithmName is required") as caught:
        dcmqi_json_from_description(bad_algorithm)
    assert caught.value.tag == "label 1"
    good = write_label_description(sample_description(), tmp_path / "keep.json")
    before = good.read_bytes()
    with pytest.raises(DicomFidelityError):
        write_label_description(bad_algorithm, good)  # a failed write leaves the previous file whole
    assert good.read_bytes() == before and [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_write_description_beside_a_two_layer_segmentation(tmp_path):
    geometry = VolumeGeometry((1, 1, 4), np.eye(4))
    layers = [np.array([[[1, 2, 0, 0]]], np.uint8), np.array([[[0, 1, 1, 0]]], np.uint8)]
    layered = LayeredSegmentation(geometry, layers, [
        Segment("liver", 0, 1, (0.2, 0.4, 0.6)), Segment("spleen", 0, 2), Segment("tumour", 1, 1, (1.0, 0.0, 0.0))])
    paths = write_description_beside(layered, tmp_path / "case.seg.nrrd")
    assert [p.name for p in paths] == ["case.dcmqi.json", "case.layer0.labels.csv", "case.layer1.labels.csv"]
    dcmqi = read_label_description(paths[0])
    assert [(e.layer, e.label_value, e.name) for e in dcmqi.entries] == [(0, 1, "liver"), (0, 2, "spleen"),
                                                                         (1, 1, "tumour")]
    blank = LayeredSegmentation(geometry, layers, [dataclasses.replace(s, name="x", color=(0.5, 0.5, 0.5))
                                                   for s in layered.segments])
    again, warnings = apply_label_description(blank, dcmqi)
    assert warnings == [] and [(s.name, s.color) for s in again.segments] == [
        (s.name, tuple(round(c * 255) / 255 for c in s.color)) for s in layered.segments]
    assert [e.name for e in read_label_description(paths[2]).entries] == ["tumour"]


def test_our_json_round_trip(tmp_path):
    original = sample_description()
    path = write_label_description(original, tmp_path / "d.labels.json")
    assert detect_label_format(path) is LabelFormat.OURS_JSON
    assert read_label_description(path) == original
    assert json.loads(json.dumps(original.to_json()))["labels"][1]["terminology"]["type_modifier"]["value"] == "7771000"


def test_write_description_beside_a_label_volume(totalseg_labels, tmp_path):
    layered, _ = label_segmentation(totalseg_labels, "totalsegmentator:total")
    paths = write_description_beside(layered, tmp_path / "seg.nii.gz")
    assert [p.name for p in paths] == ["seg.dcmqi.json", "seg.labels.csv"]
    for path in paths:
        again = read_label_description(path)
        assert [(e.label_value, e.name, e.terminology) for e in again.entries] == [
            (s.label_value, s.name, s.terminology) for s in layered.segments]
    # applying what was written gives the same segments back
    reapplied, warnings = label_segmentation(totalseg_labels, paths[0])
    assert warnings == [] and reapplied.segments == layered.segments


# ---- real Slicer (slicer-core wheel), when installed -----------------------------------------------------------

def test_slicer_reads_our_csv_and_we_read_what_slicer_writes(tmp_path):
    slicer = pytest.importorskip("slicer")
    original = load_model_map("totalsegmentator:total")
    ours = write_label_description(original, tmp_path / "ours.csv")
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLColorTableNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLColorTableStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(ours))
    assert storage.ReadData(node) == 1
    entry = original.find(3)
    assert node.GetColorName(3) == "kidney_left"
    assert node.GetTerminologyType(3).GetCodeValue() == "64033007"
    assert node.GetTerminologyTypeModifier(3).GetCodeValue() == "7771000"
    assert node.GetTerminologyCategory(23).GetCodeValue() == "49755003"
    assert node.GetTerminologyRegionModifier(23).GetCodeValue() == "7771000"
    rgba = [0.0] * 4
    node.GetColor(3, rgba)
    assert [round(c * 255) for c in rgba[:3]] == list(entry.color)
    for name in ("slicer.csv", "slicer.ctbl"):
        storage.SetFileName(str(tmp_path / name))
        assert storage.WriteData(node) == 1
    again = read_label_description(tmp_path / "slicer.csv")
    assert [(e.label_value, e.name, e.color, e.terminology) for e in again.entries] == [
        (e.label_value, e.name, e.color, e.terminology) for e in original.entries]
    sniffed = tmp_path / "slicer_table.txt"  # Slicer's quoted CSV under a name that says nothing
    sniffed.write_bytes((tmp_path / "slicer.csv").read_bytes())
    assert detect_label_format(sniffed) is LabelFormat.SLICER_CSV and read_label_description(sniffed) == again
    text_table = read_label_description(tmp_path / "slicer.ctbl")  # names only; '_' read back as ' ' like Slicer
    assert [(e.label_value, e.name.replace(" ", "_"), e.color) for e in text_table.entries] == [
        (e.label_value, e.name, e.color) for e in original.entries]
