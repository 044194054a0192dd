"""Removing a segmentation node with many segments: Slicer's scene removal and destruction against
SegmentationQAMRMLLogic.removeSegmentationNode, on the benchmark's 512x512x200 TotalSegmentator labels split into
N segments (seg_speed's cases). Each measurement runs in a fresh process.

    .venv/bin/python Testing/Benchmarks/teardown_speed.py [--quick] [--segments 50,200,1000] [--data ../shared/data]
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "SegmentationQA"), str(HERE)]


def worker(layer_path: str, count: int, how: str) -> dict:
    import slicer

    from DicomFidelityCommonLib.geometry import VolumeGeometry
    from SegmentationQALib.logic import SegmentationQAMRMLLogic
    from SegmentationQALib.segmentation import LayeredSegmentation, Segment

    layer = np.load(layer_path)
    layer[layer > count] = 0
    geometry = VolumeGeometry(layer.shape, np.eye(4))
    layered = LayeredSegmentation(geometry, [layer], [Segment(f"s{v}", 0, v) for v in range(1, count + 1)])
    scene = slicer.vtkMRMLScene()
    logic = SegmentationQAMRMLLogic(scene)
    node = logic.segmentationNodeFromLayered(layered, "Segmentation")
    del layered, layer
    start = time.perf_counter()
    if how == "ours":
        logic.removeSegmentationNode(node)
        del node
    else:  # what deleting the node in Slicer does: remove it, and the segmentation is destroyed with it
        scene.RemoveNode(node)
        del node
    scene.Clear(1)
    return {"seconds": time.perf_counter() - start}


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", default="50,200,1000")
    parser.add_argument("--quick", action="store_true", help="50 and 200 segments only")
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--json", default="teardown_speed.json")
    args = parser.parse_args()
    if args.quick:
        args.segments = "50,200"
    import seg_speed

    rows = []
    with tempfile.TemporaryDirectory(prefix="teardown-") as work:
        work = Path(work)
        counts = [int(c) for c in args.segments.split(",")]
        _, cases = seg_speed.build_cases(Path(args.data), work, 200, 512, [max(counts)], ["labelmap"])
        layer_path = str(cases[0]["folder"] / "layer0.npy")
        for count in counts:
            row = {"segments": count}
            for how in ("slicer", "ours"):
                done = subprocess.run([sys.executable, __file__, "--worker", layer_path, str(count), how],
                                      capture_output=True, text=True, check=True)
                row[how] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
            row["ratio"] = row["slicer"] / row["ours"]
            rows.append(row)
            print(f"{count:5d} segments: Slicer removal {row['slicer']:7.2f} s, removeSegmentationNode "
                  f"{row['ours']:6.3f} s ({row['ratio']:.0f}x)", flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
