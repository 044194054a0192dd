"""`segqa`: the SegmentationQA logic on the command line, in plain Python (slicer-core wheel) and in
`Slicer --no-main-window --python-script .../SegmentationQALib/cli.py ...`.

The contract (exit codes, the one `error:` line, --json keys, warning summaries) is DicomFidelityCommonLib.cli's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the libraries sit beside this one (installed) or in sibling folders
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(p) for p in (_root, _root.parent / "DicomFidelityCommon") if p.is_dir()]

from DicomFidelityCommonLib.cli import (  # noqa: E402
    CommandResult,
    ProgressBar,
    add_common_arguments,
    exit_from_app,
    run_command,
)
from DicomFidelityCommonLib.dicom.series import is_dicom_file  # noqa: E402
from DicomFidelityCommonLib.errors import EmptySegmentationError  # noqa: E402
from SegmentationQALib.cli_compare import add_compare_command  # noqa: E402
from SegmentationQALib.cli_reference import add_reference_series_arguments, export_outputs, patient_info  # noqa: E402
from SegmentationQALib.cli_rtstruct import add_rtstruct_commands  # noqa: E402
from SegmentationQALib.cli_send import add_send_command, add_send_options, send_paths  # noqa: E402
from SegmentationQALib.reference_series import ReferenceModality  # noqa: E402
from SegmentationQALib.seg.options import Compatibility, Compression, SegExportOptions, SegType  # noqa: E402

# (logic, segmentation nodes that existed before the command): the command's own nodes are released when it
# ends, as Slicer would take ~0.1 s per segment to tear them down; nodes already in an open Slicer stay.
_LOGICS: list = []


def makeLogic():
    """A SegmentationQA logic on the app's scene (inside Slicer) or a new one (slicer-core wheel)."""
    import slicer

    from SegmentationQALib.logic import SegmentationQAMRMLLogic

    scene = slicer.mrmlScene if getattr(slicer, "mrmlScene", None) is not None else slicer.vtkMRMLScene()
    logic = SegmentationQAMRMLLogic(scene)
    _LOGICS.append((logic, logic.segmentationNodeIds()))
    return logic


def releaseLogics() -> None:
    while _LOGICS:
        logic, existing = _LOGICS.pop()
        logic.releaseSegmentations(keep=existing)


def loadReference(logic, reference: str):
    """(volume node, DICOM folder): a folder or DICOM file is a DICOM reference, anything else a volume file."""
    path = Path(reference)
    if path.is_dir():
        return None, path
    if is_dicom_file(path):
        return None, path.parent
    return logic.loadVolumeFile(path), None


def commandExportSeg(args) -> CommandResult:
    start = time.perf_counter()
    logic = makeLogic()
    labelWarnings: list[str] = []
    segmentationNode = logic.loadSegmentationFile(args.segmentation, labels=args.labels, warnings=labelWarnings)
    referenceVolumeNode, referenceFolder = loadReference(logic, args.reference)
    options = SegExportOptions(
        seg_type=SegType(args.seg_type),
        compression=Compression(args.compression) if args.compression else None,
        compatibility=Compatibility(args.compatibility),
        series_description=args.series_description,
        content_creator_name=args.content_creator,
        algorithm_type=args.algorithm_type.upper(),
    )
    loadTime = time.perf_counter() - start
    try:
        result = logic.exportDicomSeg(
            segmentationNode, referenceVolumeNode, args.output_dir, options, exportReference=args.export_reference,
            referenceDicomFolder=referenceFolder, referenceModality=ReferenceModality(args.reference_modality),
            patientInfo=patient_info(args), progress=ProgressBar(not args.quiet))
    except EmptySegmentationError:  # the input's fault: name it, not the export's staging file
        raise EmptySegmentationError("nothing to export: every segment is empty on the reference grid",
                                     args.segmentation) from None
    result.warnings = labelWarnings + result.warnings
    result.timings["load_inputs"] = loadTime
    result.timings["in_process_total"] = time.perf_counter() - start
    outputs = export_outputs("seg", result.seg_path, result.reference_paths)
    message = (f"wrote {result.seg_path} ({result.seg_type.upper()}, {len(result.segments)} segments, "
               f"{result.file_size_bytes / 1e6:.2f} MB) in {result.timings['in_process_total']:.2f} s")
    details, refused = result.to_json(), None
    if args.send_to:  # the SEG and a reference series written with it; a DICOM reference is there already
        sent = send_paths([result.seg_path, *result.reference_paths], args,
                          [referenceFolder] if referenceFolder else [])
        details["send"], refused = sent.to_json(), sent.first_failure()
        result.warnings += sent.warnings
        result.timings["send"] = sent.timings["total"]
        message += f"; {sent.summary()}"
    return CommandResult(message, outputs, result.warnings, result.timings, details, refused)


