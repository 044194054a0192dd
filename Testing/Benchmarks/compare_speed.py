"""Per-structure agreement metrics speed on the real TotalSegmentator labels (61 structures, 122x101x112 at 3 mm):
ours vs DeepMind's surface-distance (the definitions we follow), and optionally MedPy and seg-metrics, in one run.

Two "models" of one case: the labels as they are, and every label dilated by one voxel into the background. Every
tool computes, for the same structures, Dice, HD95, mean surface distance and (where it has it) surface Dice:
  * ours: ``compare_segmentations`` on the two LayeredSegmentations (pairwise only, no consensus), in process;
  * surface-distance, in process: per structure the full-grid masks, ``compute_surface_distances`` and its metrics;
  * MedPy / seg-metrics (their own venv, ``--peers-python``, ``--peers``): in a subprocess that loads the same
    arrays and times only the metric calls. Their definitions differ (voxel-face surfaces, unweighted distances):
    only their time is compared.
``--size`` lists nearest-neighbour upsampling factors (2 = 244x202x224 at 1.5 mm). Ours is checked against
surface-distance on every structure (max |difference| printed). Prints ratios (ours / peer, < 1 means faster).

    .venv/bin/python Testing/Benchmarks/compare_speed.py [--size 1,2] [--structures 12] [--repeat 1]
        [--peers-python /path/to/peers-venv/bin/python] [--json compare_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LABELS = "totalsegmentator/reference_files/example_seg_fast_force_split.nii.gz"

PEER_SCRIPT = r"""
import json, sys, time
import numpy as np
a = np.load(sys.argv[1]); b = np.load(sys.argv[2]); values = json.loads(sys.argv[3]); spacing = json.loads(sys.argv[4])
peers = sys.argv[5].split(",")
out = {}
try:
    if "medpy" not in peers:
        raise SystemExit
    from medpy.metric import binary
    start = time.perf_counter()
    for v in values:
        ma, mb = a == v, b == v
        binary.dc(ma, mb); binary.hd95(ma, mb, voxelspacing=spacing); binary.assd(ma, mb, voxelspacing=spacing)
    out["medpy"] = time.perf_counter() - start
except SystemExit:
    pass
except Exception as error:  # report, do not fail the whole benchmark
    out["medpy_error"] = repr(error)
try:
    if "seg-metrics" not in peers:
        raise SystemExit
    import seg_metrics.seg_metrics as sg
    start = time.perf_counter()
    sg.write_metrics(labels=values, gdth_img=a, pred_img=b, spacing=spacing[::-1], metrics=["dice", "hd95", "msd"])
    out["seg-metrics"] = time.perf_counter() - start
except SystemExit:
    pass
except Exception as error:
    out["seg-metrics_error"] = repr(error)
