"""Real data: the dicompyler sample (152 CT slices + Pinnacle RTDOSE) against plastimatch, and the RTDOSE we write."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from DoseAlignmentLib.align import align
from DoseAlignmentLib.export import write_rtdose
from DoseAlignmentLib.rtdose import read_rtdose
from validators import assert_dciodvfy_clean, dciodvfy_executable


@pytest.fixture(scope="module")
def sample(shared_data):
    return shared_data / "dicompyler-sample"


@pytest.fixture(scope="module")
def aligned(sample):
    return align([sample / "rtdose.dcm"], sample)


@pytest.fixture(scope="module")
def plastimatch_dose(sample, tmp_path_factory):
    """plastimatch's dose on the CT grid. Its --fixed needs an image file, so plastimatch itself converts
    the CT first."""
    executable = shutil.which("plastimatch")
    assert executable, "plastimatch is required (apt-get install plastimatch; run.sh test installs it)"
    work = tmp_path_factory.mktemp("plastimatch")
    ct_only = work / "ct"
    ct_only.mkdir()
    for path in sample.glob("ct.*.dcm"):
        (ct_only / path.name).symlink_to(path)
    subprocess.run([executable, "convert", "--input", str(ct_only), "--output-img", str(work / "ct.nrrd")],
                   check=True, capture_output=True, timeout=600)
    subprocess.run([executable, "convert", "--input-dose-img", str(sample / "rtdose.dcm"),
                    "--fixed", str(work / "ct.nrrd"), "--resize-dose", "--output-dose-img", str(work / "dose.nrrd")],
                   check=True, capture_output=True, timeout=600)
    return sitk.ReadImage(str(work / "dose.nrrd"))


def test_agrees_with_plastimatch(aligned, plastimatch_dose):
    from DicomFidelityCommonLib.geometry import VolumeGeometry

    theirs = sitk.GetArrayFromImage(plastimatch_dose)
    assert VolumeGeometry.from_sitk(plastimatch_dose).is_close(aligned.geometry, 1e-3)
    assert theirs.shape == aligned.dose.shape == (152, 512, 512)
    max_dose = aligned.statistics.max_dose_in
    within = np.abs(aligned.dose - theirs) <= 0.005 * max_dose
    assert within.mean() >= 0.99, f"only {100 * within.mean():.3f}% of voxels within 0.5% of max dose"
    assert aligned.dose.max() == pytest.approx(max_dose, rel=0.01)
    assert aligned.statistics.fraction_dose_voxels_outside_reference == 0.0  # the sample's dose lies inside its CT


def test_resampling_keeps_dose_integral_and_maximum(aligned):
    stats = aligned.statistics
    assert stats.max_dose_in == pytest.approx(65.2367, abs=1e-3)  # 16383 x 0.00398173, read from the file
    assert stats.max_dose_out == pytest.approx(stats.max_dose_in, rel=0.01)
    assert stats.integral_out_common_gy_ml == pytest.approx(stats.integral_in_common_gy_ml, rel=0.005)


def test_rtdose_on_ct_grid_is_valid_and_round_trips(aligned, tmp_path):
    path = write_rtdose(tmp_path / "dose_on_ct.dcm", aligned)
    assert_dciodvfy_clean(path)
    # assert_dciodvfy_clean ignores a crashed dciodvfy (it only counts "Error" lines): make sure it really ran
    run = subprocess.run([dciodvfy_executable(), "-new", str(path)], capture_output=True, text=True, timeout=300)
    assert "RTDose" in run.stdout + run.stderr and "Assertion" not in run.stderr
    again = read_rtdose(path)
    assert again.geometry().is_close(aligned.geometry, 1e-3)
    assert again.frame_of_reference_uid == aligned.reference.frame_of_reference_uid
    step = float(again.dataset.DoseGridScaling)
    assert np.abs(again.dose - aligned.dose).max() <= step  # 16-bit quantisation only
    assert again.dataset.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == \
        aligned.dose_grids[0].dataset.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
