"""DoseAlignment MRML logic under the slicer-core wheel with a real vtkMRMLScene."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.uid import generate_uid

from data_builders import synthetic_dose as synthetic
from DicomFidelityCommonLib.errors import FrameOfReferenceMismatchError, GeometryError
from DicomFidelityCommonLib.geometry import LPS_TO_RAS, VolumeGeometry, affine_from_dicom
from DoseAlignmentLib.align import read_reference
from DoseAlignmentLib.rtdose import read_rtdose
from validators import assert_dciodvfy_clean

FOR_UID = generate_uid()
FIELD = synthetic.linear_field((0.04, 0.02, -0.03), 18.0)
CT = VolumeGeometry((16, 22, 24), affine_from_dicom([-30.0, -28.0, -24.0], [1, 0, 0, 0, 1, 0], [2.6, 2.4], 3.0))
DOSE_ARGS = dict(image_position=[-24.0, -22.0, -18.0], image_orientation=[1, 0, 0, 0, 1, 0], pixel_spacing=[2.0, 3.0],
                 rows=20, columns=15, frame_offsets=[0, 3, 5, 9, 12, 13, 17, 21, 24, 30])


@pytest.fixture
def dose_logic(scene):
    from DoseAlignmentLib.logic import DoseAlignmentMRMLLogic

    return DoseAlignmentMRMLLogic(scene)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mrml")
    synthetic.write_ct_series(folder / "ct", CT, FOR_UID)
    dose = synthetic.write_rtdose(folder / "dose.dcm", FIELD, frame_of_reference_uid=FOR_UID, **DOSE_ARGS)
    return folder, dose


def ct_node(logic, folder, uid=FOR_UID):
    reference = read_reference(folder / "ct")
    node = logic.volumeNodeFromArray(reference.array(), reference.geometry, "CT")
    if uid:
        node.SetAttribute("DICOM.FrameOfReferenceUID", uid)
    return node


def centres(geometry):
    k, j, i = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    return geometry.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*geometry.shape, 3)


def inside_dose_hull(grid, points):
    rel = points - grid.image_position
    o = grid.image_orientation
    i, j, s = rel @ o[:3] / grid.pixel_spacing[1], rel @ o[3:] / grid.pixel_spacing[0], rel @ grid.normal
    return ((i >= 0) & (i <= grid.shape[2] - 1) & (j >= 0) & (j <= grid.shape[1] - 1)
            & (s >= min(grid.frame_offsets)) & (s <= max(grid.frame_offsets)))


def test_dose_node_aligned_with_ct_and_coloured(dose_logic, scene, files):
    folder, dose = files
    ct = ct_node(dose_logic, folder)
    messages = []
    doseNode, referenceNode, result = dose_logic.resampleDose([dose], ct,
                                                              progressCallback=lambda f, m: messages.append(f))
    assert referenceNode is None and messages and messages[-1] == 1.0
    # the dose node has the CT's grid: same IJK->RAS, same dimensions
    assert dose_logic.geometryFromVolumeNode(doseNode).is_close(dose_logic.geometryFromVolumeNode(ct), 1e-6)
    assert doseNode.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
    values = dose_logic.arrayFromVolumeNode(doseNode)
    points = centres(CT)
    inside = inside_dose_hull(read_rtdose(dose), points)
    assert inside.sum() > 500
    assert np.abs(values[inside] - FIELD(points[inside])).max() < 1e-3
    assert doseNode.GetAttribute("DoseAlignment.DoseUnits") == "GY"
    display = doseNode.GetDisplayNode()
    assert display.GetColorNode().GetName() == "DoseAlignment Dose"
    assert display.GetWindowLevelMax() == pytest.approx(result.statistics.max_dose_in)
    assert scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems() >= 1


def test_frame_of_reference_mismatch_needs_a_transform(dose_logic, scene, files):
    folder, dose = files
    ct = ct_node(dose_logic, folder, uid=generate_uid())
    with pytest.raises(FrameOfReferenceMismatchError, match="dose.dcm"):
        dose_logic.resampleDose([dose], ct)
    # a Slicer transform (RAS, dose -> CT) resolves it: shift the dose 6 mm to the patient's left (+x LPS = -x RAS)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, -6.0)
    transform.SetMatrixTransformToParent(matrix)
    doseNode, _, result = dose_logic.resampleDose([dose], ct, transformNode=transform)
    values = dose_logic.arrayFromVolumeNode(doseNode)
    points = centres(CT)
    shifted = points - np.array([6.0, 0, 0])  # CT point -> dose-frame point
    inside = inside_dose_hull(read_rtdose(dose), shifted)
    assert inside.sum() > 500
    assert np.abs(values[inside] - FIELD(shifted[inside])).max() < 1e-3
    assert np.allclose(result.to_json()["geometry"]["affine_lps"], CT.affine_lps)


def test_ct_to_dose_and_exports(dose_logic, scene, files, tmp_path):
    folder, _ = files
    uniform = synthetic.write_rtdose(tmp_path / "uniform.dcm", FIELD, frame_of_reference_uid=FOR_UID,
                                     **{**DOSE_ARGS, "frame_offsets": np.arange(10) * 3.0})
    ct = ct_node(dose_logic, folder)
    doseNode, ctOnDose, result = dose_logic.resampleDose([uniform], ct, direction="ct-to-dose")
    grid = read_rtdose(uniform)
    assert ctOnDose is not None
    assert dose_logic.geometryFromVolumeNode(ctOnDose).is_close(grid.geometry(), 1e-6)
    assert np.allclose(dose_logic.arrayFromVolumeNode(doseNode), grid.dose, atol=1e-5)
    outputs = dose_logic.exportAligned(tmp_path / "aligned.npz")
    with np.load(outputs["arrays"]) as npz:
        assert npz["dose"].shape == npz["ct"].shape == grid.shape
        assert np.allclose(npz["affine_ras"], LPS_TO_RAS @ grid.geometry().affine_lps)
        assert json.loads(str(npz["metadata_json"]))["direction"] == "ct-to-dose"
    # non-uniform frames cannot be a volume node: a clear error, not a silently uniform grid
    with pytest.raises(GeometryError, match="non-uniform"):
        dose_logic.resampleDose([files[1]], ct, direction="ct-to-dose")


def test_rtdose_export_and_dvh_from_labelmap(dose_logic, scene, files, tmp_path):
    folder, dose = files
    ct = ct_node(dose_logic, folder)
    doseNode, _, result = dose_logic.resampleDose([dose], ct, interpolation="nearest")
    path = dose_logic.exportRtDose(tmp_path / "dose_on_ct.dcm")
    assert_dciodvfy_clean(path)
    assert read_rtdose(path).geometry().is_close(CT, 1e-3)
    labels = np.zeros(CT.shape, np.uint8)
    labels[5:10, 8:14, 8:14] = 3
    labelmap = dose_logic.volumeNodeFromArray(labels, CT, "labels")
    curves, outputs = dose_logic.computeDvh(doseNode, labelmap, tmp_path / "report",
                                            referenceArray=dose_logic.arrayFromVolumeNode(ct))
    assert len(curves) == 1 and curves[0].label == 3
    assert curves[0].mean_dose == pytest.approx(float(dose_logic.arrayFromVolumeNode(doseNode)[labels == 3].mean()))
    assert (tmp_path / "report" / "report.html").exists() and "report.html" in outputs
    table = dose_logic.dvhTableNode(curves)
    assert table.GetTable().GetNumberOfColumns() == 2 and table.GetTable().GetNumberOfRows() == len(curves[0].dose)


def test_dose_volume_node_as_input(dose_logic, scene, files):
    folder, _ = files
    ct = ct_node(dose_logic, folder)
    # a dose already in the scene (as SlicerRT would load it) on an oblique grid
    rotation = np.array([[0.9, -0.3, 0.0], [0.3, 0.9, 0.0], [0.0, 0.0, 1.0]])
    rotation = np.linalg.qr(rotation)[0] * np.sign(np.diag(np.linalg.qr(rotation)[1]))
    geometry = VolumeGeometry.from_origin_spacing_direction((10, 14, 16), [-20.0, -18.0, -15.0], [2.5, 2.0, 3.0],
                                                            rotation)
    values = FIELD(centres(geometry)).astype(np.float32)
    doseIn = dose_logic.volumeNodeFromArray(values, geometry, "TPS dose")
    doseIn.SetAttribute("DicomRtImport.DoseUnitName", "GY")
    doseNode, _, result = dose_logic.resampleDose([doseIn], ct)
    out = dose_logic.arrayFromVolumeNode(doseNode)
    points = centres(CT)
    index = geometry.lps_to_index(points.reshape(-1, 3)).reshape(*CT.shape, 3)
    inside = np.all((index >= 0) & (index <= np.array(geometry.shape[::-1]) - 1), axis=-1)
    assert inside.sum() > 300
    assert np.abs(out[inside] - FIELD(points[inside])).max() < 1e-3
