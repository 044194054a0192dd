"""The cohort runner on real work, and the same cohort through pydicer and med-imagetools, in one run.

`dicomfidelity run ml-dataset` (CT, dose on the CT grid, masks per structure) on a cohort generated from
../shared/data (new UIDs per patient, shifted positions, relative/absolute/descending dose offsets, per-beam doses,
trap patients, broken files), with 1 and 2 local workers. Prints cases per minute for each, the 2-worker speed-up
(target: at least 1.6x on 2 cores) and the runner's per-case overhead: wall time of the run minus the tasks' own
in-process seconds (from the manifest), per case, as a fraction of the task time (target: under 10 %).

Then the same tree through the peers, each in its own environment, driven by Testing/peers/pydicer_cohort.py and
Testing/peers/imagetools_cohort.py in a subprocess (what each does, and the run-time patches med-imagetools needs,
are in their docstrings). For every tool, ours included:

* s/patient: seconds of work (ours: index + run with 1 worker; peers: everything after their imports) over every
  patient in the tree, traps included; interpreter start and imports are left out for all and kept in the JSON;
* peak MB: peak resident memory of the tool's process tree (sampled every 50 ms, workers included);
* pairs right / wrong / missed: every RTDOSE and RTSTRUCT the cohort pairs with a CT, against the CT series each
  tool put it with (wrong: another CT, or several, or a trap object put with any CT);
* traps: the trap doses (no CT on the dose's frame of reference, two CTs on it, a plan chain that contradicts it)
  left unpaired, and how many of those with a message naming them;
* dose max diff: per case, the tool's dose on the CT grid (per-beam doses summed) against ours, max |difference|
  in Gy, after resampling the tool's onto our grid if the grids differ; over the cases whose every dose the tool
  paired right (the mixed-units trap is left out: we refuse to sum it).

Ratio ours/peer: the peer's s/patient over ours (target: at least 2x) and whether every pair is right.

    .venv/bin/python Testing/Benchmarks/cohort_speed.py [--patients 10] [--slices 40] [--peers pydicer,imagetools]
                                                        [--quick] [--json cohort_speed.json]

The peers' environments (see run.sh): .venv-cohort-pydicer (Testing/requirements-cohort-peers-pydicer.txt) and
.venv-cohort-imagetools (Testing/requirements-cohort-peers-imagetools.txt). A peer whose environment is missing is
reported as not measured, with the command that creates it. `--peers none` runs ours only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FOLDERS = ("DicomFidelityCommon", "SegmentationQA", "DoseAlignment", "Cohorts", "Testing")
sys.path[:0] = [str(REPO / folder) for folder in FOLDERS]

PEERS = {
    "pydicer": (".venv-cohort-pydicer", "pydicer_cohort.py", "requirements-cohort-peers-pydicer.txt"),
    "imagetools": (".venv-cohort-imagetools", "imagetools_cohort.py", "requirements-cohort-peers-imagetools.txt"),
}
TRAP_DOSE_REASONS = {"NO_IMAGE_SERIES_ON_FRAME_OF_REFERENCE", "AMBIGUOUS_IMAGE_SERIES",
                     "CHAIN_CONTRADICTS_FRAME_OF_REFERENCE"}


# ------------------------------------------------------------------------------------------------ processes
class TreeMemory:
    """Peak resident memory and CPU seconds of a process and all its descendants (workers, fork servers), sampled:
    CPU seconds say less about what other jobs on the machine were doing than wall seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self.root, self.interval, self.peak, self.cpu = psutil.Process(pid), interval, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for process in processes:
                try:
                    with process.oneshot():
                        total += process.memory_info().rss
                        times = process.cpu_times()
                    self.cpu[(process.pid, process.create_time())] = times.user + times.system
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> tuple[int, float]:
        self._stop.set()
        self._thread.join()
        return self.peak, sum(self.cpu.values())


