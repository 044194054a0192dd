"""Write an RTSTRUCT with rt-utils (run with .venv-peers/bin/python) and time it in-process, for benchmarks.

Usage: rtutils_write.py CT_FOLDER LABELS.npz OUT.dcm
LABELS.npz: ``labels`` (uint, [slice, row, column] in the CT's slice order along the normal), ``values`` and
``names``. Prints JSON with the seconds spent building (add_roi) and saving.
"""

import json
import sys
import time

import numpy as np
from rt_utils import RTStructBuilder


def main(ct_folder: str, labels_path: str, out_path: str) -> int:
    data = np.load(labels_path)
    labels, values, names = data["labels"], data["values"], [str(n) for n in data["names"]]
    started = time.perf_counter()
    rtstruct = RTStructBuilder.create_new(dicom_series_path=ct_folder)
    loaded = time.perf_counter()
    for value, name in zip(values, names):
        mask = np.transpose(labels == value, (1, 2, 0))  # rt-utils wants [row, column, slice]
        rtstruct.add_roi(mask=mask, name=name)
    built = time.perf_counter()
    rtstruct.save(out_path)
    saved = time.perf_counter()
    print(json.dumps({"load_series_s": loaded - started, "add_roi_s": built - loaded, "save_s": saved - built,
                      "total_s": saved - started, "write_s": saved - loaded}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
