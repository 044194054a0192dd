"""Read an RTSTRUCT with rt-utils (run with .venv-peers/bin/python): one mask per ROI, saved as .npz.

Usage: rtutils_read.py CT_FOLDER RS.dcm OUT.npz
The npz holds, per ROI name, a uint8 array indexed [slice, row, column] in rt-utils' slice order, and
``__sop_instance_uids__`` (that order), so the caller can align it with its own geometry.
"""

import json
import sys
import time

import numpy as np
from rt_utils import RTStructBuilder


def main(ct_folder: str, rs_path: str, out_path: str) -> int:
    started = time.perf_counter()
    rtstruct = RTStructBuilder.create_from(dicom_series_path=ct_folder, rt_struct_path=rs_path)
    arrays = {}
    for name in rtstruct.get_roi_names():
        mask = rtstruct.get_roi_mask_by_name(name)  # [row, column, slice]
        arrays[name] = np.ascontiguousarray(np.transpose(mask, (2, 0, 1))).astype(np.uint8)
    uids = [str(ds.SOPInstanceUID) for ds in rtstruct.series_data]
    arrays["__sop_instance_uids__"] = np.array(uids)
    np.savez_compressed(out_path, **arrays)
    print(json.dumps({"rois": len(arrays) - 1, "seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
