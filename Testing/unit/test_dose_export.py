"""ML exports (NRRD, NIfTI, .npz with identical shapes and the affine), RTDOSE on the CT grid, DVH report."""

from __future__ import annotations

import csv
import json

import nibabel
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from data_builders import synthetic_dose as synthetic
from DicomFidelityCommonLib.errors import GeometryError
from DicomFidelityCommonLib.geometry import LPS_TO_RAS, VolumeGeometry, affine_from_dicom
from DoseAlignmentLib.align import align
from DoseAlignmentLib.cli import main
from DoseAlignmentLib.dvh import cumulative_dvh
from DoseAlignmentLib.export import write_arrays, write_rtdose
from DoseAlignmentLib.rtdose import read_rtdose
from validators import assert_dciodvfy_clean

FOR_UID = generate_uid()
FIELD = synthetic.linear_field((0.03, -0.02, 0.05), 15.0)
CT = VolumeGeometry((14, 24, 26), affine_from_dicom([-33.0, -30.0, -20.0], [1, 0, 0, 0, 1, 0], [2.5, 2.7], 3.0))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    synthetic.write_ct_series(folder / "ct", CT, FOR_UID)
    uniform = synthetic.write_rtdose(folder / "uniform.dcm", FIELD, [-25.0, -22.0, -15.0], [1, 0, 0, 0, 1, 0],
                                     [3.0, 2.0], 14, 22, np.arange(10) * 3.0, FOR_UID)
    non_uniform = synthetic.write_rtdose(folder / "nonuniform.dcm", FIELD, [-25.0, -22.0, -15.0], [1, 0, 0, 0, 1, 0],
                                         [3.0, 2.0], 14, 22, [0, 2, 5, 6, 10, 15, 17, 22], FOR_UID, bits=16)
    return folder, uniform, non_uniform