def run_child(command: list[str], log: Path) -> tuple[int, float, int, float]:
    """Exit code, wall seconds, peak tree memory (bytes) and tree CPU seconds of a command, output in ``log``."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
        memory = TreeMemory(process.pid)
        code = process.wait()
    return code, time.perf_counter() - started, *memory.stop()


def child_ours(argv: list[str]) -> int:
    """In a child process: index or run, timed around the CLI call (so start-up and imports are not counted)."""
    from CohortsLib import cli

    step, result_path, rest = argv[0], argv[1], argv[2:]
    started = time.perf_counter()
    code = cli.main(rest)
    Path(result_path).write_text(json.dumps({"step": step, "exit_code": code,
                                             "seconds": time.perf_counter() - started}))
    return code


def ours_step(step: str, cli_args: list[str], scratch: Path) -> dict:
    result = scratch / f"ours-{step}.json"
    code, wall, peak, cpu = run_child([sys.executable, __file__, "--child-ours", step, str(result), *cli_args],
                                      scratch / f"ours-{step}.log")
    if code != 0:
        raise SystemExit(f"error: ours {step} exited {code}; see {scratch / f'ours-{step}.log'}")
    return {**json.loads(result.read_text()), "wall_s": wall, "peak_bytes": peak, "cpu_s": cpu}


def run_once(db: Path, out: Path, workers: int, scratch: Path) -> dict:
    run = ours_step(f"run{workers}", ["run", "ml-dataset", "--db", str(db), "--output-dir", str(out),
                                      "--workers", str(workers), "--quiet"], scratch)
    wall = run["seconds"]
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    task_seconds = sum(float(r["seconds"] or 0) for r in rows)
    ok = sum(1 for r in rows if r["status"] == "ok")
    return {"workers": workers, "exit_code": run["exit_code"], "cases": len(rows), "ok": ok, "wall_s": round(wall, 2),
            "task_s": round(task_seconds, 2), "cases_per_minute": round(60 * len(rows) / wall, 1),
            # with N workers the tasks run N at a time: the runner's share is what the wall time adds to that
            "overhead_per_case_s": round((wall - task_seconds / workers) / max(1, len(rows)), 3),
            "overhead_fraction": round((wall - task_seconds / workers) / max(1e-9, task_seconds / workers), 3),
            "peak_mb": round(run["peak_bytes"] / 2**20, 1), "cpu_s": round(run["cpu_s"], 2)}


# ------------------------------------------------------------------------------------------------ scoring
def expected_pairs(cohort) -> tuple[dict[str, str], dict[str, str]]:
    """SOP UID -> CT series UID for every RTDOSE/RTSTRUCT the cohort pairs; trap dose SOP UID -> reason."""
    pairs = {}
    for ct, case in cohort.cases.items():
        for sop in case.dose_sop_uids | case.rtstruct_sop_uids:
            pairs[sop] = ct
    traps = {sop: u.reason for sop, u in cohort.unpaired.items() if u.reason in TRAP_DOSE_REASONS}
    return pairs, traps


def score(found: dict[str, list[str]], reported: set[str], cohort) -> dict:
    """``found``: SOP UID -> the CT series UIDs a tool put it with; ``reported``: SOP UIDs and paths it named."""
    expected, traps = expected_pairs(cohort)
    right = [sop for sop, ct in expected.items() if found.get(sop) == [ct]]
    wrong = [sop for sop, ct in expected.items() if found.get(sop) and found[sop] != [ct]]
    missed = [sop for sop in expected if not found.get(sop)]
    wrong += [sop for sop in traps if found.get(sop)]
    refused = [sop for sop in traps if not found.get(sop)]
    named = [sop for sop in refused if sop in reported or str(cohort.paths[sop]) in reported]
    return {"right": len(right), "wrong": len(wrong), "missed": len(missed), "expected": len(expected),
            "traps": len(traps), "traps_refused": len(refused), "traps_named": len(named),
            "wrong_sops": sorted(wrong), "missed_sops": sorted(missed)}


def patient_kinds(cohort, patients: int) -> dict[str, str]:
    """What the builder made of each patient (its normal kinds cycle; one patient per trap after them)."""
    from data_builders.cohort import NORMAL_KINDS

    traps = ("trap: dose, no CT on its FoR", "trap: two CTs on the dose's FoR", "trap: plan chain contradicts FoR",
             "trap: plan chain decides", "trap: SEG of a missing series", "trap: mixed-unit beams")
    ids = {case.patient_id for case in cohort.cases.values()} | {u.patient_id for u in cohort.unpaired.values()}
    kinds = {}
    for patient in sorted(ids):
        number = int(patient[3:])
        kinds[patient] = (NORMAL_KINDS[number % len(NORMAL_KINDS)] if number < patients
                          else traps[number - patients] if number - patients < len(traps) else "trap")
    return kinds


def per_patient(found: dict[str, list[str]], cohort) -> dict[str, str]:
    """Per patient: RTDOSE/RTSTRUCT pairs right of expected, wrong (W) and missed (M); trap doses refused or PAIRED."""
    expected, traps = expected_pairs(cohort)
    patient_of = {sop: case.patient_id for case in cohort.cases.values()
                  for sop in case.dose_sop_uids | case.rtstruct_sop_uids}
    cells: dict[str, list[int]] = {}
    for sop, ct in expected.items():
        cell = cells.setdefault(patient_of[sop], [0, 0, 0, 0, 0, 0])
        cell[0 if found.get(sop) == [ct] else 2 if found.get(sop) else 3] += 1
        cell[1] += 1
    for sop in traps:
        cell = cells.setdefault(cohort.unpaired[sop].patient_id, [0, 0, 0, 0, 0, 0])
        cell[5 if found.get(sop) else 4] += 1
    text = {}
    for patient, (right, total, wrong, missed, refused, paired) in cells.items():
        parts = [f"{right}/{total}"] if total else []
        parts += [f"W{wrong}"] * bool(wrong) + [f"M{missed}"] * bool(missed)
        parts += ["trap refused"] * bool(refused) + ["trap PAIRED"] * bool(paired)
        text[patient] = " ".join(parts)
    return text


def ours_pairs(db: Path) -> tuple[dict[str, list[str]], set[str]]:
    from DicomFidelityCommonLib.cohort import pair_cases

    result = pair_cases(db)
    found = {}
    for case in result.cases:
        for sop in [*case.dose_sop_uids, *case.rtstruct_sop_uids]:
            found.setdefault(sop, []).append(case.ct_series_uid)
    return found, {u.sop_instance_uid for u in result.unpaired} | {u.path for u in result.unpaired}


def our_doses(out: Path) -> dict[str, Path]:
    """CT series UID -> our dose on its grid, from each case's case.json."""
    doses = {}
    for description in out.glob("*/case.json"):
        case = json.loads(description.read_text())
        if (description.parent / "dose.nii.gz").exists():
            doses[case["ct_series_uid"]] = description.parent / "dose.nii.gz"
    return doses


