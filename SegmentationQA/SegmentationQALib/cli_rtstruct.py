"""`segqa rtstruct-check | export-rtstruct | load-rtstruct`: the RTSTRUCT commands, registered by cli.py.

Contract: DicomFidelityCommonLib.cli's; ``--fail-on`` makes a segment that bad a refusal (exit 1, after the report).
"""

from __future__ import annotations

import time
from pathlib import Path

from DicomFidelityCommonLib.cli import CommandResult, ProgressBar, add_common_arguments
from SegmentationQALib.cli_reference import add_reference_series_arguments, export_outputs, patient_info
from SegmentationQALib.reference_series import ReferenceModality
from SegmentationQALib.rtstruct import (
    FidelityGateError,
    FidelityThresholds,
    HoleEncoding,
    RtStructExportOptions,
    Verdict,
)


def _thresholds(args) -> FidelityThresholds:
    defaults = FidelityThresholds()
    return FidelityThresholds(
        lossy_volume_change_percent=args.lossy_volume_change if args.lossy_volume_change is not None
        else defaults.lossy_volume_change_percent,
        lossy_dice=args.lossy_dice if args.lossy_dice is not None else defaults.lossy_dice,
    )


def _summary(result) -> str:
    counts = result.to_json()["counts"]
    return ", ".join(f"{counts[v.value]} {v.value}" for v in Verdict)


def _loadInputs(args):
    """A logic on a fresh scene, the segmentation node and the reference (volume node or DICOM folder)."""
    logic = args.make_logic()
    node = logic.loadSegmentationFile(args.segmentation)
    volumeNode, folder = args.load_reference(logic, args.reference)
    return logic, node, volumeNode, folder


def commandRtStructCheck(args) -> CommandResult:
    start = time.perf_counter()
    logic, node, volumeNode, folder = _loadInputs(args)
    loadTime = time.perf_counter() - start
    result = logic.rtstruct.checkFidelity(node, volumeNode, folder, _thresholds(args), args.report,
                                          planesFromRtStruct=args.planes_from, progress=ProgressBar(not args.quiet),
                                          holes=HoleEncoding(args.holes))
    result.timings["load_inputs"] = loadTime
    result.timings["in_process_total"] = time.perf_counter() - start
    refused = None
    if args.fail_on and result.worst_verdict.rank >= Verdict(args.fail_on).rank:
        refused = FidelityGateError(f"fidelity {result.worst_verdict.value} (--fail-on {args.fail_on})",
                                    args.segmentation)
    return CommandResult(
        f"RTSTRUCT fidelity {result.worst_verdict.value}: {_summary(result)}; report in {args.report} "
        f"({result.timings['in_process_total']:.2f} s)",
        {"report": str(args.report)}, result.warnings, result.timings, result.to_json(), refused)


def commandExportRtStruct(args) -> CommandResult:
    start = time.perf_counter()
    logic, node, volumeNode, folder = _loadInputs(args)
    loadTime = time.perf_counter() - start
    options = RtStructExportOptions(structure_set_label=args.label, series_description=args.series_description,
                                    roi_interpreted_type=args.roi_interpreted_type, holes=HoleEncoding(args.holes))
    try:
        result, fidelity = logic.rtstruct.export(
            node, volumeNode, args.output_dir, folder, args.export_reference, options, _thresholds(args),
            Verdict(args.fail_on) if args.fail_on else None, planesFromRtStruct=args.planes_from,
            referenceModality=ReferenceModality(args.reference_modality),
            patientInfo=patient_info(args), progress=ProgressBar(not args.quiet))
    except FidelityGateError as exc:  # name the input the gate refused
        raise FidelityGateError(str(exc), args.segmentation) from None
    result.timings["load_inputs"] = loadTime
    result.timings["in_process_total"] = time.perf_counter() - start
    details = result.to_json()
    details["fidelity"] = fidelity.to_json()
    outputs = export_outputs("rtstruct", result.path, result.reference_paths)
    return CommandResult(
        f"wrote {result.path} ({len(result.rois)} ROIs; fidelity {fidelity.worst_verdict.value}: "
        f"{_summary(fidelity)}) in {result.timings['in_process_total']:.2f} s",
        outputs, result.warnings, result.timings, details)


