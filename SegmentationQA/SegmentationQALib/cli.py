"""`segqa` command line: the same logic as the panel, for plain Python (slicer-core wheel) and
`Slicer --no-main-window --python-script .../SegmentationQALib/cli.py ...`.

Exit code 0 on success, 1 with a one-line error on bad input, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (e.g. by Slicer --python-script)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DicomFidelityCommonLib.errors import DicomFidelityError  # noqa: E402
from DicomFidelityCommonLib.safe_write import atomic_output_file  # noqa: E402
from SegmentationQALib.reference_series import PatientStudyInfo, ReferenceModality  # noqa: E402
from SegmentationQALib.seg.options import Compression, SegExportOptions, SegType  # noqa: E402


class ProgressBar:
    """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lastDecile = -1

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        fraction = min(1.0, max(0.0, fraction))
        if self.tty:
            filled = int(fraction * 30)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:3.0f}% {message[:50]:<50}")
            if fraction >= 1.0:
                self.stream.write("\n")
            self.stream.flush()
        elif int(fraction * 10) > self.lastDecile:
            self.lastDecile = int(fraction * 10)
            self.stream.write(f"{fraction * 100:3.0f}% {message}\n")


def writeJson(path, payload: dict) -> None:
    if not path:
        return
    with atomic_output_file(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2))


def makeLogic():
    import slicer

    from SegmentationQALib.logic import SegmentationQAMRMLLogic

    scene = slicer.mrmlScene if hasattr(slicer, "mrmlScene") and slicer.mrmlScene is not None else slicer.vtkMRMLScene()
    logic = SegmentationQAMRMLLogic(scene)
    _LOGICS.append((logic, logic.segmentationNodeIds()))
    return logic


# (logic, segmentation nodes that existed before the command): the command's own nodes are released when it
# ends, as Slicer would take ~0.1 s per segment to tear them down; nodes already in an open Slicer stay.
_LOGICS: list = []


def isDicomFile(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def commandExportSeg(args) -> int:
    start = time.perf_counter()
    logic = makeLogic()
    progress = ProgressBar(not args.quiet)
    segmentationNode = logic.loadSegmentationFile(args.segmentation)
    reference = Path(args.reference)
    referenceVolumeNode, referenceFolder = None, None
    if reference.is_dir() or isDicomFile(reference):
        referenceFolder = reference
    else:
        referenceVolumeNode = logic.loadVolumeFile(reference)
    options = SegExportOptions(
        seg_type=SegType(args.seg_type),
        compression=Compression(args.compression) if args.compression else None,
        series_description=args.series_description,
        content_creator_name=args.content_creator,
        algorithm_type=args.algorithm_type.upper(),
    )
    info = PatientStudyInfo(patient_name=args.patient_name, patient_id=args.patient_id or "")
    loadTime = time.perf_counter() - start
    result = logic.exportDicomSeg(
        segmentationNode, referenceVolumeNode, args.output_dir, options, exportReference=args.export_reference,
        referenceDicomFolder=referenceFolder, referenceModality=ReferenceModality(args.reference_modality),
        patientInfo=info, progress=progress)
    result.timings["load_inputs"] = loadTime
    result.timings["in_process_total"] = time.perf_counter() - start
    payload = result.to_json()
    writeJson(args.json, payload)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {result.seg_path} ({result.seg_type.upper()}, {len(result.segments)} segments, "
          f"{result.file_size_bytes / 1e6:.2f} MB) in {result.timings['in_process_total']:.2f} s")
    return 0


def commandLoadSeg(args) -> int:
    start = time.perf_counter()
    logic = makeLogic()
    node, result = logic.loadDicomSeg(args.seg, progress=ProgressBar(not args.quiet))
    t = time.perf_counter()
    result.output_path = logic.saveSegmentationFile(node, args.output)
    result.timings["write_output"] = time.perf_counter() - t
    result.timings["in_process_total"] = time.perf_counter() - start
    writeJson(args.json, result.to_json())
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {result.output_path} ({len(result.segments)} segments from {result.seg_type} SEG) "
          f"in {result.timings['in_process_total']:.2f} s")
    return 0


def buildParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segqa", description="Segmentation <-> DICOM without silent data loss")
    sub = parser.add_subparsers(dest="command", required=True)

    export = sub.add_parser("export-seg", help="export a segmentation as DICOM SEG")
    export.add_argument("--segmentation", required=True, help=".seg.nrrd, label .nrrd/.nii.gz, or a DICOM SEG")
    export.add_argument("--reference", required=True, help="DICOM folder of the reference series, or a volume file")
    export.add_argument("--output-dir", required=True)
    export.add_argument("--seg-type", choices=[t.value for t in SegType], default=SegType.AUTO.value)
    export.add_argument("--compression", choices=[c.value for c in Compression], default=None,
                        help="lossless transfer syntax (default: deflate, which dcmqi, highdicom and DCMTK read)")
    export.add_argument("--export-reference", action="store_true",
                        help="when the reference is not DICOM, also write it as a new DICOM series")
    export.add_argument("--reference-modality", choices=[m.value for m in ReferenceModality], default="CT")
    export.add_argument("--patient-name", default="Anonymous^")
    export.add_argument("--patient-id", default=None)
    export.add_argument("--series-description", default="Segmentation")
    export.add_argument("--content-creator", default="DicomFidelity^")
    export.add_argument("--algorithm-type", choices=["manual", "semiautomatic", "automatic"], default="manual")
    export.add_argument("--json", help="write the result (paths, segments, warnings, timings) here")
    export.add_argument("--quiet", action="store_true")
    export.set_defaults(func=commandExportSeg)

    load = sub.add_parser("load-seg", help="load a DICOM SEG and write it as .seg.nrrd or a label volume")
    load.add_argument("seg", help="DICOM SEG file")
    load.add_argument("--output", required=True, help=".seg.nrrd (overlaps kept) or .nrrd/.nii.gz (label values)")
    load.add_argument("--json")
    load.add_argument("--quiet", action="store_true")
    load.set_defaults(func=commandLoadSeg)

    try:
        from SegmentationQALib.cli_rtstruct import add_rtstruct_commands
    except ImportError:
        pass
    else:
        add_rtstruct_commands(sub)
    return parser


def main(argv=None) -> int:
    args = buildParser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DicomFidelityError, FileExistsError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        while _LOGICS:
            logic, existing = _LOGICS.pop()
            logic.releaseSegmentations(keep=existing)


def _exitFromApp(code: int) -> None:
    """Inside Slicer (--no-main-window) the interpreter belongs to the app: exit through it."""
    import slicer

    if hasattr(slicer, "util") and hasattr(slicer.util, "exit") and hasattr(slicer, "app"):
        slicer.util.exit(code)
    else:
        sys.exit(code)


if __name__ == "__main__":
    _exitFromApp(main())