def offset_variant(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["GridFrameOffsetVector"])
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    return "absolute" if offsets[0] != 0 else "descending" if offsets[-1] < 0 else "relative"


def dose_differences(cohort, ours: dict[str, Path], peer_pairs: list[dict]) -> dict:
    """Max |peer - ours| (Gy) per case whose every dose the peer paired right, the peer's resampled onto our grid
    when the grids differ."""
    import numpy as np
    import SimpleITK as sitk

    by_sop = {p["sop"]: p for p in peer_pairs if p["modality"] == "RTDOSE"}
    per_case, grids_differ = {}, 0
    for ct, case in cohort.cases.items():
        if not case.dose_sop_uids or case.mixed_units or ct not in ours:
            continue
        mine = [by_sop.get(sop) for sop in case.dose_sop_uids]
        if not all(p and p["ct_series_uids"] == [ct] and p["dose_on_ct"] for p in mine):
            continue
        reference = sitk.ReadImage(str(ours[ct]), sitk.sitkFloat32)
        total = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.float64)
        for p in mine:
            image = sitk.ReadImage(p["dose_on_ct"], sitk.sitkFloat32)
            same = (image.GetSize() == reference.GetSize()
                    and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
                    and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
                    and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-5))
            if not same:
                grids_differ += 1
                image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            total += sitk.GetArrayFromImage(image)
        diff = float(np.max(np.abs(total - sitk.GetArrayFromImage(reference))))
        variants = sorted({offset_variant(cohort.paths[sop]) for sop in case.dose_sop_uids})
        per_case[case.patient_id] = {"max_abs_gy": round(diff, 4), "variants": variants,
                                     "max_dose_gy": round(float(sitk.GetArrayViewFromImage(reference).max()), 3)}
    worst = max((c["max_abs_gy"] for c in per_case.values()), default=None)
    return {"cases": len(per_case), "max_abs_gy": worst, "doses_resampled_to_our_grid": grids_differ,
            "per_case": per_case}


