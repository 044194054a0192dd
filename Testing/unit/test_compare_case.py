"""Multi-model review of one case: matching across models, consensus, outliers, and the report files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

from DicomFidelityCommonLib.errors import DicomFidelityError, GeometryError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.compare import (
    CONSENSUS,
    ComparisonOptions,
    ConsensusMethod,
    MatchMethod,
    OutlierReason,
    compare_masks,
    compare_segmentations,
    majority_vote,
    match_structures,
    staple,
    write_comparison_report,
)
from SegmentationQALib.compare.matching import normalise_name
from SegmentationQALib.compare.report import CSV_COLUMNS
from SegmentationQALib.segmentation import CodedTerm, LayeredSegmentation, Segment, SegmentTerminology

TS_LABELS = "totalsegmentator/reference_files/example_seg_fast_force_split.nii.gz"
ORGAN = CodedTerm("123037004", "SCT", "Anatomical Structure")
KIDNEY = CodedTerm("64033007", "SCT", "Kidney")
SPLEEN = CodedTerm("78961009", "SCT", "Spleen")
LEFT = CodedTerm("7771000", "SCT", "Left")
RIGHT = CodedTerm("24028007", "SCT", "Right")
TISSUE = CodedTerm("85756007", "SCT", "Tissue")


def geometry(shape=(20, 40, 60), spacing=(0.8, 0.8, 2.0)) -> VolumeGeometry:
    return VolumeGeometry.from_origin_spacing_direction(shape, (0, 0, 0), spacing, np.eye(3))


def box(shape, k, j, i) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[k, j, i] = True
    return mask


def kidney(side: CodedTerm) -> SegmentTerminology:
    return SegmentTerminology(ORGAN, KIDNEY, type_modifier=side)


def test_left_and_right_matched_by_code_across_different_label_numbering():
    """Model A: one layer, left=1 right=2, clear names. Model B: two layers, right=7 (layer 0), left=9 (layer 1), and
    misleading names: the codes decide, and left never pairs with right."""
    g = geometry()
    left_mask = box(g.shape, slice(5, 15), slice(5, 20), slice(5, 25))
    right_mask = box(g.shape, slice(5, 15), slice(5, 20), slice(35, 55))
    a = np.zeros(g.shape, np.uint8)
    a[left_mask], a[right_mask] = 1, 2
    model_a = LayeredSegmentation(g, [a], [Segment("kidney_left", 0, 1, terminology=kidney(LEFT)),
                                           Segment("kidney_right", 0, 2, terminology=kidney(RIGHT))])
    b0, b1 = np.zeros(g.shape, np.uint8), np.zeros(g.shape, np.uint16)
    b0[right_mask], b1[left_mask] = 7, 9
    model_b = LayeredSegmentation(g, [b0, b1], [Segment("Segment_1", 0, 7, terminology=kidney(RIGHT)),
                                                Segment("kidney_right", 1, 9, terminology=kidney(LEFT))])
    matching = match_structures([("A", model_a), ("B", model_b)])
    assert len(matching.structures) == 2 and matching.unmatched == {"A": [], "B": []}
    by_code = {s.code: s for s in matching.structures}
    assert by_code["SCT:64033007/SCT:7771000"].members == {"A": 0, "B": 1}
    assert by_code["SCT:64033007/SCT:24028007"].members == {"A": 1, "B": 0}
    assert all(s.method is MatchMethod.CODE for s in matching.structures)
    result = compare_segmentations([("A", model_a), ("B", model_b)])
    pairs = [r for r in result.rows if r.model_b == "B"]
    assert len(pairs) == 2 and all(r.metrics.dice == 1.0 and r.metrics.hd95_mm == 0.0 for r in pairs)
    assert not result.outliers


def test_laterality_in_the_anatomic_region_modifier_and_category_tie_break():
    g = geometry((4, 6, 8))
    layer = np.zeros(g.shape, np.uint8)
    layer[1:3, 1:3, 1:3], layer[1:3, 3:5, 5:7] = 1, 2
    region_left = SegmentTerminology(ORGAN, KIDNEY, anatomic_region=KIDNEY, anatomic_region_modifier=LEFT)
    other_category = SegmentTerminology(CodedTerm("49755003", "SCT", "Morphologically Altered Structure"), KIDNEY,
                                        type_modifier=LEFT)
    model = LayeredSegmentation(g, [layer], [Segment("x", 0, 1, terminology=region_left),
                                             Segment("y", 0, 2, terminology=other_category)])
    matching = match_structures([("A", model), ("B", model)])
    # both segments are 'left kidney' by concept; the category tells them apart, in both models alike
    assert sorted(tuple(s.members.values()) for s in matching.structures) == [(0, 0), (1, 1)]
    assert len({s.label for s in matching.structures}) == 2


def test_name_fallback_and_structures_one_model_lacks_are_reported():
    g = geometry((6, 8, 10))
    layer = np.zeros(g.shape, np.uint8)
    layer[1:3, 1:3, 1:3], layer[1:3, 4:6, 4:6], layer[4:6, 1:3, 6:9] = 1, 2, 3
    generic = SegmentTerminology(TISSUE, TISSUE)  # Slicer's 'not chosen' default: not a code to match on
    spleen_term = SegmentTerminology(ORGAN, SPLEEN)
    model_a = LayeredSegmentation(g, [layer], [Segment("Kidney_L", 0, 1, terminology=generic), Segment("liver", 0, 2),
                                               Segment("Spleen", 0, 3, terminology=spleen_term)])
    model_b = LayeredSegmentation(g, [layer], [Segment("left kidney", 0, 1), Segment("Leber", 0, 2)])
    model_c = LayeredSegmentation(g, [layer], [Segment("LEFT-KIDNEY", 0, 1), Segment("spleen", 0, 3)])
    matching = match_structures([("A", model_a), ("B", model_b), ("C", model_c)])
    kidney_left = next(s for s in matching.structures if s.members.get("B") == 0)
    # names without codes take the code the built-in label maps give them (left kidney: SCT 64033007 + Left)
    assert kidney_left.method is MatchMethod.CODE and kidney_left.members == {"A": 0, "B": 0, "C": 0}
    assert kidney_left.code == "SCT:64033007/SCT:7771000"
    spleen = next(s for s in matching.structures if "spleen" in s.label.lower())
    assert spleen.members == {"A": 2, "C": 1} and spleen.missing_in == ["B"]
    assert matching.unmatched == {"A": ["liver"], "B": ["Leber"], "C": []}
    assert normalise_name("Kidney_L") == normalise_name("left  kidney") != normalise_name("kidney right")
    result = compare_segmentations([("A", model_a), ("B", model_b), ("C", model_c)])
    document = result.to_json()
    assert document["matching"]["unmatched"]["B"] == ["Leber"]
    assert {"structure": spleen.label, "model_a": "A", "model_b": "C"}.items() <= next(
        r for r in document["rows"] if r["structure"] == spleen.label).items()


def sphere(shape, centre, radius_mm, spacing_kji) -> np.ndarray:
    k, j, i = np.indices(shape)
    return (((k - centre[0]) * spacing_kji[0]) ** 2 + ((j - centre[1]) * spacing_kji[1]) ** 2
            + ((i - centre[2]) * spacing_kji[2]) ** 2) <= radius_mm ** 2


def three_models_with_outlier(g: VolumeGeometry):
    spacing_kji = tuple(g.spacing[::-1])
    organ = SegmentTerminology(ORGAN, SPLEEN)
    models = []
    for name, centre, radius in (("good1", (10, 20, 30), 10.0), ("good2", (10, 20, 31), 10.5),
                                 ("outlier", (10, 20, 45), 10.0)):
        layer = np.zeros(g.shape, np.uint8)
        layer[sphere(g.shape, centre, radius, spacing_kji)] = 5
        models.append((name, LayeredSegmentation(g, [layer], [Segment("spleen", 0, 5, terminology=organ)])))
    return models


@pytest.mark.parametrize("method", list(ConsensusMethod))
def test_consensus_of_three_models_flags_the_planted_outlier(method):
    g = geometry()
    models = three_models_with_outlier(g)
    progress = []
    result = compare_segmentations(models, ComparisonOptions(consensus=method),
                                   progress=lambda f, m: progress.append(f))
    assert [o.model for o in result.outliers] == ["outlier"]
    assert OutlierReason.LOW_DICE in result.outliers[0].reasons
    assert OutlierReason.BELOW_PEERS in result.outliers[0].reasons
    dice = result.dice_vs_consensus()["Spleen"]
    assert dice["good1"] > 0.9 and dice["good2"] > 0.9 and dice["outlier"] < 0.5
    assert len([r for r in result.rows if r.model_b != CONSENSUS]) == 3  # every pair
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress)
    consensus = result.consensus
    assert consensus.geometry.is_close(g) and [s.name for s in consensus.segments] == ["spleen"]
    masks = [seg.mask(0) for _, seg in models]
    if method is ConsensusMethod.MAJORITY:
        assert np.array_equal(consensus.mask(0), (sum(m.astype(int) for m in masks) >= 2))
    else:
        good = masks[0] & masks[1]
        assert consensus.mask(0)[good].all()  # where the two good models agree, STAPLE does too
    json.dumps(result.to_json(), allow_nan=False)


def test_majority_vote_and_staple_on_simple_inputs():
    a = np.zeros((3, 4, 5), bool)
    a[1, 1:3, 1:4] = True
    b, c = a.copy(), a.copy()
    c[1, 3, 4] = True
    assert np.array_equal(majority_vote([a, b, c]), a)
    assert majority_vote([a, c]).sum() == a.sum() and majority_vote([a, c], tie_is_foreground=True).sum() == a.sum() + 1
    result = staple([a, a, a])
    assert np.array_equal(result.mask, a) and len(result.sensitivity) == 3
    with pytest.raises(DicomFidelityError):
        majority_vote([])


def test_consensus_layers_keep_overlapping_structures_apart():
    """Consensus structures may overlap (each is voted on alone): they go to separate layers, none is lost."""
    g = geometry((6, 10, 10))
    layer0 = np.zeros(g.shape, np.uint8)
    layer1 = np.zeros(g.shape, np.uint8)
    layer0[1:5, 1:6, 1:6] = 1
    layer1[2:5, 3:9, 3:9] = 1
    seg = LayeredSegmentation(g, [layer0, layer1], [Segment("a", 0, 1), Segment("b", 1, 1)])
    result = compare_segmentations([("m1", seg), ("m2", seg)])
    consensus = result.consensus
    assert len(consensus.layers) == 2 and consensus.has_overlap()
    assert np.array_equal(consensus.mask(0), seg.mask(0)) and np.array_equal(consensus.mask(1), seg.mask(1))


def test_inputs_are_checked():
    g = geometry((4, 4, 4))
    seg = LayeredSegmentation(g, [np.zeros(g.shape, np.uint8)], [])
    other = LayeredSegmentation(geometry((4, 4, 5)), [np.zeros((4, 4, 5), np.uint8)], [])
    with pytest.raises(GeometryError):
        compare_segmentations([("a", seg), ("b", other)])
    with pytest.raises(DicomFidelityError):
        compare_segmentations([("a", seg)])
    with pytest.raises(DicomFidelityError):
        compare_segmentations([("a", seg), ("a", seg)])


@pytest.fixture(scope="module")
def totalsegmentator_models(shared_data):
    """Three synthetic 'models' of the real TotalSegmentator labels (61 structures, 122x101x112 at 3 mm), built at
    test time: as is; every label dilated by one voxel into the background; shifted 2 voxels (6 mm) along the
    columns with the first five structures removed and the labels renumbered (+100). Codes are synthetic, one per
    TotalSegmentator label."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(shared_data / TS_LABELS))
    g = VolumeGeometry.from_sitk(image)
    labels = sitk.GetArrayFromImage(image)
    values = [int(v) for v in np.unique(labels) if v]

    def model(layer, kept, offset=0):
        segments = [Segment(f"ts_{v}", 0, v + offset, terminology=SegmentTerminology(
            ORGAN, CodedTerm(f"TS{v}", "99TEST", f"structure {v:03d}"))) for v in kept]
        return LayeredSegmentation(g, [layer], segments)

    dilated = np.where(labels > 0, labels, ndimage.grey_dilation(labels, size=(3, 3, 3)))
    shifted = np.roll(labels, 2, axis=2).astype(np.uint16)
    removed = values[:5]
    shifted[np.isin(shifted, removed)] = 0
    shifted[shifted > 0] += 100
    return g, labels, values, removed, [("as_is", model(labels, values)), ("dilated", model(dilated, values)),
                                        ("shifted", model(shifted, values[5:], offset=100))]


