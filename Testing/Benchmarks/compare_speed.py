"""Issue 14 benchmark: multi-model comparison speed on real TotalSegmentator labels, against the load of the models
and against surface-distance, MedPy, seg-metrics and platipy on the same structure pairs, in one run.

The case: TotalSegmentator's example_seg_fast_force_split.nii.gz (61 structures, 122x101x112 at 3 mm) split into 117
structures (TotalSegmentator's class count) by halving the largest structure along its longest axis until there
are 117 (seg_speed.split_into; a structure "liver" becomes "liver 1", "liver 2", ...). Default: on its own 3 mm grid;
``--full``: nearest-neighbour resampled to 512x512x200 (0.71 x 0.71 x 1.68 mm, seg_speed.target_grid). Three
synthetic models of it:
  * as_is:   the labels;
  * dilated: every structure grown by one voxel (26-neighbourhood) into the background;
  * shifted: every structure moved by SHIFT_KJI voxels, and REMOVED structures (5 of 117) missing.

Timed (medians of ``--repeat``):
  * load: the three models written as files and loaded the way ``segqa compare`` loads them (logic
    loadSegmentationFile into segmentation nodes, then layeredSegmentationFromNode onto the grid), for label NIfTI
    with its description (.dcmqi.json, write_description_beside) and for DICOM SEG (our writer, on a CT series
    written for the grid). For the SEG, also our core reader alone (load_seg, no node).
  * ours: ``compare_segmentations`` (compare/case.py) on the loaded models: structure matching, every model pair,
    the majority consensus and every model against it: all the metric work ``segqa compare`` does (its report
    writing is not included).
  * peers, on exactly our (model A, model B, structure) comparisons, the consensus given as a fourth label volume
    (for three label maps the per-voxel majority is itself a label map, checked against ours): surface-distance in
    process (full-grid masks per structure, its usual use), MedPy, seg-metrics and platipy each in a subprocess of
    their own environment (Testing/peers/metric_peers.py; ``--peers-python``). Each computes Dice, HD95, mean surface
    distance and surface Dice where it has them. A peer too slow for every comparison is timed on the comparisons of
    a stated subset of structures (evenly spread) and extrapolated linearly per comparison: both are printed.
Ours is checked against surface-distance on every comparison it ran (max |difference| of Dice, HD95, both directed
ASDs and surface Dice must stay below 1e-6 mm).

Default run (3 mm grid) about 3 min on 2 cores; ``--full`` about 20 min, nearly all of it the peers' subsets (MedPy
took ~50 s per comparison at 512x512x200). With ``--full``, seg-metrics is opt-in
(``--peers medpy,platipy,seg-metrics``): its one structure (6 comparisons) had not finished after 28 min.

    .venv/bin/python Testing/Benchmarks/compare_speed.py [--full] [--repeat 3] [--peers-python PY]
        [--sd-structures N] [--peer-structures medpy=N,platipy=N,seg-metrics=N] [--json compare_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "DicomFidelityCommon"), str(REPO / "SegmentationQA"), str(REPO / "Testing" / "Benchmarks")]
from seg_speed import split_into, target_grid, upsample  # noqa: E402  (the issue 3 benchmark's case builder)

FILES = "totalsegmentator/reference_files"
LABELS = f"{FILES}/example_seg_fast_force_split.nii.gz"
STRUCTURES = 117
FULL_GRID = (512, 200)  # rows = columns, slices
SHIFT_KJI = (1, 2, 2)  # voxels: slice, row, column
REMOVED = 5  # structures missing from the shifted model (evenly spread)
METRIC_PEERS_PYTHON = REPO / ".venv-metric-peers" / "bin" / "python"
PEER_SCRIPT = REPO / "Testing" / "peers" / "metric_peers.py"
TOLERANCE_MM = 2.0
# structures (of 117) each tool is timed on; None = all. seg-metrics (SimpleITK filters on the full grid per label)
# took ~850 s for 61 labels at 3 mm: it only ever gets a small subset.
DEFAULT_SUBSETS = {False: {"surface-distance": None, "medpy": 8, "platipy": 8, "seg-metrics": 1},
                   True: {"surface-distance": 12, "medpy": 2, "platipy": 4, "seg-metrics": 1}}


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> np.ndarray:
    """[wall, CPU] seconds since ``start``. The machine may be shared: CPU time is the steadier measure of our
    single-threaded work (it counts every thread of multi-threaded peers, so for those wall time is the fairer)."""
    return np.array([time.perf_counter() - start[0], time.process_time() - start[1]])


def median2(runs: list) -> tuple[float, float]:
    return float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs]))


# ---------------------------------------------------------------------------------------------- the case
def build_case(data: Path, full: bool):
    """(geometry, 117-label volume, name per value, CT volume on the same grid)."""
    import SimpleITK as sitk

    from DicomFidelityCommonLib.geometry import VolumeGeometry

    label_image = sitk.ReadImage(str(data / LABELS))
    ct_image = sitk.ReadImage(str(data / FILES / "example_ct.nii.gz"))
    source = VolumeGeometry.from_sitk(label_image)
    labels = sitk.GetArrayFromImage(label_image).astype(np.uint16)
    ct = sitk.GetArrayFromImage(ct_image).astype(np.int16)
    class_names = list(json.loads((data / FILES / "example_seg_fast" / "statistics.json").read_text()))
    split, parents = split_into(labels, STRUCTURES)
    names, pieces = {}, {}
    for value, parent in enumerate(parents, start=1):
        pieces[parent] = pieces.get(parent, 0) + 1
        organ = class_names[parent - 1] if 0 < parent <= len(class_names) else f"label_{parent}"
        names[value] = f"{organ} {pieces[parent]}"
    if full:
        geometry, lookups = target_grid(source, *FULL_GRID)
        split, ct = upsample(split, lookups), upsample(ct, lookups)
    else:
        geometry = source
    return geometry, split, names, ct


def make_models(labels: np.ndarray) -> tuple[dict[str, np.ndarray], list[int]]:
    """The three synthetic models (label volumes) and the values missing from ``shifted``."""
    from scipy import ndimage

    values = [int(v) for v in np.unique(labels) if v]
    removed = [values[i] for i in np.linspace(0, len(values) - 1, REMOVED + 2).round().astype(int)[1:-1]]
    dilated = np.where(labels > 0, labels, ndimage.grey_dilation(labels, size=(3, 3, 3)))
    shifted = np.zeros_like(labels)
    k, j, i = SHIFT_KJI
    shifted[k:, j:, i:] = labels[:labels.shape[0] - k, :labels.shape[1] - j, :labels.shape[2] - i]
    shifted[np.isin(shifted, removed)] = 0
    return {"as_is": labels, "dilated": dilated, "shifted": shifted}, removed


def majority_labels(models: dict[str, np.ndarray]) -> np.ndarray:
    """Per-voxel majority of three label maps (a structure needs two votes; a model missing it votes for none)."""
    a, b, c = models.values()
    return np.where((a == b) | (a == c), a, np.where(b == c, b, 0))


def layered(geometry, array: np.ndarray, names: dict[int, str]):
    from SegmentationQALib.segmentation import LayeredSegmentation

    present = {int(v) for v in np.unique(array) if v}
    return LayeredSegmentation.from_label_volume(geometry, array, {v: n for v, n in names.items() if v in present})


def write_models(work: Path, geometry, models: dict[str, np.ndarray], names: dict[int, str], ct: np.ndarray,
                 dicom: bool) -> tuple[dict[str, dict[str, tuple[Path, Path | None]]], dict]:
    """Per format, per model: (file, label description or None); and per format the reference grid segqa compare
    would load them onto (for the SEG: the written CT series', whose slice order may be the reverse)."""
    import SimpleITK as sitk

    from SegmentationQALib.labels import write_description_beside
    from SegmentationQALib.reference_series import write_reference_series
    from SegmentationQALib.seg.write import write_seg

    files: dict[str, dict[str, tuple[Path, Path | None]]] = {"nifti": {}}
    grids = {"nifti": geometry}
    series = write_reference_series(ct, geometry, work / "ct") if dicom else None
    if dicom:
        files["dicom_seg"] = {}
        grids["dicom_seg"] = series.geometry
    for name, array in models.items():
        seg = layered(geometry, array, names)
        path = work / f"{name}.nii.gz"
        sitk.WriteImage(geometry.to_sitk(array), str(path), True)
        description = [p for p in write_description_beside(seg, path) if p.name.endswith(".dcmqi.json")][0]
        files["nifti"][name] = (path, description)
        if dicom:
            write_seg(seg, series, work / f"{name}.seg.dcm")
            files["dicom_seg"][name] = (work / f"{name}.seg.dcm", None)
    return files, grids


# ---------------------------------------------------------------------------------------------- timing ours
def load_like_segqa_compare(files: dict[str, tuple[Path, Path | None]], geometry):
    """The three models as ``segqa compare`` gets them: (seconds, [(name, LayeredSegmentation)])."""
    import slicer

    from SegmentationQALib.logic import SegmentationQAMRMLLogic

    logic = SegmentationQAMRMLLogic(slicer.vtkMRMLScene())
    start = clock()
    nodes = [(name, logic.loadSegmentationFile(path, labels=None if labels is None else str(labels), warnings=[]))
             for name, (path, labels) in files.items()]
    models = [(name, logic.layeredSegmentationFromNode(node, geometry, [])) for name, node in nodes]
    seconds = since(start)
    # untimed, as segqa compare does when it ends (cli.releaseLogics): otherwise the scene's teardown, ~0.1 s per
    # segment, would land in whichever later step the garbage collector picks
    logic.releaseSegmentations()
    return seconds, models


def core_seg_load(files: dict[str, tuple[Path, Path | None]]) -> tuple[float, float]:
    from SegmentationQALib.seg.read import load_seg

    start = clock()
    for path, _ in files.values():
        load_seg(path)
    return since(start)


def time_ours(models, repeat: int):
    from SegmentationQALib.compare import ComparisonOptions, compare_segmentations

    times, result = [], None
    for _ in range(repeat):
        start = clock()
        result = compare_segmentations(models, ComparisonOptions(tolerance_mm=TOLERANCE_MM))
        times.append(since(start))
    return times, result


def our_comparisons(result, models) -> dict[tuple[str, str, int], object]:
    """(model A, model B, label value) -> PairMetrics, every row of the result."""
    by_name = dict(models)
    value_of = {}
    for structure in result.matching.structures:
        values = {by_name[m].segments[i].label_value for m, i in structure.members.items()}
        if len(values) != 1:
            raise SystemExit(f"matching put different labels together in {structure.label!r}: {values}")
        value_of[structure.label] = values.pop()
    return {(row.model_a, row.model_b, value_of[row.structure]): row.metrics for row in result.rows}


# ---------------------------------------------------------------------------------------------- timing peers
def subset_pairs(pairs: list[tuple[str, str, int]], values: list[int], count: int | None):
    """The pairs of ``count`` structures evenly spread over ``values`` (all when None)."""
    if count is None or count >= len(values):
        return pairs
    keep = {values[i] for i in np.linspace(0, len(values) - 1, count).round().astype(int)}
    return [p for p in pairs if p[2] in keep]


def time_surface_distance(arrays, pairs, spacing_kji, ours):
    if not hasattr(np, "Inf"):
        np.Inf = np.inf  # surface-distance 0.1 predates numpy 2
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import surface_distance as sd

    worst = 0.0
    spent = np.zeros(2)
    for model_a, model_b, value in pairs:
        start = clock()
        a, b = arrays[model_a] == value, arrays[model_b] == value
        s = sd.compute_surface_distances(a, b, spacing_kji)
        theirs = (sd.compute_dice_coefficient(a, b), sd.compute_robust_hausdorff(s, 95),
                  *sd.compute_average_surface_distance(s), sd.compute_surface_dice_at_tolerance(s, TOLERANCE_MM))
        spent += since(start)
        m = ours[(model_a, model_b, value)]
        mine = (m.dice, m.hd95_mm, m.asd_a_to_b_mm, m.asd_b_to_a_mm, m.surface_dice)
        worst = max(worst, max(abs(float(x) - float(y)) for x, y in zip(mine, theirs)))
    return tuple(spent), worst


def time_peer(python: str, tool: str, arrays_path: Path, pairs, spacing_kji, work: Path) -> dict:
    spec = work / f"pairs-{tool}.json"
    spec.write_text(json.dumps({"spacing_kji": list(spacing_kji), "tolerance_mm": TOLERANCE_MM,
                                "pairs": [list(p) for p in pairs]}))
    done = subprocess.run([python, str(PEER_SCRIPT), tool, str(arrays_path), str(spec)], capture_output=True,
                          text=True, timeout=7200)
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": (done.stderr or "no output").strip().splitlines()[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def markdown_table(document: dict) -> str:
    c = document
    grid = "x".join(str(n) for n in c["shape"][::-1])
    lines = [f"Grid {grid} ({c['spacing_mm']}), {c['structures']} structures, 3 models "
             f"(as is / dilated 1 voxel / shifted {SHIFT_KJI} voxels with {REMOVED} structures removed): "
             f"{c['comparisons']} comparisons (every model pair and every model vs the majority consensus), "
             f"{c['cores']} cores; wall and CPU seconds, medians of {c['repeat']}.", "",
             "| step | tool | wall (s) | CPU (s) | comparisons timed | all comparisons, wall (s) | ours / this |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    ours, ours_cpu = c["ours_s"], c["ours_cpu_s"]
    for kind, entry in c["load"].items():
        wall, cpu = entry["segqa_compare_s"], entry["segqa_compare_cpu_s"]
        lines.append(f"| load 3 models ({kind}) | our loader, as segqa compare | {wall:.2f} | {cpu:.2f} | - | - | "
                     f"compare / load = {ours / wall:.1f} (CPU {ours_cpu / cpu:.1f}) |")
        if "core_s" in entry:
            wall, cpu = entry["core_s"], entry["core_cpu_s"]
            lines.append(f"| load 3 models ({kind}) | our core SEG reader (load_seg) | {wall:.2f} | {cpu:.2f} | - "
                         f"| - | compare / load = {ours / wall:.1f} (CPU {ours_cpu / cpu:.1f}) |")
    lines.append(f"| compare | **ours** (compare_segmentations) | {ours:.2f} | {ours_cpu:.2f} | {c['comparisons']} | "
                 f"{ours:.2f} | 1 |")
    for tool, entry in c["peers"].items():
        if "error" in entry:
            lines.append(f"| compare | {tool} | failed: {entry['error'][:80]} | | | | |")
            continue
        extrapolated = "" if entry["comparisons"] == c["comparisons"] else " (extrapolated)"
        lines.append(f"| compare | {tool} {entry.get('version') or ''} | {entry['seconds']:.2f} | "
                     f"{entry['cpu_s']:.2f} | {entry['comparisons']} | {entry['all_s']:.1f}{extrapolated} | "
                     f"{ours / entry['all_s']:.2g} (ours {entry['all_s'] / ours:.3g}x faster; CPU "
                     f"{entry['all_cpu_s'] / ours_cpu:.3g}x) |")
    lines.append("")
    lines.append(f"Max |ours - surface-distance| (Dice, HD95, ASD both ways, surface Dice at {TOLERANCE_MM} mm) over "
                 f"the comparisons surface-distance ran: {c['max_abs_difference_to_surface_distance']:.1e}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--full", action="store_true", help="resample to 512x512x200 (default: the 3 mm grid)")
    parser.add_argument("--repeat", type=int, default=None, help="runs of the load and compare (default 3, --full 1)")
    parser.add_argument("--no-dicom", action="store_true", help="skip the DICOM SEG files (label NIfTI only)")
    parser.add_argument("--peers-python", default=str(METRIC_PEERS_PYTHON) if METRIC_PEERS_PYTHON.exists() else None,
                        help="python of the metric peers' venv (.venv-metric-peers); none: surface-distance only")
    parser.add_argument("--peers", default=None,
                        help="default medpy,platipy,seg-metrics; with --full medpy,platipy (seg-metrics: > 28 min)")
    parser.add_argument("--sd-structures", type=int, default=None,
                        help="structures surface-distance is timed on (default: all; 12 with --full)")
    parser.add_argument("--peer-structures", default="",
                        help="e.g. medpy=8,platipy=8,seg-metrics=1 (the defaults; --full: 2, 4, 1); 0 = all")
    parser.add_argument("--json", default="compare_speed.json")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.full else 3)
    if args.peers is None:
        args.peers = "medpy,platipy" if args.full else "medpy,platipy,seg-metrics"
    subsets = dict(DEFAULT_SUBSETS[args.full])
    if args.sd_structures is not None:
        subsets["surface-distance"] = args.sd_structures or None
    for item in filter(None, args.peer_structures.split(",")):
        tool, count = item.split("=")
        subsets[tool] = int(count) or None

    geometry, labels, names, ct = build_case(Path(args.data), args.full)
    arrays, removed = make_models(labels)
    spacing_kji = tuple(float(s) for s in geometry.spacing[::-1])
    values = sorted(names)
    print(f"grid {labels.shape} (slice, row, column) at {'x'.join(f'{s:.2f}' for s in spacing_kji)} mm, "
          f"{len(values)} structures; removed from 'shifted': {removed}", flush=True)
    document = {"benchmark": "compare_speed", "data": args.data, "cores": os.cpu_count(), "shape": list(labels.shape),
                "spacing_mm": " x ".join(f"{s:.2f}" for s in spacing_kji[::-1]) + " mm",
                "structures": len(values), "repeat": repeat, "subsets": subsets, "load": {}, "peers": {}}
    with tempfile.TemporaryDirectory(prefix="compare_speed") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        files, grids = write_models(work, geometry, arrays, names, ct, dicom=not args.no_dicom)
        print(f"wrote the models ({', '.join(files)}) in {time.perf_counter() - start:.1f} s", flush=True)
        load_like_segqa_compare({"w": next(iter(files["nifti"].values()))}, geometry)  # untimed: imports
        models = None
        for kind, kind_files in files.items():
            if kind == "dicom_seg":  # untimed: highdicom's tables, as after the first use in a running Slicer
                load_like_segqa_compare({"w": next(iter(kind_files.values()))}, grids[kind])
            times = []
            for _ in range(repeat):
                seconds, loaded = load_like_segqa_compare(kind_files, grids[kind])
                times.append(seconds)
            wall, cpu = median2(times)
            entry = {"segqa_compare_s": wall, "segqa_compare_cpu_s": cpu, "times_s": [list(t) for t in times]}
            if kind == "dicom_seg":
                entry["core_s"], entry["core_cpu_s"] = median2([core_seg_load(kind_files) for _ in range(repeat)])
            document["load"][kind] = entry
            print(f"  load ({kind}): {wall:.2f} s ({cpu:.2f} s CPU) as segqa compare"
                  + (f", {entry['core_s']:.2f} s ({entry['core_cpu_s']:.2f} s CPU) core reader"
                     if "core_s" in entry else ""), flush=True)
            if kind == "nifti":
                models = loaded
            del loaded
        time_ours([(name, seg.subset([0])) for name, seg in models], 1)  # untimed: imports, surfel tables
        ours_times, result = time_ours(models, repeat)
        ours = our_comparisons(result, models)
        document["ours_s"], document["ours_cpu_s"] = median2(ours_times)
        document["ours_times_s"] = [list(t) for t in ours_times]
        document["comparisons"] = len(ours)
        print(f"  ours: {document['ours_s']:.2f} s ({document['ours_cpu_s']:.2f} s CPU) for {len(ours)} comparisons",
              flush=True)
        arrays["consensus"] = majority_labels(arrays)
        counts = np.bincount(arrays["consensus"].ravel(), minlength=max(values) + 1)
        voxel_ml = abs(float(np.linalg.det(geometry.affine_lps[:3, :3]))) / 1000.0
        for (_, model_b, value), metrics in ours.items():
            if model_b == "consensus" and abs(metrics.volume_b_ml - counts[value] * voxel_ml) > 1e-9:
                raise SystemExit(f"the majority label map differs from our consensus for {names[value]!r}")
        pairs = sorted(ours)
        total = len(pairs)

        def record(tool, seconds, cpu, count, **extra):
            entry = {"seconds": seconds, "cpu_s": cpu, "comparisons": count, "all_s": seconds / count * total,
                     "all_cpu_s": cpu / count * total, **extra}
            document["peers"][tool] = entry
            note = "" if count == total else f" (measured on {count}; extrapolated)"
            print(f"  {tool}: {seconds:.2f} s ({cpu:.2f} s CPU) for {count} comparisons -> {entry['all_s']:.1f} s "
                  f"({entry['all_cpu_s']:.1f} s CPU) for all{note}", flush=True)

        sd_pairs = subset_pairs(pairs, values, subsets["surface-distance"])
        (seconds, cpu), worst = time_surface_distance(arrays, sd_pairs, spacing_kji, ours)
        document["max_abs_difference_to_surface_distance"] = worst
        from importlib.metadata import version

        record("surface-distance", seconds, cpu, len(sd_pairs), version=version("surface-distance"))
        if args.peers_python:
            arrays_path = work / "arrays.npz"
            np.savez(arrays_path, **arrays)
            for tool in filter(None, args.peers.split(",")):
                tool_pairs = subset_pairs(pairs, values, subsets.get(tool))
                out = time_peer(args.peers_python, tool, arrays_path, tool_pairs, spacing_kji, work)
                if "error" in out:
                    document["peers"][tool] = {"error": out["error"]}
                    print(f"  {tool}: failed: {out['error']}", file=sys.stderr, flush=True)
                else:
                    record(tool, out["seconds"], out["cpu_s"], out["comparisons"], version=out.get("version"))
    print(f"  max |ours - surface-distance|: {document['max_abs_difference_to_surface_distance']:.2e}")
    table = markdown_table(document)
    document["markdown"] = table
    print()
    print(table)
    Path(args.json).write_text(json.dumps(document, indent=2))
    print(f"\nwrote {args.json}")
    return 0 if document["max_abs_difference_to_surface_distance"] < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
