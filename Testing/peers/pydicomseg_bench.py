"""Time pydicom-seg writing and reading a multi-class DICOM SEG, in-process (run with .venv-peers/bin/python).

pydicom-seg pins old numpy/pydicom, so Testing/Benchmarks/seg_speed.py runs this in its own process: the timings
exclude interpreter start-up and input loading, and peak memory is the resident-set high-water mark of the timed
step above the resident set just before it (Linux clear_refs), which counts C allocations too.

Usage: pydicomseg_bench.py write CASE_DIR CT_DIR OUT.dcm  |  pydicomseg_bench.py read CASE_DIR CT_DIR IN.dcm
CASE_DIR holds layer0.npy (labels [slice, row, column] on the CT grid), geometry.json and dcmqi_meta.json
(dcmqi metainfo, which pydicom-seg's template reader understands). Prints one JSON line.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pydicom_seg
import SimpleITK as sitk
from memory_probe import measure  # this script's folder is on sys.path


def image_on_grid(array: np.ndarray, geometry: dict) -> sitk.Image:
    affine = np.asarray(geometry["affine_lps"], dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in (affine[:3, :3] / spacing).ravel()))
    return image


def main(operation: str, case_dir: str, ct_dir: str, path: str) -> int:
    case = Path(case_dir)
    if operation == "write":
        labels = np.load(case / "layer0.npy")
        geometry = json.loads((case / "geometry.json").read_text())
        meta = json.loads((case / "dcmqi_meta.json").read_text())
        meta["segmentAttributes"] = meta["segmentAttributes"][:1]
        meta_path = Path(path).with_suffix(".meta.json")
        meta_path.write_text(json.dumps(meta))
        files = sorted(Path(ct_dir).glob("*.dcm"))

        def step():
            template = pydicom_seg.template.from_dcmqi_metainfo(str(meta_path))
            sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
            image = image_on_grid(labels, geometry)
            dataset = pydicom_seg.MultiClassWriter(template=template, inplane_cropping=False,
                                                   skip_empty_slices=True).write(image, sources)
            dataset.save_as(path)
            return {"segments": len(dataset.SegmentSequence)}
    elif operation == "read":
        def step():
            result = pydicom_seg.MultiClassReader().read(pydicom.dcmread(path))
            return {"segments": len(result.segment_infos), "shape": list(result.data.shape)}
    else:
        raise SystemExit(f"unknown operation {operation!r}")
    seconds, peak, detail = measure(step)
    size = Path(path).stat().st_size if operation == "write" else None
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "file_bytes": size, "detail": detail}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
