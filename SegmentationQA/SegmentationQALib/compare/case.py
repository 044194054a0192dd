"""One case, several models: match structures, build a consensus, measure every pair and every model against the
consensus, and flag the models that disagree with it."""

from __future__ import annotations

import enum
import itertools
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from DicomFidelityCommonLib.errors import DicomFidelityError, GeometryError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from SegmentationQALib.compare.consensus import (
    ConsensusMethod,
    ConsensusStructure,
    consensus_mask,
    pack_layers,
    segment_boxes,
)
from SegmentationQALib.compare.matching import MatchedStructure, MatchingResult, match_structures
from SegmentationQALib.compare.metrics import (
    DEFAULT_PERCENTILE,
    DEFAULT_TOLERANCE_MM,
    Box,
    PairMetrics,
    pair_metrics,
    prepare_mask,
    union_box,
)
from SegmentationQALib.segmentation import LayeredSegmentation

CONSENSUS = "consensus"
MAX_THREADS = 4  # structures measured at once (no more than the machine's cores) ...
THREADS_MIN_VOXELS = 1 << 24  # ... on grids this large (512 x 512 x 64); smaller ones one at a time


class OutlierReason(enum.Enum):
    LOW_DICE = "low_dice"  # Dice vs consensus below options.outlier_min_dice
    BELOW_PEERS = "below_peers"  # more than options.outlier_drop below the other models' median
    EMPTY = "empty"  # the model has the segment but no voxel in it while the consensus has some


@dataclass
class ComparisonOptions:
    tolerance_mm: float = DEFAULT_TOLERANCE_MM  # surface Dice tolerance
    percentile: float = DEFAULT_PERCENTILE  # robust Hausdorff percentile
    consensus: ConsensusMethod = ConsensusMethod.MAJORITY
    pairwise: bool = True  # every model pair too, not only model vs consensus
    min_voters: int = 2  # models that must have a structure for it to get a consensus
    outlier_min_dice: float = 0.7
    outlier_drop: float = 0.15

    def to_json(self) -> dict:
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in self.__dict__.items()}


@dataclass
class MetricRow:
    """Metrics of one structure between two models (``model_b`` may be the consensus)."""

    structure: str
    code: str
    model_a: str
    model_b: str
    metrics: PairMetrics

    def to_json(self) -> dict:
        return {"structure": self.structure, "code": self.code, "model_a": self.model_a, "model_b": self.model_b,
                **self.metrics.to_json()}


@dataclass
class Outlier:
    structure: str
    code: str
    model: str
    dice: float
    median_other_dice: float | None
    reasons: list[OutlierReason]

    def to_json(self) -> dict:
        return {"structure": self.structure, "code": self.code, "model": self.model, "dice": self.dice,
                "median_other_dice": self.median_other_dice, "reasons": [r.value for r in self.reasons]}


@dataclass
class ComparisonResult:
    models: list[str]
    options: ComparisonOptions
    geometry: VolumeGeometry
    matching: MatchingResult
    rows: list[MetricRow]
    outliers: list[Outlier]
    consensus: LayeredSegmentation | None = field(default=None, repr=False)
    consensus_segments: dict[str, int] = field(default_factory=dict)  # structure key -> consensus segment index
    no_consensus: list[str] = field(default_factory=list)  # structures with too few voters
    seconds: float = 0.0
    segmentations: list[tuple[str, LayeredSegmentation]] = field(default_factory=list, repr=False)
    model_boxes: dict[str, list[Box | None]] = field(default_factory=dict, repr=False)  # model -> per segment

    def boxes_by_model(self) -> dict[str, list[Box | None]]:
        """Every model's segment boxes: found while comparing, found again only for a result built without them."""
        if not self.model_boxes:
            self.model_boxes = {name: segment_boxes(seg) for name, seg in self.segmentations}
        return self.model_boxes

    def dice_vs_consensus(self) -> dict[str, dict[str, float]]:
        """structure label -> model -> Dice with the consensus."""
        table: dict[str, dict[str, float]] = {}
        for row in self.rows:
            if row.model_b == CONSENSUS:
                table.setdefault(row.structure, {})[row.model_a] = row.metrics.dice
        return table

    def structures_worst_first(self) -> list[str]:
        table = self.dice_vs_consensus()
        return sorted(table, key=lambda s: (statistics.mean(table[s].values()), s))

    def to_json(self) -> dict:
        return {"models": list(self.models), "options": self.options.to_json(), "geometry": self.geometry.to_json(),
                "matching": self.matching.to_json(), "rows": [r.to_json() for r in self.rows],
                "outliers": [o.to_json() for o in self.outliers], "no_consensus": list(self.no_consensus),
                "consensus_segments": dict(self.consensus_segments), "seconds": self.seconds}


@dataclass
class _Measured:
    """One structure's rows, and its consensus mask (None: too few voters) with the vote per model."""

    box: Box | None
    rows: list[MetricRow] = field(default_factory=list)
    consensus: np.ndarray | None = None
    vs_consensus: dict[str, PairMetrics] = field(default_factory=dict)


def structure_masks(structure: MatchedStructure, models: dict[str, LayeredSegmentation],
                    boxes: dict[str, list[Box | None]]) -> tuple[Box | None, dict[str, np.ndarray]]:
    """Every member's mask of one structure, cropped to the union box of the members."""
    box = union_box(*(boxes[m][i] for m, i in structure.members.items()))
    if box is None:
        return None, {}
    crops = {}
    for model, index in structure.members.items():
        segment = models[model].segments[index]
        crops[model] = models[model].layers[segment.layer][box] == segment.label_value
    return box, crops


