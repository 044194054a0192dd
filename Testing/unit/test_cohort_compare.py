"""`dicomfidelity run compare-seg` on a generated 10-case, 3-model cohort (CT series and DICOM SEGs written at test
time): the cohort table, the per-structure distributions and a ranked outlier list holding the planted outliers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from CohortsLib import cli as cohort_cli
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.reference_series import PatientStudyInfo, write_reference_series
from SegmentationQALib.seg import SegExportOptions, write_seg
from SegmentationQALib.segmentation import CodedTerm, LayeredSegmentation, Segment, SegmentTerminology
from validators import assert_dciodvfy_clean

ORGAN = CodedTerm("123037004", "SCT", "Anatomical Structure")
LIVER = SegmentTerminology(ORGAN, CodedTerm("10200004", "SCT", "Liver"))
KIDNEY = CodedTerm("64033007", "SCT", "Kidney")
LEFT, RIGHT = CodedTerm("7771000", "SCT", "Left"), CodedTerm("24028007", "SCT", "Right")
STRUCTURES = [("liver", LIVER, (10, 12, 12), 7.0), ("kidney left", SegmentTerminology(ORGAN, KIDNEY, LEFT),
                                                    (10, 12, 26), 4.0),
              ("kidney right", SegmentTerminology(ORGAN, KIDNEY, RIGHT), (10, 26, 26), 4.0)]
PLANTED = {("case3", "liver", "modelC"): "shifted", ("case6", "kidney left", "modelB"): "grown"}


def _ball(shape, centre, radius):
    k, j, i = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 <= radius ** 2


def _write_case(root, number: int, rng) -> None:
    geometry = VolumeGeometry.from_origin_spacing_direction((20, 40, 40), (-50, -60, 10 * number), (1.5, 1.5, 2.0),
                                                            np.eye(3))
    ct = rng.normal(0, 20, geometry.shape).astype(np.int16)
    series = write_reference_series(ct, geometry, root / f"case{number}" / "ct",
                                    info=PatientStudyInfo(patient_id=f"case{number}"))
    for model in ("modelA", "modelB", "modelC"):
        layer = np.zeros(geometry.shape, np.uint8)
        segments = []
        for value, (name, terminology, centre, radius) in enumerate(STRUCTURES, start=1):
            centre = np.asarray(centre)
            radius = radius * (1 + rng.uniform(-0.08, 0.08))  # models differ a little everywhere
            planted = PLANTED.get((f"case{number}", name, model))
            if planted == "shifted":
                centre = centre + np.array([0, 9, 0])
            if planted == "grown":
                radius = radius * 1.8
            layer[_ball(geometry.shape, centre, radius) & (layer == 0)] = value
            segments.append(Segment(name, 0, value, terminology=terminology, algorithm_type="AUTOMATIC",
                                    algorithm_name=model))
        layered = LayeredSegmentation(geometry, [layer], segments)
        options = SegExportOptions(series_description=model)
        write_seg(layered, series, root / f"case{number}" / f"{model}.seg.dcm", options)


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort_compare")
    rng = np.random.default_rng(7)
    for number in range(10):
        _write_case(root / "tree", number, rng)
    db, out = root / "cohort.sqlite", root / "out"
    assert cohort_cli.main(["index", str(root / "tree"), "--db", str(db), "--quiet"]) == 0
    assert cohort_cli.main(["run", "compare-seg", "--db", str(db), "--output-dir", str(out), "--workers", "2",
                            "--json", str(root / "run.json"), "--quiet"]) == 0
    return out, json.loads((root / "run.json").read_text())


def test_every_case_compared_and_the_cohort_table_written(review):
    out, document = review
    with open(out / "manifest.csv", newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["ok"] * 10
    with open(out / "cohort_metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 * 3 * 3  # case x structure x model, each against its case's consensus
    assert {row["model"] for row in rows} == {"modelA", "modelB", "modelC"}
    assert (out / "cohort_dice_boxplot.png").stat().st_size > 1000
    assert (out / "cohort_review.html").is_file() and document["outputs"]["cohort_html"]
    consensus = sorted(out.glob("case0-*/consensus.seg.dcm"))
    assert consensus, "each case's consensus is written as a DICOM SEG"
    import pydicom

    seg = pydicom.dcmread(consensus[0])
    items = [i for i in seg.SegmentSequence if int(i.SegmentNumber) > 0]
    assert len(items) == 3 and {str(i.SegmentAlgorithmType) for i in items} == {"AUTOMATIC"}
    assert {str(i.SegmentAlgorithmName) for i in items} == {"consensus of modelA, modelB, modelC"}
    assert_dciodvfy_clean(consensus[0])


def test_the_planted_outliers_lead_the_ranked_list(review):
    out, _ = review
    with open(out / "cohort_outliers.csv", newline="") as handle:
        outliers = list(csv.DictReader(handle))
    found = {(o["case"].split("-")[0], o["structure"].lower(), o["model"]): o for o in outliers}
    for key, kind in PLANTED.items():
        assert key in found, (key, [tuple(k) for k in found])
        reasons = found[key]["reasons"]
        assert ("volume_far_from_cohort" in reasons) if kind == "grown" else ("low_dice" in reasons or
                                                                             "below_peers" in reasons)
    first_two = {(o["case"].split("-")[0], o["structure"].lower(), o["model"]) for o in outliers[:2]}
    assert ("case3", "liver", "modelC") in first_two  # the lowest Dice comes first


def test_a_cases_rtstruct_is_compared_with_its_segs(tmp_path):
    """Clinical contours (an RTSTRUCT, its series description naming the model) are a model beside the SEGs: read on
    the CT planes, in the cohort table, and flagged where they disagree; --no-rtstruct compares the SEGs only."""
    import pydicom

    from DicomFidelityCommonLib.dicom.series import read_image_series
    from SegmentationQALib.rtstruct.write import RtStructExportOptions, write_rtstruct
    from SegmentationQALib.seg import load_seg

    rng = np.random.default_rng(11)
    for number in range(2):
        case = tmp_path / "tree" / f"case{number}"
        _write_case(tmp_path / "tree", number, rng)
        (case / "modelC.seg.dcm").unlink()
        layered = load_seg(case / "modelA.seg.dcm").layered
        if number == 1:  # the clinical liver 9 voxels away from the models'
            layered.layers[0] = np.where(layered.layers[0] == 1, 0, layered.layers[0])
            layered.layers[0][_ball(layered.geometry.shape, (10, 21, 12), 7.0) & (layered.layers[0] == 0)] = 1
        write_rtstruct(layered, read_image_series(case / "ct"), case / "clinical.dcm",
                       RtStructExportOptions(series_description="Clinical"))
        assert pydicom.dcmread(case / "clinical.dcm").Modality == "RTSTRUCT"
    db = tmp_path / "cohort.sqlite"
    assert cohort_cli.main(["index", str(tmp_path / "tree"), "--db", str(db), "--quiet"]) == 0
    for out, extra, models in ((tmp_path / "with", [], {"modelA", "modelB", "Clinical"}),
                               (tmp_path / "without", ["--no-rtstruct"], {"modelA", "modelB"})):
        assert cohort_cli.main(["run", "compare-seg", "--db", str(db), "--output-dir", str(out), "--workers", "1",
                                "--quiet", *extra]) == 0
        with open(out / "manifest.csv", newline="") as handle:
            assert [row["status"] for row in csv.DictReader(handle)] == ["ok", "ok"]
        with open(out / "cohort_metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert {row["model"] for row in rows} == models and len(rows) == 2 * 3 * len(models)
    from CohortsLib.logic import run_task  # what the panel calls, with no options set: the same cases are done

    assert run_task(db, "compare-seg", tmp_path / "with", None, workers=1)[0].counts["ran"] == 0
    with open(tmp_path / "with" / "cohort_outliers.csv", newline="") as handle:
        outliers = {(o["case"].split("-")[0], o["structure"].lower(), o["model"]) for o in csv.DictReader(handle)}
    assert ("case1", "liver", "Clinical") in outliers and ("case0", "liver", "Clinical") not in outliers
    consensus = sorted((tmp_path / "with").glob("case1-*/consensus.seg.dcm"))
    assert len(consensus) == 1
    algorithms = {str(i.SegmentAlgorithmName) for i in pydicom.dcmread(consensus[0]).SegmentSequence}
    assert algorithms == {"consensus of modelA, modelB, Clinical"}
    assert_dciodvfy_clean(consensus[0])
