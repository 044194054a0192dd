"""Objects exported on a CT whose patient and study values are invalid for their VR (what some anonymisers leave:
hashed dates and codes) are still dciodvfy-clean: the invalid values are written empty (Type 2) or left out, each
named in a warning."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from DicomFidelityCommonLib.dicom.series import read_image_series
from DoseAlignmentLib import cli as dose_cli
from SegmentationQALib import cli
from validators import assert_dciodvfy_clean

HASHED = {"StudyDate": "9f86d081", "PatientBirthDate": "2c26b46b", "PatientSex": "5d41402a", "StudyTime": "e3b0c442"}


@pytest.fixture(scope="module")
def malformed_ct(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("malformed") / "ct"
    folder.mkdir()
    for path in sorted((shared_data / "dicompyler-sample").glob("ct.*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in HASHED.items():
            setattr(ds, keyword, value)
        ds.save_as(folder / path.name)
    return folder


@pytest.fixture(scope="module")
def labels_on_ct(malformed_ct, tmp_path_factory):
    series = read_image_series(malformed_ct)
    k, j, i = np.ogrid[:series.geometry.shape[0], :series.geometry.shape[1], :series.geometry.shape[2]]
    labels = ((k - 70) ** 2 / 100 + (j - 256) ** 2 / 900 + (i - 256) ** 2 / 900 <= 1).astype(np.uint8)
    import SimpleITK as sitk

    path = tmp_path_factory.mktemp("labels") / "sphere.nii.gz"
    sitk.WriteImage(series.geometry.to_sitk(labels), str(path))
    return path


def _warned_about_every_hashed_value(warnings: list[str]) -> bool:
    return all(any(w.startswith(f"{keyword} '{value}'") for w in warnings) for keyword, value in HASHED.items())


@pytest.mark.parametrize("command", ["export-seg", "export-rtstruct"])
def test_segmentation_exports_on_a_malformed_ct_are_valid(malformed_ct, labels_on_ct, tmp_path, command):
    report = tmp_path / "r.json"
    assert cli.main([command, "--segmentation", str(labels_on_ct), "--reference", str(malformed_ct),
                     "--output-dir", str(tmp_path / "out"), "--json", str(report), "--quiet"]) == 0
    document = json.loads(report.read_text())
    written = document["outputs"]["seg" if command == "export-seg" else "rtstruct"]
    assert_dciodvfy_clean(written)
    assert _warned_about_every_hashed_value(document["warnings"])
    ds = pydicom.dcmread(written)
    assert ds.StudyDate == "" and ds.PatientSex == "" and ds.PatientID == pydicom.dcmread(
        next(malformed_ct.iterdir())).PatientID  # valid values are still copied


def test_rtdose_on_a_malformed_ct_is_valid(malformed_ct, shared_data, tmp_path):
    report, rtdose = tmp_path / "r.json", tmp_path / "dose.dcm"
    assert dose_cli.main(["resample", "--dose", str(shared_data / "dicompyler-sample" / "rtdose.dcm"),
                          "--reference", str(malformed_ct), "--output", str(tmp_path / "dose.nrrd"),
                          "--rtdose-output", str(rtdose), "--json", str(report), "--quiet"]) == 0
    assert_dciodvfy_clean(rtdose)
    assert _warned_about_every_hashed_value(json.loads(report.read_text())["warnings"])


def test_sanitizing_never_changes_the_source(malformed_ct):
    from DicomFidelityCommonLib.dicom.sanitize import sanitized

    source = pydicom.dcmread(next(malformed_ct.iterdir()), stop_before_pixels=True)
    fixed, warnings = sanitized(source)
    assert fixed is not source and len(warnings) == len(HASHED)
    assert source.StudyDate == HASHED["StudyDate"] and fixed.StudyDate == "" and fixed.PatientID == source.PatientID
    clean = pydicom.dcmread(next(malformed_ct.iterdir()), stop_before_pixels=True)
    for keyword in HASHED:
        setattr(clean, keyword, "")
    assert sanitized(clean) == (clean, [])  # nothing to fix: the very same dataset, no copy
