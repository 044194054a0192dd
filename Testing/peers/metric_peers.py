"""Times a per-structure metric peer (MedPy, seg-metrics, platipy) on given structure pairs; run in the peers' own
environment (.venv-metric-peers, Testing/requirements-metric-peers.txt) by Testing/Benchmarks/compare_speed.py.

    python metric_peers.py TOOL ARRAYS.npz PAIRS.json

ARRAYS.npz holds one label volume per model (indexed [slice, row, column], same grid); PAIRS.json is
{"spacing_kji": [...], "tolerance_mm": 2.0, "pairs": [[model_a, model_b, label value], ...]}. Each tool computes,
per pair, what it offers of Dice, HD95, mean surface distance and surface Dice, from full-grid masks as its users
call it; only those calls (mask building included) are timed, never the loading. Prints one JSON line:
{"tool", "seconds", "cpu_s", "comparisons", "version"} (or "error").
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict

import numpy as np


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since ``start``: CPU counts every thread (SimpleITK filters use all cores)."""
    return time.perf_counter() - start[0], time.process_time() - start[1]


def run_medpy(arrays, pairs, spacing, tolerance):
    from medpy.metric import binary

    start = _clock()
    for model_a, model_b, value in pairs:
        a, b = arrays[model_a] == value, arrays[model_b] == value
        binary.dc(a, b)
        binary.hd95(a, b, voxelspacing=spacing)
        binary.assd(a, b, voxelspacing=spacing)
    return _since(start), len(pairs)


def run_seg_metrics(arrays, pairs, spacing, tolerance):
    import seg_metrics.seg_metrics as sg

    by_models = defaultdict(list)  # seg-metrics takes one image pair and a list of labels
    for model_a, model_b, value in pairs:
        by_models[(model_a, model_b)].append(int(value))
    start = _clock()
    for (model_a, model_b), values in by_models.items():
        sg.write_metrics(labels=values, gdth_img=arrays[model_a], pred_img=arrays[model_b], spacing=spacing[::-1],
                         metrics=["dice", "hd95", "msd"])
    return _since(start), len(pairs)


def run_platipy(arrays, pairs, spacing, tolerance):
    import SimpleITK as sitk
    from platipy.imaging.label.comparison import compute_metric_dsc, compute_surface_dsc, compute_surface_metrics

    def image(mask):
        result = sitk.GetImageFromArray(mask.astype(np.uint8))
        result.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        return result

    start = _clock()
    for model_a, model_b, value in pairs:
        a, b = image(arrays[model_a] == value), image(arrays[model_b] == value)
        compute_metric_dsc(a, b)
        compute_surface_metrics(a, b)
        compute_surface_dsc(a, b, tau=tolerance)
    return _since(start), len(pairs)


TOOLS = {"medpy": (run_medpy, "medpy"), "seg-metrics": (run_seg_metrics, "seg_metrics"),
         "platipy": (run_platipy, "platipy")}


def main(argv) -> int:
    tool, arrays_path, pairs_path = argv
    spec = json.loads(open(pairs_path).read())
    with np.load(arrays_path) as data:
        arrays = {name: data[name] for name in data.files}
    run, module = TOOLS[tool]
    try:
        from importlib.metadata import version

        (seconds, cpu), count = run(arrays, [tuple(p) for p in spec["pairs"]], tuple(spec["spacing_kji"]),
                                    float(spec["tolerance_mm"]))
        print(json.dumps({"tool": tool, "seconds": seconds, "cpu_s": cpu, "comparisons": count,
                          "version": version(module.replace("_", "-"))}))
    except Exception as error:  # reported in the benchmark's table, not a crash of the whole run
        print(json.dumps({"tool": tool, "error": repr(error)[:300]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
