"""DicomFidelity demo: the main job on real data, through the same CLIs users run, with a short report.

    ./run.sh demo [--data DIR] [--output DIR]

Uses ../shared/data (or --data). Each step writes real DICOM/NRRD/NPZ files, every DICOM file written is checked
with dciodvfy, and demo-output/report.md summarises what happened (timings, segment counts, verdicts, dose).
Without real data it builds a small synthetic case and says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def run(step: str, command: list[str], log: list[dict], json_path: Path | None = None) -> dict | None:
    """Run one CLI step, keep its exit code, time and JSON result for the report."""
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    result = json.loads(json_path.read_text()) if json_path and json_path.exists() else None
    entry = {"step": step, "command": " ".join(str(c) for c in command), "exit_code": completed.returncode,
             "wall_seconds": round(elapsed, 2), "stdout": completed.stdout.strip()[-500:],
             "stderr_tail": completed.stderr.strip().splitlines()[-3:], "result": result}
    log.append(entry)
    status = "ok" if completed.returncode == 0 else f"FAILED ({completed.returncode})"
    print(f"[{status}] {step} ({elapsed:.1f} s)")
    if completed.returncode != 0:
        print("   " + "\n   ".join(completed.stderr.strip().splitlines()[-3:]))
    return result


def dciodvfy(paths: list[Path]) -> dict[str, list[str]]:
    """Error lines per file (empty lists mean clean); deflated files are checked inflated, as in the tests."""
    sys.path.insert(0, str(REPO / "Testing"))
    from validators import dciodvfy_errors

    return {str(path): dciodvfy_errors(path) for path in paths}


def synthetic_data(folder: Path) -> Path:
    """A small CT-like NIfTI with an overlapping-free label volume, when no real data is available."""
    import numpy as np
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = np.mgrid[0:40, 0:96, 0:96]
    ct = (-1000 + 1000 * (((x - 48) ** 2 + (y - 48) ** 2) < 40 ** 2)).astype(np.int16)
    labels = np.zeros(ct.shape, np.uint8)
    labels[((x - 40) ** 2 + (y - 48) ** 2 + (z - 20) ** 2) < 12 ** 2] = 1
    labels[((x - 62) ** 2 + (y - 50) ** 2 + (z - 18) ** 2) < 8 ** 2] = 2
    for name, array in (("ct.nii.gz", ct), ("labels.nii.gz", labels)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.5, 1.5, 2.5))
        image.SetOrigin((-72.0, -72.0, -50.0))
        sitk.WriteImage(image, str(folder / name))
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=REPO / "demo-output")
    args = parser.parse_args(argv)
    out = args.output
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    segqa, dosealign = str(BIN / "segqa"), str(BIN / "dosealign")
    log: list[dict] = []
    notes: list[str] = []
    data = args.data
    real = data.is_dir() and (data / "totalsegmentator").is_dir()
    if real:
        ts = data / "totalsegmentator/reference_files"
        labels, ct = ts / "example_seg_fast_force_split.nii.gz", ts / "example_ct.nii.gz"
        notes.append(f"real data from {data}")
    else:
        synthetic = synthetic_data(out / "synthetic-input")
        labels, ct = synthetic / "labels.nii.gz", synthetic / "ct.nii.gz"
        notes.append(f"no real data at {data}: a synthetic CT and labels were built instead")

    # 1. Many-label segmentation on a NIfTI CT -> LABELMAP SEG + new reference series -> back to .seg.nrrd
    seg_dir = out / "1-totalsegmentator-seg"
    exported = run("export 61 TotalSegmentator labels as DICOM SEG with organ names and SNOMED codes "
                   "(reference CT written as a new series)",
                   [segqa, "export-seg", "--segmentation", labels, "--reference", ct, "--output-dir", seg_dir,
                    "--export-reference", "--algorithm-type", "automatic", "--labels", "totalsegmentator:total",
                    "--json", out / "1-export.json", "--quiet"],
                   log, out / "1-export.json")
    loaded = None
    if exported:
        loaded = run("load that SEG back into a segmentation and save .seg.nrrd",
                     [segqa, "load-seg", exported["seg_path"], "--output", seg_dir / "loaded.seg.nrrd",
                      "--json", out / "1-load.json", "--quiet"], log, out / "1-load.json")

    # 2. Overlapping segments (dcmqi sample) -> BINARY SEG, overlaps kept
    overlap = None
    if real:
        dcmqi = data / "dcmqi/segmentations"
        overlap = run("re-export dcmqi's 5 overlapping segments as BINARY SEG on its 3-slice CT",
                      [segqa, "export-seg", "--segmentation", dcmqi / "partial_overlaps.dcm", "--reference",
                       dcmqi / "ct-3slice", "--output-dir", out / "2-overlaps-seg", "--json", out / "2-export.json",
                       "--quiet"], log, out / "2-export.json")

    # 3. RTSTRUCT fidelity: what a planar-contour export would lose, per segment, with pictures
    fidelity = run("check what an RTSTRUCT export would lose, per segment (HTML report with pictures)",
                   [segqa, "rtstruct-check", "--segmentation", labels, "--reference", ct,
                    "--report", out / "3-rtstruct-report", "--json", out / "3-rtstruct.json"],
                   log, out / "3-rtstruct.json")

    # 4. Dose onto the CT grid for ML
    dose = None
    if real:
        sample = data / "dicompyler-sample"
        dose = run("resample the Pinnacle RTDOSE onto the 152-slice CT grid (NPZ for ML, HTML report)",
                   [dosealign, "resample", "--dose", sample / "rtdose.dcm", "--reference", sample,
                    "--output", out / "4-dose-on-ct.npz", "--rtdose-output", out / "4-dose-on-ct.rtdose.dcm",
                    "--report", out / "4-dose-report", "--json", out / "4-dose.json", "--quiet"],
                   log, out / "4-dose.json")

    written_dicom = sorted(p for p in out.rglob("*.dcm"))
    # every written object: each SEG/RTSTRUCT/RTDOSE, and the first and last slice of each written series
    to_check = [p for p in written_dicom if p.parent.name != "reference"]
    for folder in {p.parent for p in written_dicom if p.parent.name == "reference"}:
        slices = sorted(folder.glob("*.dcm"))
        to_check += [slices[0], slices[-1]]
    validation = dciodvfy(to_check)
    errors = {path: lines for path, lines in validation.items() if lines}

    lines = ["# DicomFidelity demo report", "", *[f"- {note}" for note in notes], ""]
    lines += ["| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {entry['step']} | {entry['exit_code']} | {entry['wall_seconds']} |" for entry in log]
    if exported:
        lines += ["", "## DICOM SEG", f"- {exported['seg_path']}: {exported['seg_type'].upper()}, "
                  f"{len(exported['segments'])} segments, {exported['file_size_bytes'] / 1e6:.2f} MB, "
                  f"{exported['compression']}; in-process {exported['timings_seconds'].get('in_process_total')} s",
                  f"- reference series written: {len(exported['reference_paths'])} slices",
                  f"- segments named from totalsegmentator:total, e.g. "
                  f"{', '.join(s['label'] for s in exported['segments'][:5])}, ..."]
        if loaded:
            same = [a["voxel_count"] for a in exported["segments"]] == [b["voxel_count"] for b in loaded["segments"]]
            lines.append(f"- loaded back: {len(loaded['segments'])} segments, voxel counts identical: {same}")
    if overlap:
        lines.append(f"- overlaps: {overlap['seg_type'].upper()} SEG with {len(overlap['segments'])} segments")
    if fidelity:
        segments = fidelity.get("segments", [])
        verdicts: dict[str, int] = {}
        for segment in segments:
            verdicts[segment["verdict"]] = verdicts.get(segment["verdict"], 0) + 1
        lossy = [s for s in segments if s["verdict"] == "lossy"][:5]
        lines += ["", "## RTSTRUCT fidelity", f"- verdicts: {verdicts}",
                  "- lossy, for example: " + "; ".join(
                      f"{s['name']} ({', '.join(s.get('reasons', [])[:2])}; contour volume "
                      f"{s.get('contour_volume_change_percent', 0):+.2f}%)" for s in lossy),
                  f"- report: {out / '3-rtstruct-report' / 'index.html'}"]
    if dose:
        lines += ["", "## Dose on the CT grid", f"- units {dose.get('dose_units')}, max dose in "
                  f"{dose.get('max_dose_in')} out {dose.get('max_dose_out')}, fraction of dose grid outside the CT "
                  f"{dose.get('fraction_outside')}",
                  f"- outputs: {', '.join(map(str, dose.get('outputs', {}).values()))}"]
    lines += ["", "## Validation", f"- dciodvfy on {len(to_check)} written DICOM objects: "
              f"{'no errors' if not errors else f'{len(errors)} with errors'}"]
    lines += [f"  - {path}: {msgs[:3]}" for path, msgs in errors.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"notes": notes, "steps": log, "dciodvfy": validation}, indent=2))
    print(f"\nreport: {out / 'report.md'}")
    failed = [entry for entry in log if entry["exit_code"] != 0]
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
