"""Bad inputs give one clear error naming the file and the problem, and no output; summing checks units and types."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from data_builders import synthetic_dose as synthetic
from DicomFidelityCommonLib.errors import MissingTagError, UnitsMismatchError
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from DoseAlignmentLib.align import align
from DoseAlignmentLib.cli import main
from DoseAlignmentLib.rtdose import DoseGrid, check_summable, read_rtdose

FOR_UID = generate_uid()
FIELD = synthetic.linear_field((0.02, 0.01, -0.03), 10.0)
CT = VolumeGeometry((12, 20, 22), affine_from_dicom([-30.0, -28.0, -18.0], [1, 0, 0, 0, 1, 0], [2.8, 2.6], 3.0))


def dose(path, **kwargs):
    defaults = dict(field=FIELD, image_position=[-20.0, -20.0, -12.0], image_orientation=[1, 0, 0, 0, 1, 0],
                    pixel_spacing=[3.0, 3.0], rows=12, columns=14, frame_offsets=np.arange(8) * 3.0,
                    frame_of_reference_uid=FOR_UID)
    defaults.update(kwargs)
    return synthetic.write_rtdose(path, **defaults)


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    synthetic.write_ct_series(folder, CT, FOR_UID)
    return folder


def run_cli(tmp_path, doses, reference, capsys, extra=()):
    output = tmp_path / "out" / "dose.nrrd"
    result_json = tmp_path / "out" / "result.json"
    args = ["resample", "--quiet", "--reference", str(reference), "--output", str(output), "--json", str(result_json)]
    for d in doses:
        args += ["--dose", str(d)]
    code = main(args + list(extra))
    err = capsys.readouterr().err
    return code, err, output, result_json


def _drop(path, keyword):
    ds = pydicom.dcmread(path)
    delattr(ds, keyword)
    ds.save_as(path)
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    return path


BAD = {
    "not-rtdose": (lambda tmp, ct: sorted(ct.glob("*.dcm"))[0], "not an RTDOSE"),
    "not-dicom": (lambda tmp, ct: (tmp / "junk.dcm").write_bytes(b"hello" * 40) and tmp / "junk.dcm",
                  "not a readable DICOM"),
    "missing-scaling": (lambda tmp, ct: _drop(dose(tmp / "noscale.dcm"), "DoseGridScaling"), "DoseGridScaling"),
    "frame-of-reference": (lambda tmp, ct: dose(tmp / "otherfor.dcm", frame_of_reference_uid=generate_uid()),
                           "FrameOfReferenceUID"),
    "truncated": (lambda tmp, ct: _truncate(dose(tmp / "truncated.dcm")), "truncated"),
    "absolute-nonsense": (lambda tmp, ct: _offsets(dose(tmp / "offsets.dcm"), [5.0, 8.0, 11, 14, 17, 20, 23, 26]),
                          "GridFrameOffsetVector"),
}


def _offsets(path, values):
    ds = pydicom.dcmread(path)
    ds.GridFrameOffsetVector = values
    ds.save_as(path)
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_file_and_problem_and_writes_nothing(tmp_path, ct_folder, capsys, case):
    make, problem = BAD[case]
    bad = make(tmp_path, ct_folder)
    code, err, output, result_json = run_cli(tmp_path, [bad], ct_folder, capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert bad.name in lines[0] and problem in lines[0], lines[0]
    assert not output.exists()
    # the JSON reports the failure (the contract), nothing else is written
    failure = json.loads(result_json.read_text())
    assert failure["ok"] is False and failure["outputs"] == {} and failure["errors"] == [lines[0][len("error: "):]]
    assert {p.name for p in output.parent.glob("*")} <= {result_json.name}


def test_mixed_units_refused(tmp_path, ct_folder, capsys):
    gy = dose(tmp_path / "gy.dcm", summation_type="BEAM")
    relative = dose(tmp_path / "relative.dcm", units="RELATIVE", summation_type="BEAM")
    code, err, output, _ = run_cli(tmp_path, [gy, relative], ct_folder, capsys)
    assert code == 1 and "relative.dcm" in err and "DoseUnits" in err and not output.exists()


def test_summation_checks():
    def grid(**kw):
        g = DoseGrid(dose=np.zeros((1, 1, 1)), image_position=np.zeros(3),
                                               image_orientation=np.array([1, 0, 0, 0, 1, 0.0]), pixel_spacing=(1, 1),
                                               frame_offsets=np.zeros(1), **kw)
        return g
    with pytest.raises(UnitsMismatchError, match="DoseType"):
        check_summable([grid(dose_type="PHYSICAL", path="a"), grid(dose_type="EFFECTIVE", path="b")])
    with pytest.raises(UnitsMismatchError, match="double count"):
        check_summable([grid(summation_type="BEAM", path="a"), grid(summation_type="PLAN", path="b")])
    warnings = check_summable([grid(summation_type="PLAN", path="a"), grid(summation_type="PLAN", path="b")])
    assert any("different plans" in w for w in warnings)


def test_per_beam_doses_are_summed(tmp_path, ct_folder):
    # beam 1 on one grid, beam 2 on a shifted, finer and non-uniform grid: the sum is exact for linear fields
    beam1 = dose(tmp_path / "beam1.dcm", summation_type="BEAM")
    beam2 = dose(tmp_path / "beam2.dcm", summation_type="BEAM", field=synthetic.linear_field((0.01, -0.02, 0.01), 5.0),
                 image_position=[-19.0, -21.0, -13.0], pixel_spacing=[2.0, 2.5], rows=17, columns=16,
                 frame_offsets=[0, 2, 5, 6, 9, 13, 15, 18, 22, 25])
    summed = align([beam1, beam2], ct_folder)
    one = align([beam1], ct_folder)
    two = align([beam2], ct_folder)
    both = one.inside_dose_grid & two.inside_dose_grid
    assert both.sum() > 100
    assert np.abs(summed.dose - (one.dose + two.dose)).max() < 1e-5
    assert np.all(summed.inside_dose_grid == (one.inside_dose_grid | two.inside_dose_grid))
    # same grid: summed once on the dose grid, then resampled
    twice = align([beam1, dose(tmp_path / "beam1b.dcm", summation_type="BEAM")], ct_folder)
    assert np.abs(twice.dose - 2 * one.dose).max() < 1e-4
    assert twice.statistics.max_dose_in == pytest.approx(2 * read_rtdose(beam1).dose.max())


def test_missing_tag_is_typed(tmp_path):
    path = _drop(dose(tmp_path / "nounits.dcm"), "DoseUnits")
    with pytest.raises(MissingTagError, match="nounits.dcm.*DoseUnits"):
        read_rtdose(path)


def test_real_rtdose_headers(shared_data):
    grid = read_rtdose(shared_data / "dicompyler-core" / "rtdose.dcm")
    assert grid.shape == (98, 129, 194)  # (frames, rows, columns): rows and columns are not swapped
    assert grid.units.value == "GY" and grid.summation_type and grid.dose_type
    sample = read_rtdose(shared_data / "dicompyler-sample" / "rtdose.dcm")
    assert sample.shape == (98, 91, 129) and sample.is_uniform()
    assert sample.dose.max() == pytest.approx(float(sample.dataset.DoseGridScaling) * int(
        pydicom.dcmread(sample.path).pixel_array.max()))


def test_cli_json_result(tmp_path, ct_folder, capsys):
    code, err, output, result_json = run_cli(tmp_path, [dose(tmp_path / "ok.dcm")], ct_folder, capsys,
                                             ["--interpolation", "nearest"])
    assert code == 0, err
    data = json.loads(result_json.read_text())
    assert data["outputs"]["dose"] == str(output) and output.exists()
    assert data["dose_units"] == "GY" and data["interpolation"] == "nearest"
    assert data["max_dose_in"] > 0 and 0 <= data["fraction_outside"] <= 1
    assert {"read_dose", "resample", "write", "total"} <= set(data["timings_seconds"])
    assert isinstance(data["warnings"], list)


def test_cli_registration_matrix_for_another_frame_of_reference(tmp_path, ct_folder, capsys):
    other = dose(tmp_path / "otherfor.dcm", frame_of_reference_uid=generate_uid())
    matrix = np.eye(4)
    matrix[:3, 3] = [2.0, -1.0, 0.5]  # dose-frame point + t = CT-frame point (LPS mm)
    np.savetxt(tmp_path / "dose_to_ct.txt", matrix)
    code, err, output, result_json = run_cli(tmp_path, [other], ct_folder, capsys,
                                             ["--registration", str(tmp_path / "dose_to_ct.txt")])
    assert code == 0, err
    plain = align([dose(tmp_path / "same.dcm")], ct_folder, registration=matrix)
    import SimpleITK as sitk

    assert np.allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(output))), plain.dose, atol=1e-6)
    (tmp_path / "bad.txt").write_text("1 0 0\n0 1 0\n")
    code, err, output2, _ = run_cli(tmp_path / "b", [other], ct_folder, capsys,
                                    ["--registration", str(tmp_path / "bad.txt")])
    assert code == 1 and "bad.txt" in err and "4x4" in err and not output2.exists()
