"""Convert a cohort with pydicer 0.2 (run with .venv-cohort-pydicer/bin/python) and say what it paired.

Usage: pydicer_cohort.py TREE WORK_DIR RESULT.json

What a pydicer user does for an ML data set: preprocess + convert (CT, RTSTRUCT masks and RTDOSE to NIfTI), then,
because pydicer writes the dose on its own grid, resample each dose onto the CT it is linked to (linear, the same
as ours). Only configuration, no patches: ``enforce_dcm_ext`` is turned off because the cohort's files have random
names, many without ``.dcm`` (pydicer would otherwise skip them), and the NRRD copy of the masks is turned off.

pydicer links a dose to a CT only through structure sets: dose -> RTPLAN -> RTSTRUCT -> image series, plus every
RTSTRUCT on the dose's FrameOfReferenceUID (``get_structures_linked_to_dose``). A dose with neither has no CT.

RESULT.json: {"tool", "version", "seconds" (work, after imports), "import_seconds",
"pairs": [{"sop", "modality", "ct_series_uids": [...], "dose_on_ct": path | null}], "ct": {series uid: nifti},
"reported": [{"file", "sop", "why"}] (pydicer's quarantine)}.
"""

import json
import logging
import sys
import time
from importlib import metadata

started = time.perf_counter()
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from pydicer import PyDicer  # noqa: E402
from pydicer.config import PyDicerConfig  # noqa: E402
from pydicer.utils import get_structures_linked_to_dose  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started


def main(tree: str, work: str, result_path: str) -> int:
    logging.getLogger().setLevel(logging.ERROR)
    started = time.perf_counter()
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    tool = PyDicer(work_dir)
    config = PyDicerConfig()
    config.set_config("enforce_dcm_ext", False)
    config.set_config("generate_nrrd", False)
    tool.add_input(Path(tree))
    tool.preprocess()
    tool.convert.convert()

    converted = tool.read_converted_data()
    images = converted[converted.modality.isin(["CT", "MR", "PT"])]
    series_of_image_sop = dict(zip(images.sop_instance_uid, images.series_uid))
    ct_files = {row.series_uid: str(Path(row.path) / f"{row.modality}.nii.gz") for row in images.itertuples()}
    structs = converted[converted.modality == "RTSTRUCT"]
    ct_of_struct = {row.sop_instance_uid: series_of_image_sop.get(row.referenced_sop_instance_uid)
                    for row in structs.itertuples()}
    pairs = [{"sop": sop, "modality": "RTSTRUCT", "ct_series_uids": [ct] if ct else [], "dose_on_ct": None}
             for sop, ct in ct_of_struct.items()]
    loaded: dict[str, sitk.Image] = {}
    for _, dose in converted[converted.modality == "RTDOSE"].iterrows():
        linked = get_structures_linked_to_dose(work_dir, dose)
        cts = sorted({ct_of_struct[sop] for sop in linked.sop_instance_uid if ct_of_struct.get(sop)})
        on_ct = None
        if len(cts) == 1:  # what a user would resample onto; several candidates are left to the user
            if cts[0] not in loaded:
                loaded[cts[0]] = sitk.ReadImage(ct_files[cts[0]])
            reference = loaded[cts[0]]
            native = sitk.ReadImage(str(Path(dose.path) / "RTDOSE.nii.gz"), sitk.sitkFloat32)
            resampled = sitk.Resample(native, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            on_ct = str(Path(dose.path) / "RTDOSE_on_CT.nii.gz")
            sitk.WriteImage(resampled, on_ct, True)
        pairs.append({"sop": dose.sop_instance_uid, "modality": "RTDOSE", "ct_series_uids": cts, "dose_on_ct": on_ct})
    seconds = time.perf_counter() - started

    reported = []
    summary = work_dir / "quarantine" / "summary.csv"
    if summary.exists():
        quarantine = pd.read_csv(summary, index_col=0)
        reported = [{"file": str(row.file), "sop": None if pd.isna(row.SOPInstanceUID) else str(row.SOPInstanceUID),
                     "why": str(row.error)[:300]} for row in quarantine.itertuples()]
    Path(result_path).write_text(json.dumps({
        "tool": "pydicer", "version": metadata.version("pydicer"),
        "seconds": seconds, "import_seconds": IMPORT_SECONDS, "pairs": pairs, "ct": ct_files, "reported": reported,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
