"""`segqa compare`: several models' segmentations of one CT, compared per structure (registered by cli.py).

    segqa compare --reference CT --segmentation A.nii.gz --labels totalsegmentator:total --name ts
                  --segmentation B.seg.nrrd --name moose [--segmentation ...] --output-dir OUT
                  [--consensus majority|staple] [--tolerance-mm 2] [--json R.json]

``--labels`` and ``--name`` belong to the ``--segmentation`` before them. An RTSTRUCT is read onto the planes of
the reference CT, which must then be DICOM (as for `segqa load-rtstruct`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from DicomFidelityCommonLib.cli import CommandResult, ProgressBar, add_common_arguments
from DicomFidelityCommonLib.errors import DicomFidelityError, ReferenceNotDicomError, WrongModalityError
from SegmentationQALib.compare import ComparisonOptions, ConsensusMethod
from SegmentationQALib.rtstruct.dataset import is_rtstruct_file


class _ModelOption(argparse.Action):
    """--segmentation starts a model; --labels and --name describe the last one started."""

    def __call__(self, parser, namespace, values, option_string=None):
        models = getattr(namespace, "models", None) or []
        if option_string == "--segmentation":
            models.append({"path": values, "labels": None, "name": None})
        elif not models:
            parser.error(f"{option_string} must follow the --segmentation it describes")
        else:
            models[-1][option_string.lstrip("-")] = values
        namespace.models = models


def commandCompare(args) -> CommandResult:
    start = time.perf_counter()
    models = args.models or []
    if len(models) < 2:
        raise DicomFidelityError("compare needs at least two --segmentation", models[0]["path"] if models else None)
    logic = args.make_logic()
    warnings: list[str] = []
    names = [m["name"] or Path(m["path"]).name.split(".")[0] for m in models]
    volumeNode, folder = args.load_reference(logic, args.reference)
    nodes = [_loadModel(logic, model, name, folder, warnings) for model, name in zip(models, names)]
    options = ComparisonOptions(tolerance_mm=args.tolerance_mm, consensus=ConsensusMethod(args.consensus))
    result, report, resampled = logic.compareSegmentations(nodes, volumeNode, folder, names, options,
                                                           args.output_dir, args.export_consensus,
                                                           ProgressBar(not args.quiet))
    timings = {"compare": result.seconds, "in_process_total": time.perf_counter() - start}
    outliers = ", ".join(f"{o.model}/{o.structure}" for o in result.outliers[:5])
    return CommandResult(
        f"compared {len(names)} models on {len({r.structure for r in result.rows})} structures; "
        f"{len(result.outliers)} outlier(s){': ' + outliers if outliers else ''}; review in {args.output_dir}",
        {"metrics_csv": str(report.csv), "report": str(report.html), "json": str(report.json),
         **({"consensus_seg": str(Path(args.output_dir) / "consensus.seg.dcm")} if args.export_consensus else {})},
        warnings + resampled, timings, result.to_json())


def _loadModel(logic, model: dict, name: str, referenceFolder, warnings: list[str]):
    """A model's segmentation node: an RTSTRUCT rasterised on the DICOM reference's planes, anything else read as
    `loadSegmentationFile` reads it."""
    path = model["path"]
    if not is_rtstruct_file(path):
        return logic.loadSegmentationFile(path, name=name, labels=model["labels"], warnings=warnings)
    if model["labels"] is not None:
        raise WrongModalityError("--labels describes the values of a label volume; an RTSTRUCT names its own ROIs",
                                 path)
    if referenceFolder is None:
        raise ReferenceNotDicomError("an RTSTRUCT is read onto the planes of its CT: give --reference as the CT's "
                                     "DICOM folder", path)
    node, loaded = logic.rtstruct.load(path, referenceFolder, name=name)
    warnings.extend(f"{path}: {warning}" for warning in loaded.warnings)
    return node


def add_compare_command(subparsers, makeLogic, loadReference) -> None:
    compare = subparsers.add_parser("compare", help="agreement per structure between several models' segmentations")
    compare.add_argument("--reference", required=True, help="DICOM folder of the CT, or a volume file")
    compare.add_argument("--segmentation", action=_ModelOption, required=True,
                         help="a model's segmentation (.seg.nrrd, label .nii.gz/.nrrd, DICOM SEG, RTSTRUCT); "
                              "repeat per model")
    compare.add_argument("--labels", action=_ModelOption, help="label description of the --segmentation before it")
    compare.add_argument("--name", action=_ModelOption, help="model name of the --segmentation before it")
    compare.add_argument("--output-dir", required=True, help="new folder: metrics.csv, comparison.json, report.html")
    compare.add_argument("--consensus", choices=[m.value for m in ConsensusMethod], default="majority")
    compare.add_argument("--export-consensus", action="store_true",
                         help="also write the consensus as DICOM SEG (OUT/consensus.seg.dcm; needs a DICOM CT)")
    compare.add_argument("--tolerance-mm", type=float, default=ComparisonOptions().tolerance_mm,
                         help="surface Dice tolerance")
    add_common_arguments(compare)
    compare.set_defaults(func=commandCompare, make_logic=makeLogic, load_reference=loadReference, models=None)
