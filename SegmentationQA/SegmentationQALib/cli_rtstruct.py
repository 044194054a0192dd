"""`segqa rtstruct-check | export-rtstruct | load-rtstruct`: the RTSTRUCT commands, registered by cli.py.

Exit codes: 0 success, 1 bad input (one-line error, from cli.main), 2 bad arguments, 3 refused by --fail-on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from SegmentationQALib.rtstruct import RtStructExportOptions
from SegmentationQALib.rtstruct.fidelity import FidelityGateError, FidelityThresholds, Verdict

GATE_EXIT_CODE = 3


def _cli():
    from SegmentationQALib import cli

    return cli


def _reference(logic, reference: str):
    """(volume node, DICOM folder): a folder or DICOM file is a DICOM reference, anything else a volume file."""
    path = Path(reference)
    if path.is_dir():
        return None, path
    if _cli().isDicomFile(path):
        return None, path.parent
    return logic.loadVolumeFile(path), None


def _thresholds(args) -> FidelityThresholds:
    defaults = FidelityThresholds()
    return FidelityThresholds(
        lossy_volume_change_percent=args.lossy_volume_change if args.lossy_volume_change is not None else defaults.lossy_volume_change_percent,
        lossy_dice=args.lossy_dice if args.lossy_dice is not None else defaults.lossy_dice,
    )


def _summary(result) -> str:
    counts = result.to_json()["counts"]
    return ", ".join(f"{counts[v.value]} {v.value}" for v in Verdict)


def _loadInputs(args):
    """The CLI module, a logic on a fresh scene, the segmentation node and the reference (node or DICOM folder)."""
    cli = _cli()
    logic = cli.makeLogic()
    node = logic.loadSegmentationFile(args.segmentation)
    volumeNode, folder = _reference(logic, args.reference)
    return cli, logic, node, volumeNode, folder


def commandRtStructCheck(args) -> int:
    start = time.perf_counter()
    cli, logic, node, volumeNode, folder = _loadInputs(args)
    loadTime = time.perf_counter() - start
    result = logic.checkRtStructFidelity(node, volumeNode, folder, _thresholds(args), args.report,
                                         planesFromRtStruct=args.planes_from, progress=cli.ProgressBar(not args.quiet))
    result.timings["load_inputs_s"] = loadTime
    result.timings["in_process_total_s"] = time.perf_counter() - start
    payload = result.to_json()
    payload["report_dir"] = str(args.report)
    cli.writeJson(args.json, payload)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"RTSTRUCT fidelity {result.worst_verdict.value}: {_summary(result)}; report in {args.report} "
          f"({result.timings['in_process_total_s']:.2f} s)")
    if args.fail_on and result.worst_verdict.rank >= Verdict(args.fail_on).rank:
        print(f"error: fidelity {result.worst_verdict.value} (--fail-on {args.fail_on})", file=sys.stderr)
        return GATE_EXIT_CODE
    return 0


def commandExportRtStruct(args) -> int:
    start = time.perf_counter()
    cli, logic, node, volumeNode, folder = _loadInputs(args)
    loadTime = time.perf_counter() - start
    options = RtStructExportOptions(structure_set_label=args.label, series_description=args.series_description,
                                    roi_interpreted_type=args.roi_interpreted_type)
    from SegmentationQALib.reference_series import PatientStudyInfo

    try:
        result, fidelity = logic.exportRtStruct(
            node, volumeNode, args.output_dir, folder, args.export_reference, options, _thresholds(args),
            Verdict(args.fail_on) if args.fail_on else None, planesFromRtStruct=args.planes_from,
            patientInfo=PatientStudyInfo(patient_name=args.patient_name), progress=cli.ProgressBar(not args.quiet))
    except FidelityGateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return GATE_EXIT_CODE
    result.timings["load_inputs_s"] = loadTime
    result.timings["in_process_total_s"] = time.perf_counter() - start
    payload = result.to_json()
    payload["fidelity"] = fidelity.to_json()
    cli.writeJson(args.json, payload)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {result.path} ({len(result.rois)} ROIs; fidelity {fidelity.worst_verdict.value}: "
          f"{_summary(fidelity)}) in {result.timings['in_process_total_s']:.2f} s")
    return 0


def commandLoadRtStruct(args) -> int:
    start = time.perf_counter()
    cli = _cli()
    logic = cli.makeLogic()
    reference = Path(args.reference)
    folder = reference.parent if reference.is_file() else reference
    node, loaded = logic.loadRtStruct(args.rtstruct, folder, progress=cli.ProgressBar(not args.quiet))
    check = logic.checkRtStructFile(args.rtstruct, folder)
    t = time.perf_counter()
    output = logic.saveSegmentationFile(node, args.output)
    payload = loaded.to_json()
    payload["check"] = check.to_json()
    payload["output_path"] = output
    payload["timings_s"]["write_output_s"] = round(time.perf_counter() - t, 4)
    payload["timings_s"]["in_process_total_s"] = round(time.perf_counter() - start, 4)
    cli.writeJson(args.json, payload)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for issue in check.issues:
        print(f"{issue.severity.value}: ROI {issue.roi_name!r} contour {issue.contour_number}: {issue.message}", file=sys.stderr)
    print(f"wrote {output} ({len(loaded.rois)} ROIs; {len(check.issues)} issue(s) in the RTSTRUCT) "
          f"in {payload['timings_s']['in_process_total_s']:.2f} s")
    return 0


def _common(parser, segmentation: bool = True) -> None:
    if segmentation:
        parser.add_argument("--segmentation", required=True, help=".seg.nrrd, label .nrrd/.nii.gz, or a DICOM SEG")
        parser.add_argument("--reference", required=True, help="DICOM folder of the CT series, or a volume file")
        parser.add_argument("--planes-from", default=None, metavar="RS.dcm",
                            help="rebuild missing CT planes from this RTSTRUCT's contours (incomplete CT folder)")
        parser.add_argument("--lossy-volume-change", type=float, default=None,
                            help=f"percent; default {FidelityThresholds().lossy_volume_change_percent}")
        parser.add_argument("--lossy-dice", type=float, default=None, help=f"default {FidelityThresholds().lossy_dice}")
    parser.add_argument("--json", help="write the result (per segment, warnings, in-process timings) here")
    parser.add_argument("--quiet", action="store_true")


def add_rtstruct_commands(subparsers) -> None:
    check = subparsers.add_parser("rtstruct-check", help="predict, per segment, what an RTSTRUCT export keeps")
    _common(check)
    check.add_argument("--report", required=True, help="folder for fidelity.json/.csv, index.html and PNGs (new)")
    check.add_argument("--fail-on", choices=["lossy", "minor"], default=None, help="exit 3 when any segment is this bad")
    check.set_defaults(func=commandRtStructCheck)

    export = subparsers.add_parser("export-rtstruct", help="check, then export a segmentation as RTSTRUCT")
    _common(export)
    export.add_argument("--output-dir", required=True)
    export.add_argument("--export-reference", action="store_true",
                        help="when the reference is not DICOM, also write it as a new DICOM series")
    export.add_argument("--fail-on", choices=["lossy", "minor"], default=None,
                        help="write nothing and exit 3 when any segment is this bad")
    export.add_argument("--label", default="DicomFidelity", help="StructureSetLabel (16 characters)")
    export.add_argument("--series-description", default="Structure set exported by DicomFidelity")
    export.add_argument("--roi-interpreted-type", default="", help="RTROIInterpretedType for every ROI (e.g. ORGAN)")
    export.add_argument("--patient-name", default="Anonymous^", help="for a reference series written with it")
    export.set_defaults(func=commandExportRtStruct)

    load = subparsers.add_parser("load-rtstruct", help="read an RTSTRUCT (even-odd) into .seg.nrrd, and check it")
    load.add_argument("rtstruct", help="RTSTRUCT file")
    load.add_argument("--reference", required=True, help="DICOM folder of its CT series (missing slices are rebuilt)")
    load.add_argument("--output", required=True, help=".seg.nrrd (overlaps kept)")
    _common(load, segmentation=False)
    load.set_defaults(func=commandLoadRtStruct)
