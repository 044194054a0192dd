"""Shared core: geometry conventions, series sorting and atomic writes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from DicomFidelityCommonLib.dicom import series as dicom_series
from DicomFidelityCommonLib.errors import GeometryError, InvalidInputFileError, WrongModalityError
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from DicomFidelityCommonLib.safe_write import atomic_output_dir, atomic_output_file


def test_pixel_spacing_is_row_then_column():
    affine = affine_from_dicom([10, 20, 30], [1, 0, 0, 0, 1, 0], [0.5, 2.0], 3.0)
    geometry = VolumeGeometry((4, 5, 6), affine)
    # column index i moves along the row direction by the column spacing (2.0)
    assert np.allclose(geometry.index_to_lps([1, 0, 0]), [12, 20, 30])
    assert np.allclose(geometry.index_to_lps([0, 1, 0]), [10, 20.5, 30])
    assert np.allclose(geometry.index_to_lps([0, 0, 1]), [10, 20, 33])
    assert geometry.pixel_spacing == [0.5, 2.0]
    assert np.allclose(geometry.lps_to_index(geometry.index_to_lps([[3, 2, 1]])), [[3, 2, 1]])


def test_sitk_round_trip_keeps_geometry():
    affine = affine_from_dicom([1, 2, 3], [0, 1, 0, 0, 0, -1], [0.7, 1.3], 2.5)
    geometry = VolumeGeometry((3, 4, 5), affine)
    image = geometry.to_sitk(np.zeros((3, 4, 5), np.uint8))
    assert VolumeGeometry.from_sitk(image).is_close(geometry, 1e-9)


def test_real_ct_sorted_along_normal_not_by_file_name(shared_data):
    series = dicom_series.read_image_series(shared_data / "dicompyler-sample")
    assert series.geometry.shape == (152, 512, 512)
    z = [float(ds.ImagePositionPatient[2]) for ds in series.datasets]
    assert z == sorted(z)
    assert np.allclose(series.geometry.spacing, [1.171875, 1.171875, 2.0])
    # the RTDOSE in the same folder is not a slice
    assert all(ds.Modality == "CT" for ds in series.datasets)


def test_shuffled_and_gapped_series(tmp_path, shared_data):
    source = sorted((shared_data / "dcmqi/segmentations/ct-3slice").glob("*.dcm"))
    for index, path in enumerate(reversed(source)):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = index + 1
        ds.save_as(tmp_path / f"z{index}.dcm")
    series = dicom_series.read_image_series(tmp_path)
    z = [float(ds.ImagePositionPatient[2]) for ds in series.datasets]
    assert z == sorted(z)
    # drop the middle slice's neighbour to make a gap: still readable, with a warning
    (tmp_path / "extra.txt").write_text("not dicom")
    series = dicom_series.read_image_series(tmp_path)
    assert any("non-DICOM" in w for w in series.warnings)


def test_errors_name_the_file(tmp_path, shared_data):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(InvalidInputFileError, match="bad.dcm"):
        dicom_series.read_image_series(bad)
    with pytest.raises(WrongModalityError):
        dicom_series.read_image_series(shared_data / "dcmqi/segmentations/liver.dcm")
    ds = pydicom.dcmread(shared_data / "dcmqi/segmentations/ct-3slice/01.dcm")
    ds.save_as(tmp_path / "a.dcm")
    ds.save_as(tmp_path / "b.dcm")
    with pytest.raises(GeometryError, match="share one ImagePositionPatient"):
        dicom_series.read_image_series([tmp_path / "a.dcm", tmp_path / "b.dcm"])


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "x.seg.nrrd"
    with pytest.raises(RuntimeError):
        with atomic_output_file(target) as tmp:
            assert tmp.name.endswith(".seg.nrrd")
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list((tmp_path / "out").iterdir()) == []
    with atomic_output_file(target) as tmp:
        tmp.write_bytes(b"ok")
    assert target.read_bytes() == b"ok"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "series") as folder:
            (folder / "1.dcm").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not (tmp_path / "series").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
