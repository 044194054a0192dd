"""Benchmark: RTSTRUCT fidelity check (and our export) of the 61 TotalSegmentator labels vs rt-utils writing them.

Done-criterion: our check takes no longer than rt-utils needs merely to write an RTSTRUCT for the same labels (its
add_roi + save, in-process, excluding its series loading), in the same run. Prints ratios, writes JSON.

Usage: .venv/bin/python Testing/Benchmarks/rtstruct_speed.py [--json OUT.json] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "SegmentationQA"), str(REPO / "Testing")]

from conftest import shared_data_dir  # noqa: E402

from DicomFidelityCommonLib.geometry import VolumeGeometry  # noqa: E402
from SegmentationQALib.reference_series import write_reference_series  # noqa: E402
from SegmentationQALib.rtstruct import write_rtstruct  # noqa: E402
from SegmentationQALib.rtstruct.fidelity import check_rtstruct_fidelity, resample_labels  # noqa: E402
from SegmentationQALib.segmentation import LayeredSegmentation  # noqa: E402

PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"


def label_names(labels: np.ndarray, folder: Path) -> dict[int, str]:
    """Names from TotalSegmentator's per-class files: each class mask's label value in the multi-label volume."""
    names = {}
    for path in sorted(folder.glob("*.nii.gz")):
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
        if mask.shape != labels.shape or not mask.any():
            continue
        values = labels[mask]
        value = int(np.bincount(values[values > 0]).argmax()) if np.any(values > 0) else 0
        if value and value not in names:
            names[value] = path.name[: -len(".nii.gz")]
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default="rtstruct_speed.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = shared_data_dir() / "totalsegmentator" / "reference_files"
    ct_image = sitk.ReadImage(str(data / "example_ct.nii.gz"))
    seg_image = sitk.ReadImage(str(data / "example_seg_fast_force_split.nii.gz"))
    ct_geometry = VolumeGeometry.from_sitk(ct_image)
    labels = sitk.GetArrayFromImage(seg_image).astype(np.uint8)
    seg_geometry = VolumeGeometry.from_sitk(seg_image)
    names = label_names(labels, data / "example_seg_fast")
    values = [int(v) for v in np.unique(labels) if v]
    names = {v: names.get(v, f"label_{v}") for v in values}
    layered = LayeredSegmentation.from_label_volume(seg_geometry, labels, names)
    print(f"{len(values)} labels on {labels.shape}, CT {ct_geometry.shape}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct = sitk.GetArrayFromImage(ct_image)
        series = write_reference_series(ct.astype(np.int16), ct_geometry, tmp / "ct")
        ours_check, ours_export = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = check_rtstruct_fidelity(layered, series.geometry, pictures=False)
            ours_check.append(time.perf_counter() - t)
            t = time.perf_counter()
            write_rtstruct(layered, series, tmp / "ours.dcm", contours=result.contours)
            ours_export.append(time.perf_counter() - t)
            (tmp / "ours.dcm").unlink()
        # rt-utils gets the labels in the written series' slice order (same voxel centres, no interpolation).
        on_series = resample_labels(labels, seg_geometry, series.geometry)
        np.savez(tmp / "labels.npz", labels=on_series, values=np.array(values),
                 names=np.array([names[v] for v in values]))
        peers = []
        for _ in range(args.repeats):
            out = subprocess.run([str(PEERS_PYTHON), str(REPO / "Testing" / "peers" / "rtutils_write.py"),
                                  str(tmp / "ct"), str(tmp / "labels.npz"), str(tmp / "rtutils.dcm")],
                                 check=True, capture_output=True, text=True, timeout=1800)
            peers.append(json.loads(out.stdout.strip().splitlines()[-1]))
    check_s = float(np.median(ours_check))
    export_s = float(np.median(ours_export))
    rtutils_write_s = float(np.median([p["write_s"] for p in peers]))
    rtutils_total_s = float(np.median([p["total_s"] for p in peers]))
    verdicts = {v.value: sum(1 for s in result.segments if s.verdict == v) for v in type(result.segments[0].verdict)}
    payload = {
        "labels": len(values),
        "grid": list(labels.shape),
        "repeats": args.repeats,
        "ours_check_s": check_s,
        "ours_check_plus_export_s": check_s + export_s,
        "rtutils_write_s": rtutils_write_s,
        "rtutils_total_including_series_load_s": rtutils_total_s,
        "ratio_check_over_rtutils_write": check_s / rtutils_write_s,
        "ratio_check_plus_export_over_rtutils_write": (check_s + export_s) / rtutils_write_s,
        "verdicts": verdicts,
        "criterion_met": check_s <= rtutils_write_s,
        "runs": {"ours_check_s": ours_check, "ours_export_s": ours_export, "rtutils": peers},
    }
    print(f"our check: {check_s:.3f} s; check + export: {check_s + export_s:.3f} s; rt-utils write: "
          f"{rtutils_write_s:.3f} s (with series load {rtutils_total_s:.3f} s)")
    print(f"ratio check / rt-utils write = {payload['ratio_check_over_rtutils_write']:.3f}; "
          f"(check + export) / rt-utils write = {payload['ratio_check_plus_export_over_rtutils_write']:.3f}; "
          f"verdicts {verdicts}")
    Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0 if payload["criterion_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
