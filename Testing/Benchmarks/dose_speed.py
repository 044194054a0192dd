"""Dose -> CT resampling speed on the dicompyler sample (152 CT slices 512x512, RTDOSE 129x91x98): ours vs plastimatch.

Both run as separate processes from the same inputs to the same output, in the same run:
  * plastimatch: `plastimatch convert --input-dose-img rtdose.dcm --fixed ct.nrrd --resize-dose
    --output-dose-img out.nrrd`
    (its --fixed needs an image file, so the CT is converted to ct.nrrd once, untimed);
  * ours, same inputs: `dosealign resample --dose rtdose.dcm --reference ct.nrrd --output out.nrrd`;
  * ours, from the DICOM CT folder (what users run): `--reference CT_FOLDER`.
plastimatch writes gzip NRRD; ours is timed with and without --compress. Also times our in-process resampling alone.
Prints ratios (ours / plastimatch, < 1 means faster) and writes JSON.

    .venv/bin/python Testing/Benchmarks/dose_speed.py [--data DIR] [--repeat 3] [--json dose_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def timed(command: list[str], repeat: int, env=None) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, timeout=900)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default="dose_speed.json")
    args = parser.parse_args(argv)
    sample = Path(args.data) / "dicompyler-sample"
    plastimatch = shutil.which("plastimatch")
    if not plastimatch:
        print("plastimatch not found (apt-get install plastimatch)", file=sys.stderr)
        return 1
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "SegmentationQA"), str(REPO / "DoseAlignment")]))
    ours = [sys.executable, "-m", "DoseAlignmentLib.cli", "resample", "--quiet", "--dose", str(sample / "rtdose.dcm")]
    with tempfile.TemporaryDirectory(prefix="dose_speed") as tmp:
        tmp = Path(tmp)
        ct_folder = tmp / "ct"
        ct_folder.mkdir()
        for path in sample.glob("ct.*.dcm"):
            (ct_folder / path.name).symlink_to(path)
        subprocess.run([plastimatch, "convert", "--input", str(ct_folder), "--output-img", str(tmp / "ct.nrrd")],
                       check=True, capture_output=True)
        runs = {
            "plastimatch (ct.nrrd -> gzip nrrd)": [plastimatch, "convert", "--input-dose-img",
                                                   str(sample / "rtdose.dcm"), "--fixed", str(tmp / "ct.nrrd"),
                                                   "--resize-dose", "--output-dose-img",
                                                   str(tmp / "plastimatch.nrrd")],
            "ours (ct.nrrd -> gzip nrrd)": ours + ["--reference", str(tmp / "ct.nrrd"), "--output", str(tmp / "a.nrrd"),
                                                   "--compress"],
            "ours (ct.nrrd -> nrrd)": ours + ["--reference", str(tmp / "ct.nrrd"), "--output", str(tmp / "b.nrrd")],
            "ours (DICOM CT folder -> nrrd)": ours + ["--reference", str(sample), "--output", str(tmp / "c.nrrd")],
        }
        subprocess.run(runs["ours (ct.nrrd -> nrrd)"], check=True, capture_output=True, env=env)  # warm the file cache
        results = {}
        for name, command in runs.items():
            times = timed(command, args.repeat, env)
            results[name] = {"median_s": statistics.median(times), "times_s": times}
            print(f"{name:38s} median {statistics.median(times):6.2f} s  ({', '.join(f'{t:.2f}' for t in times)})")

        sys.path[:0] = [str(REPO / "SegmentationQA"), str(REPO / "DoseAlignment")]
        from DoseAlignmentLib.align import read_reference
        from DoseAlignmentLib.resample import resample_dose
        from DoseAlignmentLib.rtdose import read_rtdose

        grid = read_rtdose(sample / "rtdose.dcm")
        reference = read_reference(sample)
        in_process = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            resample_dose(grid, reference.geometry)
            in_process.append(time.perf_counter() - start)
        results["ours in-process resample only"] = {"median_s": statistics.median(in_process), "times_s": in_process}
        print(f"{'ours in-process resample only':38s} median {statistics.median(in_process):6.2f} s")

    base = results["plastimatch (ct.nrrd -> gzip nrrd)"]["median_s"]
    ratios = {name: r["median_s"] / base for name, r in results.items() if not name.startswith("plastimatch")}
    for name, ratio in ratios.items():
        print(f"ratio {name} / plastimatch: {ratio:.2f}")
    document = {"benchmark": "dose_speed", "data": str(sample), "repeat": args.repeat, "cores": os.cpu_count(),
                "results": results, "ratio_to_plastimatch": ratios,
                "ours_no_slower": ratios["ours (ct.nrrd -> gzip nrrd)"] <= 1.0}
    Path(args.json).write_text(json.dumps(document, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
