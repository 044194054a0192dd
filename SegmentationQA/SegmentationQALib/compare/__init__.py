"""Multi-model review: per-structure agreement between segmentations of one image (pure Python core).

``compare_segmentations`` matches structures across models (``matching``), builds a consensus (``consensus``),
measures every pair with surface-distance definitions (``metrics``) and flags outliers; ``write_comparison_report``
writes the CSV, JSON and HTML review.
"""

from SegmentationQALib.compare.case import (
    CONSENSUS,
    ComparisonOptions,
    ComparisonResult,
    MetricRow,
    Outlier,
    OutlierReason,
    compare_segmentations,
)
from SegmentationQALib.compare.consensus import ConsensusMethod, majority_vote, staple
from SegmentationQALib.compare.matching import MatchedStructure, MatchingResult, MatchMethod, match_structures
from SegmentationQALib.compare.metrics import PairMetrics, PairStatus, compare_masks
from SegmentationQALib.compare.report import ReportFiles, write_comparison_report

__all__ = [
    "CONSENSUS", "ComparisonOptions", "ComparisonResult", "ConsensusMethod", "MatchMethod", "MatchedStructure",
    "MatchingResult", "MetricRow", "Outlier", "OutlierReason", "PairMetrics", "PairStatus", "ReportFiles",
    "compare_masks", "compare_segmentations", "majority_vote", "match_structures", "staple",
    "write_comparison_report",
]