print(json.dumps(out))
"""


def load_labels(data: Path, factor: int):
    import SimpleITK as sitk

    sys.path[:0] = [str(REPO / "DicomFidelityCommon"), str(REPO / "SegmentationQA")]
    from DicomFidelityCommonLib.geometry import VolumeGeometry

    image = sitk.ReadImage(str(data / LABELS))
    labels = sitk.GetArrayFromImage(image)
    geometry = VolumeGeometry.from_sitk(image)
    if factor > 1:
        labels = labels.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
        affine = geometry.affine_lps.copy()
        affine[:3, :3] /= factor
        geometry = VolumeGeometry(labels.shape, affine)
    return labels, geometry


def dilate_into_background(labels: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return np.where(labels > 0, labels, ndimage.grey_dilation(labels, size=(3, 3, 3)))


def time_ours(labels, dilated, geometry, values, repeat):
    from SegmentationQALib.compare import ComparisonOptions, compare_segmentations
    from SegmentationQALib.segmentation import LayeredSegmentation, Segment

    def model(layer):
        return LayeredSegmentation(geometry, [layer], [Segment(f"label_{v}", 0, v) for v in values])

    models = [("labels", model(labels)), ("dilated", model(dilated))]
    options = ComparisonOptions(min_voters=len(models) + 1)  # pairwise metrics only
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = compare_segmentations(models, options)
        times.append(time.perf_counter() - start)
    return times, {row.structure: row.metrics for row in result.rows}


def time_surface_distance(labels, dilated, spacing_kji, values, repeat):
    if not hasattr(np, "Inf"):
        np.Inf = np.inf  # surface-distance 0.1 predates numpy 2
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import surface_distance as sd

    times, values_out = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        for v in values:
            ma, mb = labels == v, dilated == v
            s = sd.compute_surface_distances(ma, mb, spacing_kji)
            values_out[f"label_{v}"] = {"dice": sd.compute_dice_coefficient(ma, mb),
                                        "hd95_mm": sd.compute_robust_hausdorff(s, 95),
                                        "asd": sd.compute_average_surface_distance(s),
                                        "surface_dice": sd.compute_surface_dice_at_tolerance(s, 2.0)}
        times.append(time.perf_counter() - start)
    return times, values_out


def max_difference(ours, theirs) -> float:
    worst = 0.0
    for name, reference in theirs.items():
        metrics = ours[name]
        pairs = [(metrics.dice, reference["dice"]), (metrics.hd95_mm, reference["hd95_mm"]),
                 (metrics.asd_a_to_b_mm, reference["asd"][0]), (metrics.asd_b_to_a_mm, reference["asd"][1]),
                 (metrics.surface_dice, reference["surface_dice"])]
        worst = max(worst, max(abs(float(a) - float(b)) for a, b in pairs))
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--size", default="1,2", help="upsampling factors, comma-separated (1 = the 3 mm grid)")
    parser.add_argument("--structures", type=int, default=12, help="structures timed (evenly spread; 0 = all 61)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--peers-python", default=None, help="python of a venv with medpy and seg-metrics")
    parser.add_argument("--peers", default="medpy",
                        help="peers run with --peers-python: medpy, seg-metrics (seg-metrics took 21 min for the 61 "
                             "structures at 3 mm on 2 cores, so it is opt-in)")
    parser.add_argument("--json", default="compare_speed.json")
    args = parser.parse_args(argv)
    document = {"benchmark": "compare_speed", "data": args.data, "cores": os.cpu_count(), "sizes": {}}
    for factor in (int(f) for f in args.size.split(",")):
        labels, geometry = load_labels(Path(args.data), factor)
        dilated = dilate_into_background(labels)
        values = [int(v) for v in np.unique(labels) if v]
        if args.structures and args.structures < len(values):
            values = [values[i] for i in np.linspace(0, len(values) - 1, args.structures).round().astype(int)]
        spacing_kji = tuple(float(s) for s in geometry.spacing[::-1])
        print(f"grid {labels.shape} at {spacing_kji[0]:.2f} mm, {len(values)} structures, labels vs dilated")
        results = {}
        time_ours(labels, dilated, geometry, values[:1], 1)  # untimed: imports and the surfel table, as for peers
        ours_times, ours_values = time_ours(labels, dilated, geometry, values, args.repeat)
        results["ours"] = ours_times
        sd_times, sd_values = time_surface_distance(labels, dilated, spacing_kji, values, args.repeat)
        results["surface-distance"] = sd_times
        difference = max_difference(ours_values, sd_values)
        if args.peers_python:
            with tempfile.TemporaryDirectory(prefix="compare_speed") as tmp:
                np.save(Path(tmp) / "a.npy", labels)
                np.save(Path(tmp) / "b.npy", dilated)
                for _ in range(args.repeat):
                    command = [args.peers_python, "-c", PEER_SCRIPT, str(Path(tmp) / "a.npy"), str(Path(tmp) / "b.npy"),
                               json.dumps(values), json.dumps(spacing_kji), args.peers]
                    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
                    if done.returncode != 0:
                        print(f"peers failed: {done.stderr[-400:]}", file=sys.stderr)
                        break
                    for name, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                        if name.endswith("_error"):
                            print(f"{name}: {value}", file=sys.stderr)
                        else:
                            results.setdefault(name, []).append(value)
        base = statistics.median(results["ours"])
        entry = {"shape": list(labels.shape), "spacing_mm": spacing_kji[0], "structures": len(values),
                 "max_abs_difference_to_surface_distance": difference, "results": {}, "ratio_ours_to_peer": {}}
        for name, times in results.items():
            median = statistics.median(times)
            entry["results"][name] = {"median_s": median, "times_s": times}
            print(f"  {name:18s} median {median:8.3f} s  ({median / len(values) * 1000:7.1f} ms per structure)")
            if name != "ours":
                entry["ratio_ours_to_peer"][name] = base / median
                print(f"  ratio ours / {name}: {base / median:.3f}")
        print(f"  max |ours - surface-distance| over Dice, HD95, ASD both ways, surface Dice: {difference:.2e}")
        document["sizes"][str(factor)] = entry
    Path(args.json).write_text(json.dumps(document, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
