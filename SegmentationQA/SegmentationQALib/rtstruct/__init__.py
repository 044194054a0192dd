"""RTSTRUCT: what an export would keep (fidelity), the export itself, reading, and checking existing files.

One contouring path: ``fidelity.contour_segmentation`` makes the polygons the fidelity check predicts from and the
writer writes. Modules: ``dataset`` (the RTSTRUCT dataset and the planes contours go on), ``contours`` (marching
squares, even-odd and union rasterisation, keyholes), ``fidelity``, ``write``, ``read``, ``check``, ``report``.
"""

from SegmentationQALib.rtstruct.check import IssueKind, RtStructCheckResult, RtStructIssue, Severity, check_rtstruct
from SegmentationQALib.rtstruct.contours import HoleEncoding
from SegmentationQALib.rtstruct.dataset import ReferenceImages, load_reference, read_rtstruct_dataset
from SegmentationQALib.rtstruct.fidelity import (
    FidelityGateError,
    FidelityResult,
    FidelityThresholds,
    Verdict,
    check_rtstruct_fidelity,
    gate,
)
from SegmentationQALib.rtstruct.read import RtStructLoadResult, RtStructRoi, read_rtstruct
from SegmentationQALib.rtstruct.report import write_fidelity_report
from SegmentationQALib.rtstruct.write import RtStructExportOptions, RtStructExportResult, write_rtstruct

__all__ = [
    "FidelityGateError", "FidelityResult", "FidelityThresholds", "HoleEncoding", "IssueKind", "ReferenceImages",
    "RtStructCheckResult", "RtStructExportOptions", "RtStructExportResult", "RtStructIssue", "RtStructLoadResult",
    "RtStructRoi", "Severity",
    "Verdict", "check_rtstruct", "check_rtstruct_fidelity", "gate", "load_reference", "read_rtstruct",
    "read_rtstruct_dataset", "write_fidelity_report", "write_rtstruct",
]
