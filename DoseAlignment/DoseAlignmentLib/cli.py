"""dosealign: RTDOSE onto a CT grid (or the CT onto the dose grid) from the command line, plain Python or Slicer.

    dosealign resample --dose RTDOSE.dcm [--dose RTDOSE2.dcm ...] --reference (CT_FOLDER | VOLUME_FILE)
                       --output FILE(.nrrd | .nii.gz | .npz) [--direction dose-to-ct | ct-to-dose]
                       [--interpolation linear|nearest|bspline] [--json RESULT.json]

The contract (exit codes, the one `error:` line, --json keys) is DicomFidelityCommonLib.cli's; on a bad input nothing
is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the libraries sit beside this one (installed) or in sibling folders
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(p) for p in (_root, _root.parent / "DicomFidelityCommon") if p.is_dir()]

from DicomFidelityCommonLib import cli as contract  # noqa: E402
from DicomFidelityCommonLib.errors import DicomFidelityError  # noqa: E402
from DoseAlignmentLib.align import align, read_registration  # noqa: E402
from DoseAlignmentLib.dvh import dvh_for_labels, read_labelmap, write_report  # noqa: E402
from DoseAlignmentLib.export import output_format, write_arrays, write_rtdose  # noqa: E402
from DoseAlignmentLib.resample import Direction, Interpolation  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dosealign",
                                     description="Align RTDOSE with a CT grid, with every geometry rule right.")
    commands = parser.add_subparsers(dest="command", required=True)
    resample = commands.add_parser("resample", help="resample dose onto the CT grid (or the CT onto the dose grid)")
    resample.add_argument("--dose", action="append", required=True, help="RTDOSE file; repeat to sum per-beam doses")
    resample.add_argument("--reference", required=True, help="CT folder (DICOM) or volume file (NRRD, NIfTI, MHA)")
    resample.add_argument("--output", required=True, help="output .nrrd, .nii, .nii.gz or .npz")
    resample.add_argument("--direction", choices=[d.value for d in Direction], default=Direction.DOSE_TO_CT.value)
    resample.add_argument("--interpolation", choices=[i.value for i in Interpolation],
                          default=Interpolation.LINEAR.value)
    resample.add_argument("--outside-value", type=float, default=0.0, help="dose outside the dose grid (default 0)")
    resample.add_argument("--registration",
                          help="4x4 matrix text file (LPS mm) mapping dose-frame to reference-frame points")
    resample.add_argument("--reference-output", help="also write the reference on the output grid (.nrrd/.nii.gz)")
    resample.add_argument("--rtdose-output",
                          help="also write the dose on the CT grid as an RTDOSE (.dcm; dose-to-ct only)")
    resample.add_argument("--labelmap", help="labelmap on the reference (NRRD/NIfTI/.seg.nrrd) for the DVH report")
    resample.add_argument("--report", help="folder for an HTML report: DVH CSV and PNG, isodose overlay")
    resample.add_argument("--compress", action="store_true", help="compress NRRD/NIfTI/npz outputs (smaller, slower)")
    contract.add_common_arguments(resample)
    resample.set_defaults(func=run_resample)
    return parser


def run_resample(args: argparse.Namespace) -> contract.CommandResult:
    progress = contract.ProgressBar(not args.quiet)
    output_format(args.output)  # reject a bad output name before any work
    if args.reference_output:
        output_format(args.reference_output)
    report = Path(args.report) if args.report else None
    if report is not None and report.exists() and (not report.is_dir() or any(report.iterdir())):
        raise DicomFidelityError("report folder exists and is not empty", args.report)
    registration = read_registration(args.registration) if args.registration else None
    direction = Direction(args.direction)
    if args.rtdose_output and direction != Direction.DOSE_TO_CT:
        raise DicomFidelityError("--rtdose-output needs --direction dose-to-ct", args.rtdose_output)
    needs_reference = bool(args.reference_output or args.report or output_format(args.output) == ".npz")
    result = align(args.dose, args.reference, direction=direction, interpolation=args.interpolation,
                   outside_value=args.outside_value, registration=registration, load_reference=needs_reference,
                   progress=lambda fraction, message: progress(0.9 * fraction, message))
    labels = None
    if args.labelmap:
        if result.geometry is None:
            raise DicomFidelityError("a DVH needs a regular output grid (non-uniform dose frames): use dose-to-ct",
                                     args.labelmap)
        labels, names, label_warnings = read_labelmap(args.labelmap, result.geometry)
        result.warnings.extend(label_warnings)
    t = time.perf_counter()
    progress(0.95, f"writing {args.output}")
    try:
        result.outputs.update(write_arrays(args.output, result, args.reference_output, args.compress))
        if args.rtdose_output:
            result.outputs["rtdose"] = str(write_rtdose(args.rtdose_output, result))
        if args.report:
            curves = dvh_for_labels(result.dose, labels, names, result.geometry) if labels is not None else []
            reports = write_report(args.report, result.dose, result.reference_array, result.geometry,
                                   result.units.value, curves, result.to_json())
            result.outputs.update({f"report_{k}": v for k, v in reports.items()})
    except BaseException:
        _remove_outputs(result.outputs.values())  # all or nothing: no set of outputs that disagree
        raise
    result.timings["write"] = time.perf_counter() - t
    document = result.to_json()
    summary = ", ".join(f"{k} {document[k]}" for k in ("dose_units", "max_dose_in", "max_dose_out", "fraction_outside"))
    return contract.CommandResult(f"wrote {args.output} ({summary})", dict(result.outputs), result.warnings,
                                  result.timings, document)


def _remove_outputs(paths) -> None:
    import shutil

    for path in {Path(p) for p in paths}:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    for path in {Path(p).parent for p in paths if Path(p).name == "report.html"}:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return contract.run_command("dosealign", build_parser(), argv)


if __name__ == "__main__":
    contract.exit_from_app(main())