# ------------------------------------------------------------------------------------------------ peers
def run_peer(name: str, tree: Path, scratch: Path, cohort, ours: dict[str, Path], patients: int) -> dict:
    venv, script, requirements = PEERS[name]
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        return {"tool": name, "measured": False,
                "why": f"{venv} missing: ./run.sh bench creates it from Testing/{requirements}"}
    result = scratch / f"{name}.json"
    code, wall, peak, cpu = run_child([str(python), str(REPO / "Testing" / "peers" / script), str(tree),
                                       str(scratch / name), str(result)], scratch / f"{name}.log")
    if code != 0 or not result.exists():
        tail = (scratch / f"{name}.log").read_text(errors="replace")[-600:]
        return {"tool": name, "measured": False, "why": f"exit {code}: {tail}"}
    data = json.loads(result.read_text())
    found = {p["sop"]: p["ct_series_uids"] for p in data["pairs"]}
    reported = {r["sop"] for r in data["reported"] if r.get("sop")} | {r["file"] for r in data["reported"]}
    return {"tool": name, "measured": True, "version": data["version"], "seconds": round(data["seconds"], 2),
            "s_per_patient": round(data["seconds"] / patients, 3), "import_s": round(data["import_seconds"], 2),
            "cpu_s": round(cpu, 2), "cpu_s_per_patient": round(cpu / patients, 3),
            "wall_s": round(wall, 2), "peak_mb": round(peak / 2**20, 1), "pairs": score(found, reported, cohort),
            "per_patient": per_patient(found, cohort),
            "dose": dose_differences(cohort, ours, data["pairs"]), "reported": len(data["reported"]),
            "reported_examples": sorted({r["why"][:160] for r in data["reported"]})[:12]}


