"""`dicomfidelity`: index a DICOM tree, pair what belongs together, run a task on every case.

    dicomfidelity index ROOT --db cohort.sqlite
    dicomfidelity pairs --db cohort.sqlite [--json pairs.json]
    dicomfidelity run ml-dataset --db cohort.sqlite --output-dir OUT [--workers N | --scheduler tcp://HOST:PORT]
                      [--retry-failed] [--format nifti|nrrd|npz]
    dicomfidelity run compare-seg --db cohort.sqlite --output-dir OUT [--consensus majority|staple] [--no-rtstruct]
    dicomfidelity run export-seg --db cohort.sqlite --output-dir OUT --manifest labels.csv [--labels SPEC]
                      [--seg-type auto|binary|labelmap] [--algorithm-type manual|semiautomatic|automatic]
    dicomfidelity run rtstruct-check --db cohort.sqlite --output-dir OUT [--lossy-volume-change PCT] [--lossy-dice D]

The contract (exit codes, the one `error:` line, --json keys) is DicomFidelityCommonLib.cli's. A run that finished
with failed cases exits 0: every failure is in OUT/manifest.csv with its reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the libraries sit beside this one (installed) or in sibling folders
    _root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(p) for p in (_root, *(_root.parent / n for n in ("DicomFidelityCommon", "SegmentationQA",
                                                                         "DoseAlignment"))) if p.is_dir()]

from CohortsLib.logic import run_task  # noqa: E402
from CohortsLib.tasks import TASKS, ArrayFormat  # noqa: E402
from DicomFidelityCommonLib import cli as contract  # noqa: E402
from DicomFidelityCommonLib.cohort import index_tree, pair_cases  # noqa: E402
from SegmentationQALib.seg.options import SegType  # noqa: E402


def commandIndex(args) -> contract.CommandResult:
    result = index_tree(args.root, args.db, progress=contract.ProgressBar(not args.quiet))
    details = result.to_json()
    warnings = [f"{u['path']}: {u['reason']}" for u in details.get("unreadable", [])]
    return contract.CommandResult(
        f"indexed {result.files_seen} files ({result.files_read} read, {result.unreadable_total} unreadable): "
        f"{result.patients} patients, {result.series} series in {result.seconds:.1f} s",
        {"database": str(args.db)}, warnings, {"index": result.seconds}, details)


def commandPairs(args) -> contract.CommandResult:
    result = pair_cases(args.db)
    details = result.to_json()
    warnings = [f"{u.path}: unpaired {u.modality}: {u.reason.value}: {u.text}" for u in result.unpaired]
    return contract.CommandResult(
        f"{len(result.cases)} cases; {len(result.unpaired)} objects unpaired (reasons in --json)",
        {}, warnings + result.warnings, {}, details)


def taskOptions(args) -> dict:
    """The options of the chosen task only: every option is part of what decides whether a case is redone."""
    if args.task == "ml-dataset":
        return {"format": args.format}
    if args.task == "compare-seg":
        return {"consensus": args.consensus, "rtstruct": not args.no_rtstruct}
    if args.task == "export-seg":  # without --manifest: run_task names what is missing
        options = {"manifest": args.manifest, "seg_type": args.seg_type, "algorithm_type": args.algorithm_type,
                   "series_description": args.series_description}
        return options | ({"labels": args.labels} if args.labels else {})
    options = {}
    if args.lossy_volume_change is not None:
        options["lossy_volume_change"] = args.lossy_volume_change
    if args.lossy_dice is not None:
        options["lossy_dice"] = args.lossy_dice
    return options


def commandRun(args) -> contract.CommandResult:
    options = taskOptions(args)
    result, review = run_task(args.db, args.task, args.output_dir, options, args.workers, args.scheduler,
                              args.retry_failed, contract.ProgressBar(not args.quiet))
    details = result.to_json()
    output_dir = Path(args.output_dir)
    outputs = {"manifest": str(output_dir / "manifest.csv"), "summary": str(output_dir / "summary.json"),
               "overview": str(output_dir / "index.html")}
    if review is not None:
        outputs.update({f"cohort_{k}": v for k, v in review.files.items()})
        details["cohort_review"] = review.to_json()
    return contract.CommandResult(
        f"{args.task}: " + ", ".join(f"{n} {status}" for status, n in result.counts.items())
        + f"; manifest in {output_dir}", outputs, [f"case {r.case_id}: {r.error}" for r in result.failed], {},
        details)


def buildParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomfidelity", description="Cohorts: index, pair, run a task per case")
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index a folder tree of DICOM files into SQLite (incremental)")
    index.add_argument("root")
    index.add_argument("--db", required=True, help="SQLite file (created, or updated with what changed)")
    contract.add_common_arguments(index)
    index.set_defaults(func=commandIndex)
    pairs = sub.add_parser("pairs", help="cases: CT + RTDOSE/RTSTRUCT/SEG, and what could not be paired, and why")
    pairs.add_argument("--db", required=True)
    contract.add_common_arguments(pairs)
    pairs.set_defaults(func=commandPairs)
    run = sub.add_parser("run", help="run a task on every case (resumable; local workers or a Dask cluster)")
    run.add_argument("task", choices=sorted(TASKS))
    run.add_argument("--db", required=True)
    run.add_argument("--output-dir", required=True)
    run.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    run.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT", help="run on this Dask cluster")
    run.add_argument("--retry-failed", action="store_true", help="run failed cases again")
    run.add_argument("--format", choices=[f.value for f in ArrayFormat], default=ArrayFormat.NIFTI.value,
                     help="ml-dataset arrays")
    run.add_argument("--consensus", choices=["majority", "staple"], default="majority", help="compare-seg consensus")
    run.add_argument("--no-rtstruct", action="store_true",
                     help="compare-seg: compare the SEGs only (by default a case's RTSTRUCTs are models too)")
    run.add_argument("--manifest", default=None, metavar="labels.csv",
                     help="export-seg: one case per row (label_file; ct_series_uid or ct_folder; optional labels)")
    run.add_argument("--labels", default=None, metavar="SPEC",
                     help="export-seg: label description for rows without one (file, or totalsegmentator:total ...)")
    run.add_argument("--seg-type", choices=[t.value for t in SegType], default=SegType.AUTO.value,
                     help="export-seg SEG type")
    run.add_argument("--algorithm-type", choices=["manual", "semiautomatic", "automatic"], default="manual",
                     help="export-seg: for segments whose description does not say")
    run.add_argument("--series-description", default="Segmentation", help="export-seg SEG series description")
    run.add_argument("--lossy-volume-change", type=float, default=None, help="rtstruct-check: percent (default 1)")
    run.add_argument("--lossy-dice", type=float, default=None, help="rtstruct-check: default 0.98")
    contract.add_common_arguments(run)
    run.set_defaults(func=commandRun)
    return parser


def main(argv=None) -> int:
    return contract.run_command("dicomfidelity", buildParser(), argv)


if __name__ == "__main__":
    contract.exit_from_app(main())
