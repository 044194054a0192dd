"""Reading a reference series' headers: pydicom.dcmread(stop_before_pixels=True) plus attribute access against
dicom_headers.read_header plus header_values (what read_image_series does), on the real CT series in
../shared/data, in the same process, interleaved, medians of --repeats.

Every SEG export reads the headers of all the slices it references, so this is a fixed cost of each export.

    .venv/bin/python Testing/Benchmarks/header_speed.py [--repeats 7] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "SegmentationQA")]

SERIES = {  # real CT series: a scanner's implicit VR slices, and JPEG 2000 slices rewritten by a converter
    "dicompyler-sample (152 CT, implicit VR)": "dicompyler-sample",
    "TotalSegmentator example_ct_dicom (20 CT, JPEG 2000)": "totalsegmentator/reference_files/example_ct_dicom",
}


def main(argv=None) -> int:
    import pydicom

    from DicomFidelityCommonLib.dicom import headers as dicom_headers
    from DicomFidelityCommonLib.dicom.series import SLICE_KEYWORDS, read_image_series

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default="header_speed.json")
    args = parser.parse_args(argv)

    def with_pydicom(files):
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        return [[ds.get(keyword) for keyword in SLICE_KEYWORDS] for ds in datasets]

    def with_fast_path(files):
        datasets = [dicom_headers.read_header(f) for f in files]
        return [dicom_headers.header_values(ds, SLICE_KEYWORDS) for ds in datasets]

    readers = {"pydicom": with_pydicom, "ours": with_fast_path}
    rows = []
    warnings.simplefilter("ignore")
    for name, relative in SERIES.items():
        files = read_image_series(Path(args.data) / relative).paths  # the CT slices (not the RTDOSE beside them)
        seconds: dict[str, list[float]] = {reader: [] for reader in readers}
        for _ in range(args.repeats):
            for reader, read in readers.items():  # interleaved, so machine noise spreads over both
                gc.collect()
                start = time.perf_counter()
                read(files)
                seconds[reader].append(time.perf_counter() - start)
        medians = {reader: statistics.median(values) for reader, values in seconds.items()}
        rows.append({"series": name, "slices": len(files), **{f"{r}_seconds": s for r, s in medians.items()},
                     "speedup": medians["pydicom"] / medians["ours"]})
    print(f"{'series':<56}{'slices':>7}{'pydicom ms':>12}{'ours ms':>10}{'speed-up':>10}")
    for row in rows:
        print(f"{row['series']:<56}{row['slices']:>7}{row['pydicom_seconds'] * 1e3:>12.1f}"
              f"{row['ours_seconds'] * 1e3:>10.1f}{row['speedup']:>9.1f}x")
    Path(args.json).write_text(json.dumps({"benchmark": "header_speed", "repeats": args.repeats, "rows": rows},
                                          indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