def print_table(rows: list[dict]) -> None:
    print(f"{'tool':<16} {'s/patient':>9} {'cpu s/pt':>8} {'peak MB':>8} {'right':>6} {'wrong':>6} {'missed':>7} "
          f"{'traps refused/named':>20} {'dose max diff Gy':>17}")
    for r in rows:
        if not r.get("measured", True):
            print(f"{r['tool']:<16} not measured: {r['why']}")
            continue
        p, d = r["pairs"], r["dose"]
        diff = (f"reference ({d['cases']} cases)" if d.get("reference") else "-" if d["max_abs_gy"] is None
                else f"{d['max_abs_gy']:.4f} ({d['cases']} cases)")
        traps = f"{p['traps_refused']}/{p['traps_named']} of {p['traps']}"
        print(f"{r['tool']:<16} {r['s_per_patient']:>9.3f} {r['cpu_s_per_patient']:>8.3f} {r['peak_mb']:>8.0f} "
              f"{p['right']:>6} {p['wrong']:>6} "
              f"{p['missed']:>7} {traps:>20} {diff:>17}")


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-ours"]:
        return child_ours(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10, help="normal patients (6 trap patients are added)")
    parser.add_argument("--slices", type=int, default=40, help="CT slices per patient")
    parser.add_argument("--dose-frames", type=int, default=1000, help="RTDOSE frames (default: all the source has)")
    parser.add_argument("--peers", default="pydicer,imagetools", help="comma-separated, or 'none'")
    parser.add_argument("--quick", action="store_true", help="3 patients of 12 slices (+ traps): a smoke run")
    parser.add_argument("--json", default="cohort_speed.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.slices = 3, 12
    peers = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := set(peers) - set(PEERS):
        parser.error(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(PEERS)})")
    from datapaths import shared_data_dir

    from data_builders.cohort import build_cohort

    with tempfile.TemporaryDirectory(prefix="cohort-speed-") as folder:
        scratch = Path(folder)
        tree, db = scratch / "tree", scratch / "cohort.sqlite"
        started = time.perf_counter()
        cohort = build_cohort(tree, patients=args.patients, slices=args.slices, dose_frames=args.dose_frames,
                              seed=11, data=shared_data_dir())
        kinds = patient_kinds(cohort, args.patients)
        everyone = len(kinds)
        print(f"cohort of {args.patients} patients + traps ({everyone} patients, {len(cohort.dicom_files)} DICOM "
              f"files) built in {time.perf_counter() - started:.1f} s")
        index = ours_step("index", ["index", str(tree), "--db", str(db), "--quiet"], scratch)
        results = [run_once(db, scratch / f"out{workers}", workers, scratch) for workers in (1, 2)]
        one, two = results
        found, reported = ours_pairs(db)
        ours_doses = our_doses(scratch / "out1")
        ours_seconds = index["seconds"] + one["wall_s"]
        ours_cpu = index["cpu_s"] + one["cpu_s"]
        ours_row = {"tool": "dicomfidelity", "measured": True, "seconds": round(ours_seconds, 2),
                    "s_per_patient": round(ours_seconds / everyone, 3), "index_s": round(index["seconds"], 2),
                    "cpu_s": round(ours_cpu, 2), "cpu_s_per_patient": round(ours_cpu / everyone, 3),
                    "peak_mb": round(max(index["peak_bytes"] / 2**20, one["peak_mb"]), 1),
                    "pairs": score(found, reported, cohort), "per_patient": per_patient(found, cohort),
                    "dose": {"cases": len(ours_doses), "max_abs_gy": None, "reference": True, "per_case": {}}}
        peer_rows = []
        for name in peers:
            print(f"running {name} on the same tree ...", flush=True)
            peer_rows.append(run_peer(name, tree, scratch, cohort, ours_doses, everyone))

    speedup = two["cases_per_minute"] / max(1e-9, one["cases_per_minute"])
    print(f"{'workers':>8} {'cases':>6} {'ok':>4} {'wall s':>8} {'task s':>8} {'cases/min':>10} "
          f"{'overhead/case s':>16}")
    for r in results:
        print(f"{r['workers']:>8} {r['cases']:>6} {r['ok']:>4} {r['wall_s']:>8} {r['task_s']:>8} "
              f"{r['cases_per_minute']:>10} {r['overhead_per_case_s']:>16}")
    print(f"2 workers / 1 worker: {speedup:.2f}x (target >= 1.6x); runner overhead with 1 worker: "
          f"{100 * one['overhead_fraction']:.1f} % of the task time (target < 10 %)")
    print(f"\nper patient ({everyone} patients; ours: index + run, 1 worker; imports and start-up not counted):")
    print_table([ours_row, *peer_rows])
    measured = [row for row in [ours_row, *peer_rows] if row.get("measured")]
    print("\nper patient: RTDOSE + RTSTRUCT pairs right/expected, W wrong, M missed; trap doses refused or PAIRED")
    print(f"{'patient':<8} {'kind':<32} " + " ".join(f"{row['tool']:<16}" for row in measured))
    for patient, kind in kinds.items():
        print(f"{patient:<8} {kind:<32} " + " ".join(f"{row['per_patient'].get(patient, '-'):<16}" for row in measured))

    def all_right(row: dict) -> str:
        return "yes" if row["pairs"]["wrong"] == row["pairs"]["missed"] == 0 else "no"

    for peer in peer_rows:
        if peer.get("measured"):
            ratio = peer["s_per_patient"] / max(1e-9, ours_row["s_per_patient"])
            cpu_ratio = peer["cpu_s_per_patient"] / max(1e-9, ours_row["cpu_s_per_patient"])
            peer["ours_faster_x"], peer["ours_faster_cpu_x"] = round(ratio, 2), round(cpu_ratio, 2)
            print(f"ours/{peer['tool']}: {ratio:.1f}x faster per patient, {cpu_ratio:.1f}x in CPU seconds "
                  f"(target >= 2x); every pair right: ours {all_right(ours_row)}, {peer['tool']} {all_right(peer)}")
    Path(args.json).write_text(json.dumps({"runs": results, "speedup_2_workers": round(speedup, 2),
                                           "tools": [ours_row, *peer_rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
