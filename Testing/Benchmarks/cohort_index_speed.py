"""Indexing a cohort tree: ``cohort.index_tree`` (fresh SQLite index; in one process, and with one per CPU)
against ``pydicom.dcmread(path, stop_before_pixels=True)`` of every file, bare and reading the 9 values the index
stores per slice (what a pydicom-based indexer does at least), on a cohort generated from ../shared/data (full
152-slice CT series, full RTDOSE, RTSTRUCT, RTPLAN, SEG, the broken files). Page cache warm.

Fair in both directions: pydicom gets the very file list the index reads, from the index's own walk (scandir,
one stat per file, hidden files skipped), and pays nothing for SQLite, references or series summaries; the index
is timed end to end (opening a fresh database, walk, reads, inserts, summaries, close).

Load bias: other processes share the CPUs, so every repetition runs every reader once, in an order rotated from
one repetition to the next, after an untimed warm-up round; the speed-ups are the medians of the per-repetition
ratios (each from two runs seconds apart), with their range. CPU seconds (this process only) are shown too: they
move less with load than wall-clock seconds.

Target: index throughput at least 3x the bare pydicom walk, in one process.

    .venv/bin/python Testing/Benchmarks/cohort_index_speed.py [--patients 6] [--repeats 7] [--keep DIR]
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

TARGET = 3.0
# what the index stores per slice, read the way a pydicom-based indexer would
VALUE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                  "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient")


def main(argv=None) -> int:
    import pydicom

    from data_builders.cohort import build_cohort
    from DicomFidelityCommonLib.cohort import index_tree
    from DicomFidelityCommonLib.cohort.index import _walk

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--slices", type=int, default=152)
    parser.add_argument("--repeats", type=int, default=7)
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
        root = os.path.abspath(tree)
        db = work / "bench.db"
        skip = {f"{db}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")}
        files = [path for path, _, _ in _walk(root, skip)]
        for path in files:  # warm the page cache for every reader
            Path(path).read_bytes()

        def with_pydicom():
            for path, _, _ in _walk(root, skip):  # the index's walk: the same files, one stat each
                try:
                    pydicom.dcmread(path, stop_before_pixels=True)
                except Exception:  # noqa: BLE001, S110 - the broken files: pydicom's reader has to try them too
                    pass

        def with_pydicom_values():
            for path, _, _ in _walk(root, skip):
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                    [ds.get(keyword) for keyword in VALUE_KEYWORDS]
                except Exception:  # noqa: BLE001, S110
                    pass

        def with_index(workers):
            def run():
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                return index_tree(tree, db, workers=workers)
            return run

        def rerun():
            found = index_tree(tree, db)
            assert found.files_read == 0
            return found

        runs = {"pydicom": with_pydicom, "pydicom_values": with_pydicom_values, "index_1": with_index(1),
                "index_n": with_index(os.cpu_count()), "rerun": rerun}  # rerun after an index: keep it last
        fresh = [name for name in runs if name != "rerun"]
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        result = None
        for repeat in range(-1, args.repeats):  # -1: warm-up (imports, pydicom's caches), not counted
            order = fresh[repeat % len(fresh):] + fresh[:repeat % len(fresh)] + ["rerun"]
            for name in order:
                gc.collect()
                start, start_cpu = time.perf_counter(), time.process_time()
                value = runs[name]()
                took, took_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if repeat >= 0:
                    seconds[name].append(took)
                    cpu[name].append(took_cpu)
                result = value if name == "index_1" else result

        def ratios(baseline: str, name: str, table=seconds) -> list[float]:
            return [b / n for b, n in zip(table[baseline], table[name])]

        def summary(values: list[float]) -> str:
            return f"{statistics.median(values):.2f}x (range {min(values):.2f}-{max(values):.2f})"

        medians = {name: statistics.median(values) for name, values in seconds.items()}
        rate = {name: len(files) / value for name, value in medians.items()}
        speedup = {name: statistics.median(ratios("pydicom", name)) for name in runs}
        speedup_values = {name: statistics.median(ratios("pydicom_values", name)) for name in runs}
        cpu_speedup = statistics.median(ratios("pydicom", "index_1", cpu))
        print(f"cohort: {args.patients} patients + traps, {len(files)} files "
              f"({sum(os.path.getsize(f) for f in files) / 1e6:.0f} MB), built in {built:.1f} s; {args.repeats} "
              f"interleaved repetitions, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"index: {result.instances} instances, {result.series} series, {result.unreadable_total} unreadable, "
              f"{result.full_header_reads} full header reads")
        labels = {"pydicom": "pydicom.dcmread(stop_before_pixels)", "pydicom_values": "  + reading 9 values",
                  "index_1": "index_tree, 1 process", "index_n": f"index_tree, {os.cpu_count()} processes",
                  "rerun": "index_tree, no change"}
        print(f"{'reader':<38}{'seconds':>9}{'cpu s':>8}{'files/s':>10}{'vs pydicom':>12}{'vs +values':>12}")
        for name, label in labels.items():
            print(f"{label:<38}{medians[name]:>9.3f}{statistics.median(cpu[name]):>8.3f}{rate[name]:>10.0f}"
                  f"{speedup[name]:>11.2f}x{speedup_values[name]:>11.2f}x")
        one = ratios("pydicom", "index_1")
        print(f"index speed-up over the bare pydicom walk, one process: {summary(one)}; "
              f"{os.cpu_count()} processes: {summary(ratios('pydicom', 'index_n'))}; "
              f"over pydicom reading the values: {summary(ratios('pydicom_values', 'index_1'))}; "
              f"CPU seconds, one process: {cpu_speedup:.2f}x")
        print(f"target >= {TARGET:g}x (median, one process): {'met' if speedup['index_1'] >= TARGET else 'NOT met'}"
              f"{'' if min(one) >= TARGET else f' (slowest repetition {min(one):.2f}x)'}")
        Path(args.json).write_text(json.dumps({
            "benchmark": "cohort_index_speed", "files": len(files), "repeats": args.repeats, "cpus": os.cpu_count(),
            "seconds": medians, "cpu_seconds": {name: statistics.median(values) for name, values in cpu.items()},
            "files_per_second": rate, "speedup_one_process": speedup["index_1"],
            "speedup_all_cpus": speedup["index_n"], "speedup_over_pydicom_values": speedup_values["index_1"],
            "speedup_one_process_cpu": cpu_speedup, "ratios_one_process": one, "target": TARGET,
            "target_met": speedup["index_1"] >= TARGET, "load_average": os.getloadavg()}, indent=2))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
