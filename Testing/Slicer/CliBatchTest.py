"""Both command lines as `Slicer --no-main-window` runs them (CTest: py_nomainwindow_CliBatchTest), on the real
data: segqa export-seg / load-seg and dosealign resample, each asserting its exit code, outputs and JSON.

A plain unittest module: Slicer's slicer_add_python_unittest runs it inside the application; the pytest suite runs
it in plain Python under the slicer-core wheel (Testing/unit/test_architecture.py), so it cannot rot unnoticed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import unittest
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
for _folder in ("DicomFidelityCommon", "SegmentationQA", "DoseAlignment"):
    if str(REPOSITORY / _folder) not in sys.path:
        sys.path.insert(0, str(REPOSITORY / _folder))
DATA = Path(os.environ.get("DICOMFIDELITY_DATA", REPOSITORY.parent / "shared" / "data"))


class CliBatchTest(unittest.TestCase):
    def setUp(self):
        if not DATA.is_dir():
            self.fail(f"real data not found at {DATA}: set DICOMFIDELITY_DATA")
        self.output = Path(tempfile.mkdtemp(prefix="dicomfidelity-batch-"))

    def test_segqa_export_and_load(self):
        from SegmentationQALib import cli

        totalseg = DATA / "totalsegmentator" / "reference_files"
        report = self.output / "export.json"
        code = cli.main(["export-seg", "--segmentation", str(totalseg / "example_seg_fast_force_split.nii.gz"),
                         "--reference", str(totalseg / "example_ct.nii.gz"), "--export-reference",
                         "--output-dir", str(self.output / "seg"), "--json", str(report), "--quiet"])
        self.assertEqual(code, 0)
        document = json.loads(report.read_text())
        self.assertTrue(document["ok"])
        self.assertEqual(len(document["segments"]), 61)
        back = self.output / "back.seg.nrrd"
        self.assertEqual(cli.main(["load-seg", document["outputs"]["seg"], "--output", str(back), "--quiet"]), 0)
        self.assertGreater(back.stat().st_size, 0)

    def test_dosealign_resample(self):
        from DoseAlignmentLib import cli

        sample = DATA / "dicompyler-sample"
        dose = next(p for p in sorted(sample.iterdir()) if p.name.lower().startswith("rtdose"))
        report = self.output / "dose.json"
        code = cli.main(["resample", "--dose", str(dose), "--reference", str(sample),
                         "--output", str(self.output / "dose.nrrd"), "--json", str(report), "--quiet"])
        self.assertEqual(code, 0)
        document = json.loads(report.read_text())
        self.assertTrue(document["ok"])
        self.assertGreater(document["max_dose_out"], 1.0)
        self.assertTrue(Path(document["outputs"]["dose"]).is_file())

    def test_bad_input_is_one_error_line_and_exit_1(self):
        from SegmentationQALib import cli

        junk = self.output / "junk.dcm"
        junk.write_bytes(b"not DICOM")
        self.assertEqual(cli.main(["load-seg", str(junk), "--output", str(self.output / "x.seg.nrrd"), "--quiet"]), 1)
        self.assertFalse((self.output / "x.seg.nrrd").exists())


if __name__ == "__main__":
    unittest.main()