def commandLoadRtStruct(args) -> CommandResult:
    start = time.perf_counter()
    logic = args.make_logic()
    reference = Path(args.reference)
    folder = reference.parent if reference.is_file() else reference
    node, loaded = logic.rtstruct.load(args.rtstruct, folder, progress=ProgressBar(not args.quiet))
    check = logic.rtstruct.checkFile(args.rtstruct, folder)
    t = time.perf_counter()
    output = logic.saveSegmentationFile(node, args.output)
    loaded.timings["write_output"] = time.perf_counter() - t
    loaded.timings["in_process_total"] = time.perf_counter() - start
    details = loaded.to_json()
    details["check"] = check.to_json()
    warnings = list(loaded.warnings) + [f"ROI {i.roi_name!r} contour {i.contour_number}: {i.severity.value}: "
                                        f"{i.message}" for i in check.issues]
    return CommandResult(
        f"wrote {output} ({len(loaded.rois)} ROIs; {len(check.issues)} issue(s) in the RTSTRUCT) "
        f"in {loaded.timings['in_process_total']:.2f} s",
        {"segmentation": output}, warnings, loaded.timings, details)


def _common(parser, segmentation: bool = True) -> None:
    if segmentation:
        parser.add_argument("--segmentation", required=True, help=".seg.nrrd, label .nrrd/.nii.gz, or a DICOM SEG")
        parser.add_argument("--reference", required=True, help="DICOM folder of the CT series, or a volume file")
        parser.add_argument("--planes-from", default=None, metavar="RS.dcm",
                            help="rebuild missing CT planes from this RTSTRUCT's contours (incomplete CT folder)")
        parser.add_argument("--lossy-volume-change", type=float, default=None,
                            help=f"percent; default {FidelityThresholds().lossy_volume_change_percent}")
        parser.add_argument("--lossy-dice", type=float, default=None, help=f"default {FidelityThresholds().lossy_dice}")
        parser.add_argument("--holes", choices=[h.value for h in HoleEncoding], default=HoleEncoding.SEPARATE.value,
                            help="how holes are written: 'separate' inner contours (read right by readers that XOR a "
                                 "plane's contours, filled by union readers) or 'keyhole' (joined to the outer "
                                 "contour by a 0.1-pixel channel: read right by both); default separate")
    add_common_arguments(parser)


def add_rtstruct_commands(subparsers, makeLogic, loadReference) -> None:
    """Register the RTSTRUCT commands; ``makeLogic()`` and ``loadReference(logic, path)`` come from cli.py."""
    check = subparsers.add_parser("rtstruct-check", help="predict, per segment, what an RTSTRUCT export keeps")
    _common(check)
    check.add_argument("--report", required=True, help="folder for fidelity.json/.csv, index.html and PNGs (new)")
    check.add_argument("--fail-on", choices=["lossy", "minor"], default=None,
                       help="exit 1 (after writing the report) when any segment is this bad")
    check.set_defaults(func=commandRtStructCheck)

    export = subparsers.add_parser("export-rtstruct", help="check, then export a segmentation as RTSTRUCT")
    _common(export)
    export.add_argument("--output-dir", required=True)
    export.add_argument("--fail-on", choices=["lossy", "minor"], default=None,
                        help="write nothing and exit 1 when any segment is this bad")
    export.add_argument("--label", default="DicomFidelity", help="StructureSetLabel (16 characters)")
    export.add_argument("--series-description", default="Structure set exported by DicomFidelity")
    export.add_argument("--roi-interpreted-type", default="", help="RTROIInterpretedType for every ROI (e.g. ORGAN)")
    add_reference_series_arguments(export)
    export.set_defaults(func=commandExportRtStruct)

    load = subparsers.add_parser("load-rtstruct", help="read an RTSTRUCT (even-odd) into .seg.nrrd, and check it")
    load.add_argument("rtstruct", help="RTSTRUCT file")
    load.add_argument("--reference", required=True, help="DICOM folder of its CT series (missing slices are rebuilt)")
    load.add_argument("--output", required=True, help=".seg.nrrd (overlaps kept)")
    _common(load, segmentation=False)
    load.set_defaults(func=commandLoadRtStruct)

    for parser in (check, export, load):
        parser.set_defaults(make_logic=makeLogic, load_reference=loadReference)
