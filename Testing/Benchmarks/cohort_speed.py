"""The cohort runner on real work: `dicomfidelity run ml-dataset` (CT, dose on the CT grid, masks per structure) on
a cohort generated from ../shared/data (new UIDs per patient, shifted positions, relative/absolute/descending dose
offsets, per-beam doses, trap patients), with 1 and 2 local workers, in one run.

Prints cases per minute for each, the 2-worker speed-up (target: at least 1.6x on 2 cores) and the runner's
per-case overhead: wall time of the run minus the tasks' own in-process seconds (from the manifest), per case,
as a fraction of the task time (target: under 10 %).

    .venv/bin/python Testing/Benchmarks/cohort_speed.py [--patients 20] [--slices 40] [--json cohort_speed.json]

Not measured here (see the note in the issue): pydicer and med-imagetools on the same cohort.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / folder) for folder in ("DicomFidelityCommon", "SegmentationQA", "DoseAlignment", "Cohorts",
                                                  "Testing")]


def run_once(db: Path, out: Path, workers: int) -> dict:
    from CohortsLib import cli

    started = time.perf_counter()
    code = cli.main(["run", "ml-dataset", "--db", str(db), "--output-dir", str(out), "--workers", str(workers),
                     "--quiet"])
    wall = time.perf_counter() - started
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    task_seconds = sum(float(r["seconds"] or 0) for r in rows)
    ok = sum(1 for r in rows if r["status"] == "ok")
    return {"workers": workers, "exit_code": code, "cases": len(rows), "ok": ok, "wall_s": round(wall, 2),
            "task_s": round(task_seconds, 2), "cases_per_minute": round(60 * len(rows) / wall, 1),
            # with N workers the tasks run N at a time: the runner's share is what the wall time adds to that
            "overhead_per_case_s": round((wall - task_seconds / workers) / max(1, len(rows)), 3),
            "overhead_fraction": round((wall - task_seconds / workers) / max(1e-9, task_seconds / workers), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--slices", type=int, default=40, help="CT slices per patient (the dose covers them)")
    parser.add_argument("--json", default="cohort_speed.json")
    args = parser.parse_args(argv)
    from datapaths import shared_data_dir

    from CohortsLib import cli
    from data_builders.cohort import build_cohort

    with tempfile.TemporaryDirectory(prefix="cohort-speed-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        build_cohort(root / "tree", patients=args.patients, slices=args.slices, seed=11, data=shared_data_dir())
        print(f"cohort of {args.patients} patients (+ traps) built in {time.perf_counter() - started:.1f} s")
        db = root / "cohort.sqlite"
        assert cli.main(["index", str(root / "tree"), "--db", str(db), "--quiet"]) == 0
        results = [run_once(db, root / f"out{workers}", workers) for workers in (1, 2)]
    one, two = results
    speedup = two["cases_per_minute"] / max(1e-9, one["cases_per_minute"])
    print(f"{'workers':>8} {'cases':>6} {'ok':>4} {'wall s':>8} {'task s':>8} {'cases/min':>10} "
          f"{'overhead/case s':>16}")
    for r in results:
        print(f"{r['workers']:>8} {r['cases']:>6} {r['ok']:>4} {r['wall_s']:>8} {r['task_s']:>8} "
              f"{r['cases_per_minute']:>10} {r['overhead_per_case_s']:>16}")
    print(f"2 workers / 1 worker: {speedup:.2f}x (target >= 1.6x); runner overhead with 1 worker: "
          f"{100 * one['overhead_fraction']:.1f} % of the task time (target < 10 %)")
    Path(args.json).write_text(json.dumps({"runs": results, "speedup_2_workers": round(speedup, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