def test_totalsegmentator_case_and_report(totalsegmentator_models, tmp_path):
    g, labels, values, removed, models = totalsegmentator_models
    result = compare_segmentations(models, ComparisonOptions(consensus=ConsensusMethod.MAJORITY))
    assert len(result.matching.structures) == 61
    missing = {s.label for s in result.matching.structures if s.missing_in == ["shifted"]}
    assert missing == {f"structure {v:03d}" for v in removed}
    assert all(not names for names in result.matching.unmatched.values())
    flagged = {(o.structure, o.model) for o in result.outliers}
    assert not any(model == "as_is" for _, model in flagged)
    assert sum(model == "shifted" for _, model in flagged) > sum(model == "dilated" for _, model in flagged)
    # the per-structure boxes give the full-grid values
    row = next(r for r in result.rows if r.model_a == "as_is" and r.model_b == "dilated")
    value = int(row.code.split(":")[1][2:])
    segment_index = values.index(value)
    full = compare_masks(labels == value, models[1][1].mask(segment_index), g)
    assert row.metrics.to_json() == pytest.approx(full.to_json())
    assert len(result.consensus.segments) == 61

    files = write_comparison_report(result, tmp_path / "review", max_images=3)
    for path in (files.csv, files.json, files.html, files.heatmap):
        assert path.is_file() and path.stat().st_size > 0
    assert len(files.structure_images) == 3 and all(p.is_file() for p in files.structure_images.values())
    with open(files.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"structure", "code", "model_a", "model_b", "dice", "hd95_mm", "msd_mm", "surface_dice", "volume_a_ml",
            "volume_b_ml"} <= set(rows[0]) and list(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(result.rows)
    assert json.loads(files.json.read_text())["models"] == ["as_is", "dilated", "shifted"]
    page = files.html.read_text()
    assert "dice_heatmap.png" in page and all(p.name in page for p in files.structure_images.values())
    worst = result.structures_worst_first()
    assert page.index(worst[0]) < page.index(worst[-1])
    with pytest.raises(FileExistsError):  # never mixes with an older report
        write_comparison_report(result, tmp_path / "review")