def test_nrrd_nifti_npz_share_shape_and_geometry(case, tmp_path):
    folder, uniform, _ = case
    result = align([uniform], folder / "ct", load_reference=True)
    write_arrays(tmp_path / "dose.nrrd", result, tmp_path / "ct.nrrd")
    write_arrays(tmp_path / "dose.nii.gz", result, tmp_path / "ct.nii.gz")
    write_arrays(tmp_path / "aligned.npz", result)
    dose_nrrd, header = nrrd.read(str(tmp_path / "dose.nrrd"), index_order="C")
    ct_nrrd, _ = nrrd.read(str(tmp_path / "ct.nrrd"), index_order="C")
    assert dose_nrrd.shape == ct_nrrd.shape == CT.shape
    assert (np.allclose(header["space directions"], CT.affine_lps[:3, :3].T)
            and header["space"] == "left-posterior-superior")
    nifti = nibabel.load(str(tmp_path / "dose.nii.gz"))
    assert np.allclose(nifti.affine, LPS_TO_RAS @ CT.affine_lps, atol=1e-4)  # NIfTI is RAS
    assert np.allclose(np.asarray(nifti.dataobj).transpose(2, 1, 0), result.dose)
    with np.load(tmp_path / "aligned.npz") as npz:
        assert npz["dose"].shape == npz["ct"].shape == npz["inside_dose_grid"].shape == CT.shape
        assert (np.allclose(npz["affine_lps"], CT.affine_lps)
                and np.allclose(npz["affine_ras"], LPS_TO_RAS @ CT.affine_lps))
        metadata = json.loads(str(npz["metadata_json"]))
        assert metadata["dose_units"] == "GY" and metadata["direction"] == "dose-to-ct"
        assert np.allclose(npz["ct"], sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nrrd"))))
        assert set(np.unique(npz["ct"])) <= {0.0, -1000.0}  # the synthetic water cylinder, in HU
    assert np.allclose(dose_nrrd, result.dose)


def test_ct_to_dose_non_uniform_only_as_npz(case, tmp_path):
    folder, _, non_uniform = case
    result = align([non_uniform], folder / "ct", direction="ct-to-dose")
    with pytest.raises(GeometryError, match="non-uniform"):
        write_arrays(tmp_path / "dose.nrrd", result)
    assert not (tmp_path / "dose.nrrd").exists()
    write_arrays(tmp_path / "on_dose.npz", result)
    with np.load(tmp_path / "on_dose.npz") as npz:
        assert npz["dose"].shape == npz["ct"].shape == read_rtdose(non_uniform).shape
        assert np.allclose(npz["frame_offsets_mm"], [0, 2, 5, 6, 10, 15, 17, 22])


def test_rtdose_output_of_summed_beams_is_valid(case, tmp_path):
    folder, _, _ = case
    beams = [synthetic.write_rtdose(tmp_path / f"beam{n}.dcm", FIELD, [-25.0, -22.0, -15.0], [1, 0, 0, 0, 1, 0],
                                    [3.0, 2.0], 14, 22, np.arange(10) * 3.0, FOR_UID, summation_type="BEAM", bits=16)
             for n in (1, 2)]
    assert_dciodvfy_clean(beams)  # the synthetic inputs are valid too (16-bit; dciodvfy cannot check 32-bit)
    result = align(beams, folder / "ct")
    path = write_rtdose(tmp_path / "sum.dcm", result)
    assert_dciodvfy_clean(path)
    again = read_rtdose(path)
    assert again.summation_type == "PLAN" and again.geometry().is_close(CT, 1e-3)
    assert np.abs(again.dose - result.dose).max() <= float(again.dataset.DoseGridScaling)


def test_cumulative_dvh_of_known_values():
    dose = np.array([[[0.0, 1.0, 2.0, 3.0]]])
    curve = cumulative_dvh(dose, np.ones_like(dose, bool), 0.5, "all", bin_width=0.5)
    assert curve.volume_ml == 2.0 and curve.mean_dose == 1.5 and curve.max_dose == 3.0
    assert curve.volume_percent[0] == 100.0  # every voxel gets at least 0 Gy
    assert curve.volume_percent[curve.dose.searchsorted(2.0)] == 50.0
    assert np.all(np.diff(curve.volume_percent) <= 0)


def test_cli_report_with_labelmap_and_rtdose(case, tmp_path, capsys):
    folder, uniform, _ = case
    labels = np.zeros(CT.shape, np.uint8)
    labels[4:9, 8:14, 8:16] = 1
    labels[2:4, 2:5, 2:5] = 2
    image = CT.to_sitk(labels)
    image.SetMetaData("Segment0_LabelValue", "1")
    image.SetMetaData("Segment0_Name", "PTV")
    image.SetMetaData("Segment1_LabelValue", "2")
    image.SetMetaData("Segment1_Name", "Cord")
    sitk.WriteImage(image, str(tmp_path / "labels.seg.nrrd"))
    code = main(["resample", "--quiet", "--dose", str(uniform), "--reference", str(folder / "ct"), "--output",
                 str(tmp_path / "dose.nii.gz"), "--reference-output", str(tmp_path / "ct.nii.gz"), "--labelmap",
                 str(tmp_path / "labels.seg.nrrd"), "--report", str(tmp_path / "report"), "--rtdose-output",
                 str(tmp_path / "dose.dcm"), "--json", str(tmp_path / "result.json")])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "result.json").read_text())
    assert_dciodvfy_clean(result["outputs"]["rtdose"])
    html = (tmp_path / "report" / "report.html").read_text()
    assert "PTV" in html and "Cord" in html and "overlay.png" in html
    for name in ("dvh.png", "overlay.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "report" / "dvh.csv") as handle:
        rows = list(csv.DictReader(handle))
    ptv = [r for r in rows if r["segment"] == "PTV"]
    assert float(ptv[0]["volume_percent"]) == 100.0
    dvh = {d["name"]: d for d in json.loads((tmp_path / "report" / "dvh.json").read_text())}
    dose = nibabel.load(str(tmp_path / "dose.nii.gz")).get_fdata().transpose(2, 1, 0)
    assert dvh["PTV"]["mean_dose"] == pytest.approx(float(dose[labels == 1].mean()), rel=1e-5)
    assert dvh["PTV"]["volume_ml"] == pytest.approx(
        (labels == 1).sum() * abs(np.linalg.det(CT.affine_lps[:3, :3])) / 1000)


def test_cli_removes_earlier_outputs_when_a_later_one_fails(case, tmp_path, capsys):
    folder, uniform, _ = case
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "keep.txt").write_text("x")  # a non-empty report folder is refused before any work
    code = main(["resample", "--quiet", "--dose", str(uniform), "--reference", str(folder / "ct"), "--output",
                 str(tmp_path / "dose.nrrd"), "--report", str(tmp_path / "report")])
    assert code == 1 and "report" in capsys.readouterr().err
    assert not (tmp_path / "dose.nrrd").exists()
    bad_ct = tmp_path / "sheared"
    code = main(["resample", "--quiet", "--dose", str(uniform), "--reference", str(folder / "ct"), "--output",
                 str(tmp_path / "x.npz"), "--rtdose-output", str(bad_ct / "no-for.txt.dcm"),
                 "--direction", "ct-to-dose"])
    assert code == 1 and not (tmp_path / "x.npz").exists()