def compare_segmentations(models: Sequence[tuple[str, LayeredSegmentation]], options: ComparisonOptions | None = None,
                          progress: ProgressCallback | None = None) -> ComparisonResult:
    """Compare segmentations of one image by several models (all on one grid; resample them first otherwise)."""
    options = options or ComparisonOptions()
    progress = progress or no_progress
    start = time.perf_counter()
    names = [name for name, _ in models]
    if len(models) < 2:
        raise DicomFidelityError(f"comparing needs at least two segmentations, got {len(models)}")
    if len(set(names)) != len(names) or CONSENSUS in names:
        raise DicomFidelityError(f"model names must be unique and not {CONSENSUS!r}: {names}")
    geometry = models[0][1].geometry
    for name, seg in models[1:]:
        if not seg.geometry.is_close(geometry):
            raise GeometryError(f"model {name!r} is on another grid than {names[0]!r}: resample it to the reference "
                                f"grid first ({seg.geometry.shape} vs {geometry.shape})")
    by_name = dict(models)
    progress(0.0, "matching structures")
    matching = match_structures(models)
    rows: list[MetricRow] = []
    outliers: list[Outlier] = []
    consensus_structures: list[ConsensusStructure] = []
    consensus_segments: dict[str, int] = {}
    no_consensus: list[str] = []
    metric_args = dict(geometry=geometry, tolerance_mm=options.tolerance_mm, percentile=options.percentile)
    spacing_kji = tuple(float(s) for s in geometry.spacing[::-1])

    def measure(structure: MatchedStructure) -> _Measured:
        """Every row of one structure (and its consensus): independent of the others, so structures run in threads
        (NumPy releases the GIL in the heavy steps) and are collected in order: the same result as one by one."""
        box, crops = structure_masks(structure, by_name, boxes)
        offset = [s.start for s in box] if box is not None else [0, 0, 0]
        if box is None:  # every member empty: record the agreement, nothing to measure
            empty = np.zeros((0, 0, 0), bool)
            crops = {m: empty for m in structure.members}
        members = list(crops)
        # each mask's count, centroid and surface once, in the structure's box, however many pairs it is in
        prepared = {m: prepare_mask(crops[m], spacing_kji) for m in members}
        measured = _Measured(box)
        if options.pairwise:
            for model_a, model_b in itertools.combinations(members, 2):
                metrics = pair_metrics(crops[model_a], crops[model_b], prepared[model_a], prepared[model_b],
                                       offset_kji=offset, **metric_args)
                measured.rows.append(MetricRow(structure.label, structure.code, model_a, model_b, metrics))
        if len(members) < options.min_voters or box is None:
            return measured
        measured.consensus = consensus_mask([crops[m] for m in members], options.consensus)
        prepared_consensus = prepare_mask(measured.consensus, spacing_kji)
        for model in members:
            metrics = pair_metrics(crops[model], measured.consensus, prepared[model], prepared_consensus,
                                   offset_kji=offset, **metric_args)
            measured.rows.append(MetricRow(structure.label, structure.code, model, CONSENSUS, metrics))
            measured.vs_consensus[model] = metrics
        return measured

    total = max(len(matching.structures), 1)
    large = int(np.prod(geometry.shape)) >= THREADS_MIN_VOXELS  # small grids: Python overhead, the GIL held
    workers = max(1, min(MAX_THREADS, os.cpu_count() or 1)) if large else 1
    with ThreadPoolExecutor(workers) as pool:
        boxes = dict(zip(names, pool.map(segment_boxes, [seg for _, seg in models])))  # find_objects drops the GIL
        for number, (structure, measured) in enumerate(zip(matching.structures,
                                                           pool.map(measure, matching.structures))):
            progress(0.05 + 0.95 * number / total, f"compared {structure.label}")
            rows.extend(measured.rows)
            if measured.consensus is None:
                no_consensus.append(structure.label)
                continue
            outliers.extend(_flag(structure, measured.vs_consensus, options))
            if measured.consensus.any():
                first_model, first_index = next(iter(structure.members.items()))
                consensus_segments[structure.key] = len(consensus_structures)
                consensus_structures.append(ConsensusStructure(by_name[first_model].segments[first_index],
                                                               measured.box, measured.consensus))
    progress(0.98, "building the consensus segmentation")
    consensus_seg = pack_layers(geometry, consensus_structures)
    progress(1.0, "done")
    return ComparisonResult(names, options, geometry, matching, rows, outliers, consensus_seg, consensus_segments,
                            no_consensus, time.perf_counter() - start, list(models), boxes)


def _flag(structure: MatchedStructure, vs_consensus: dict[str, PairMetrics],
          options: ComparisonOptions) -> list[Outlier]:
    result = []
    for model, metrics in vs_consensus.items():
        others = [m.dice for name, m in vs_consensus.items() if name != model]
        median = statistics.median(others) if others else None
        reasons = []
        if metrics.volume_a_ml == 0 and metrics.volume_b_ml > 0:
            reasons.append(OutlierReason.EMPTY)
        if metrics.dice < options.outlier_min_dice:
            reasons.append(OutlierReason.LOW_DICE)
        if median is not None and len(others) >= 2 and median - metrics.dice > options.outlier_drop:
            reasons.append(OutlierReason.BELOW_PEERS)
        if reasons:
            result.append(Outlier(structure.label, structure.code, model, metrics.dice, median, reasons))
    return result