def commandLoadSeg(args) -> CommandResult:
    start = time.perf_counter()
    logic = makeLogic()
    node, result = logic.loadDicomSeg(args.seg, progress=ProgressBar(not args.quiet))
    t = time.perf_counter()
    result.output_path = logic.saveSegmentationFile(node, args.output)
    outputs = {"segmentation": result.output_path}
    if not args.output.lower().endswith((".seg.nrrd", ".seg.nhdr")):
        # a label volume keeps only numbers: its names, colours and codes go beside it (dcmqi JSON, Slicer table)
        from SegmentationQALib.labels import write_description_beside

        written = write_description_beside(logic.layeredSegmentationFromNode(node, copy=False), result.output_path)
        outputs["labels_dcmqi_json"] = next(str(p) for p in written if p.name.endswith(".dcmqi.json"))
        outputs["labels_colour_table"] = [str(p) for p in written if not p.name.endswith(".dcmqi.json")]
    result.timings["write_output"] = time.perf_counter() - t
    result.timings["in_process_total"] = time.perf_counter() - start
    return CommandResult(
        f"wrote {result.output_path} ({len(result.segments)} segments from {result.seg_type} SEG) "
        f"in {result.timings['in_process_total']:.2f} s", outputs, result.warnings, result.timings, result.to_json())


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
    export.add_argument("--compatibility", choices=[c.value for c in Compatibility], default="default",
                        help="viewer: LABELMAP + RLE (as OHIF writes); legacy: BINARY uncompressed, for readers "
                             "without the LABELMAP SOP class or deflate (applies with --seg-type auto)")
    add_reference_series_arguments(export)
    export.add_argument("--series-description", default="Segmentation")
    export.add_argument("--content-creator", default="DicomFidelity^")
    export.add_argument("--algorithm-type", choices=["manual", "semiautomatic", "automatic"], default="manual",
                        help="for segments whose description does not say")
    export.add_argument("--labels", metavar="SPEC", default=None,
                        help="what a label volume's values mean: dcmqi JSON, Slicer colour table, ITK-SNAP labels, "
                             "or a built-in map (totalsegmentator:total, moose:clin_ct_organs, ...)")
    add_send_options(export, "--send", required=False)
    add_common_arguments(export)
    export.set_defaults(func=commandExportSeg)

    load = sub.add_parser("load-seg", help="load a DICOM SEG and write it as .seg.nrrd or a label volume")
    load.add_argument("seg", help="DICOM SEG file")
    load.add_argument("--output", required=True, help=".seg.nrrd (overlaps kept) or .nrrd/.nii.gz (label values)")
    add_common_arguments(load)
    load.set_defaults(func=commandLoadSeg)

    add_rtstruct_commands(sub, makeLogic, loadReference)
    add_compare_command(sub, makeLogic, loadReference)
    add_send_command(sub)
    return parser


def main(argv=None) -> int:
    return run_command("segqa", buildParser(), argv, release=releaseLogics)


if __name__ == "__main__":
    exit_from_app(main())
