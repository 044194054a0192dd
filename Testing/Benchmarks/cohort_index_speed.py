"""Indexing a cohort tree: ``cohort.index_tree`` (fresh SQLite index; in one process, and with one per CPU)
against a plain walk with ``pydicom.dcmread(path, stop_before_pixels=True)`` of every file, and the same walk
reading the values the index stores per slice (what a pydicom-based indexer does at least), on a cohort generated
from ../shared/data (full 152-slice CT series, full RTDOSE, RTSTRUCT, RTPLAN, SEG, the broken files); same
process, interleaved, medians of --repeats, page cache warm. Also the no-change re-run (stat only).

Target: index throughput at least 3x the bare pydicom walk (which stores nothing and follows no references).

    .venv/bin/python Testing/Benchmarks/cohort_index_speed.py [--patients 6] [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "DicomFidelityCommon"), str(REPO / "DoseAlignment"), str(REPO / "Testing")]


def _files(root: Path) -> list[str]:
    found = []
    for folder, folders, names in os.walk(root):
        folders[:] = [f for f in folders if not f.startswith(".")]
        found.extend(os.path.join(folder, n) for n in names if not n.startswith("."))
    return found


def main(argv=None) -> int:
    import pydicom

    from data_builders.cohort import build_cohort
    from DicomFidelityCommonLib.cohort import index_tree

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--slices", type=int, default=152)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", help="build the cohort here and keep it (default: a temporary folder)")
    parser.add_argument("--json", default="cohort_index_speed.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cohort_bench_"))
    try:
        tree = work / "tree"
        start = time.perf_counter()
        if not tree.exists():
            build_cohort(tree, patients=args.patients, slices=args.slices, dose_frames=1000, data=args.data)
        built = time.perf_counter() - start
        files = _files(tree)
        for path in files:  # warm the page cache for both readers
            Path(path).read_bytes()

        def with_pydicom():
            for path in _files(tree):
                try:
                    pydicom.dcmread(path, stop_before_pixels=True)
                except Exception:  # noqa: BLE001 - the broken files: pydicom's reader has to try them too
                    pass

        keywords = ("SOPClassUID", "SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                    "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient")

        def with_pydicom_values():
            for path in _files(tree):
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                    [ds.get(keyword) for keyword in keywords]
                except Exception:  # noqa: BLE001
                    pass

        def with_index(workers):
            def run():
                db = work / "bench.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                return index_tree(tree, db, workers=workers)
            return run

        runs = {"pydicom": with_pydicom, "pydicom_values": with_pydicom_values, "index_1": with_index(1),
                "index_n": with_index(os.cpu_count())}
        seconds: dict[str, list[float]] = {name: [] for name in [*runs, "rerun"]}
        result = None
        for _ in range(args.repeats):
            for name, run in runs.items():
                gc.collect()
                start = time.perf_counter()
                value = run()
                seconds[name].append(time.perf_counter() - start)
                result = value if name == "index_1" else result
            gc.collect()
            start = time.perf_counter()
            rerun = index_tree(tree, work / "bench.db")
            seconds["rerun"].append(time.perf_counter() - start)
            assert rerun.files_read == 0
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        rate = {name: len(files) / value for name, value in medians.items()}
        ratio = medians["pydicom"] / medians["index_1"]
        ratio_n = medians["pydicom"] / medians["index_n"]
        print(f"cohort: {args.patients} patients + traps, {len(files)} files "
              f"({sum(os.path.getsize(f) for f in files) / 1e6:.0f} MB), built in {built:.1f} s")
        print(f"index: {result.instances} instances, {result.series} series, {result.unreadable_total} unreadable, "
              f"{result.full_header_reads} full header reads")
        labels = {"pydicom": "pydicom.dcmread(stop_before_pixels)", "pydicom_values": "  + reading 9 values",
                  "index_1": "index_tree, 1 process", "index_n": f"index_tree, {os.cpu_count()} processes",
                  "rerun": "index_tree, no change"}
        print(f"{'reader':<38}{'seconds':>10}{'files/s':>12}{'vs pydicom':>12}")
        for name, label in labels.items():
            print(f"{label:<38}{medians[name]:>10.3f}{rate[name]:>12.0f}{medians['pydicom'] / medians[name]:>11.2f}x")
        print(f"index speed-up over the bare pydicom walk: {ratio:.2f}x in one process, {ratio_n:.2f}x with "
              f"{os.cpu_count()} processes; target >= 3x: {'met' if max(ratio, ratio_n) >= 3 else 'NOT met'} "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        Path(args.json).write_text(json.dumps({
            "benchmark": "cohort_index_speed", "files": len(files), "repeats": args.repeats, "cpus": os.cpu_count(),
            "seconds": medians, "files_per_second": rate, "speedup_one_process": ratio,
            "speedup_all_cpus": ratio_n, "load_average": os.getloadavg()}, indent=2))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
