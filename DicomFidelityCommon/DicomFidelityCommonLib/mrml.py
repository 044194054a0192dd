"""MRML helpers both logics use: volume nodes <-> numpy arrays and geometry, vtk matrices, transforms.

Imports slicer and vtk (never qt): runs in the app, in ``Slicer --no-main-window`` and under the slicer-core wheel.
Arrays are indexed [k, j, i]; geometry is DicomFidelityCommonLib.geometry.VolumeGeometry (LPS).
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from DicomFidelityCommonLib.errors import GeometryError, InvalidInputFileError
from DicomFidelityCommonLib.geometry import LPS_TO_RAS, VolumeGeometry
from DicomFidelityCommonLib.volume_files import check_image_header

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
FRAME_OF_REFERENCE_ATTRIBUTE = "DICOM.FrameOfReferenceUID"
SOURCE_FILE_ATTRIBUTE = "DicomFidelity.SourceFile"  # the file a node was loaded from, named in errors


def vtkMatrixToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def numpyToVtkMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def transformToWorldRas(transformNode, what: str) -> np.ndarray:
    """The RAS 4x4 a linear transform node applies (identity for None); non-linear ones must be hardened first."""
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise GeometryError(f"{what} is under a non-linear transform; harden it first")
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return vtkMatrixToNumpy(matrix)


def parentTransformToWorldRas(node) -> np.ndarray:
    """The RAS 4x4 of a node's parent transforms (identity for None or no parent)."""
    if node is None:
        return np.eye(4)
    return transformToWorldRas(node.GetParentTransformNode(), repr(node.GetName()))


def geometryFromVolumeNode(volumeNode, inWorld: bool) -> VolumeGeometry:
    """The grid of a volume node. ``inWorld`` applies its parent transforms (where SegmentationQA exports it);
    otherwise the node's own grid (DoseAlignment treats a parent transform as a registration of its own)."""
    image = volumeNode.GetImageData()
    if image is None:
        raise InvalidInputFileError(f"volume {volumeNode.GetName()!r} has no image data")
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    affine_ras = vtkMatrixToNumpy(matrix)
    if inWorld:
        affine_ras = parentTransformToWorldRas(volumeNode) @ affine_ras
    dims = image.GetDimensions()
    return VolumeGeometry((dims[2], dims[1], dims[0]), LPS_TO_RAS @ affine_ras)


def imageArray(image) -> np.ndarray:
    """A numpy view [k, j, i] of a vtkImageData's single scalar component (empty when it has none)."""
    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    scalars = image.GetPointData().GetScalars()
    if scalars is None or shape[0] <= 0 or shape[1] <= 0 or shape[2] <= 0:
        return np.zeros((max(shape[0], 0), max(shape[1], 0), max(shape[2], 0)), dtype=np.uint8)
    if scalars.GetNumberOfComponents() != 1:
        raise GeometryError(f"image has {scalars.GetNumberOfComponents()} components, expected 1")
    return numpy_support.vtk_to_numpy(scalars).reshape(shape)


def arrayFromVolumeNode(volumeNode) -> np.ndarray:
    """The voxels of a scalar volume node as a view [k, j, i]."""
    image = volumeNode.GetImageData()
    if image is None:
        raise InvalidInputFileError(f"volume {volumeNode.GetName()!r} has no image data")
    try:
        return imageArray(image)
    except GeometryError as exc:
        raise GeometryError(f"volume {volumeNode.GetName()!r}: {exc}") from exc


def fillVolumeNode(node, array: np.ndarray, geometry: VolumeGeometry):
    """Give a volume node a copy of ``array`` (indexed [k, j, i]) on ``geometry``."""
    image = vtk.vtkImageData()
    image.SetDimensions(int(array.shape[2]), int(array.shape[1]), int(array.shape[0]))
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(numpyToVtkMatrix(geometry.affine_ras))
    return node


def orientedImageGeometry(image) -> VolumeGeometry:
    """Geometry of a vtkOrientedImageData (or vtkImageData with a matrix), honouring a non-zero extent start."""
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    extent = image.GetExtent()
    shift = np.eye(4)
    shift[:3, 3] = [extent[0], extent[2], extent[4]]
    affine_lps = LPS_TO_RAS @ vtkMatrixToNumpy(matrix) @ shift
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return VolumeGeometry(shape, affine_lps)


def orientedImageFromArray(array: np.ndarray, geometry: VolumeGeometry):
    """A vtkOrientedImageData holding ``array`` (copied, contiguous) on ``geometry``."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(int(array.shape[2]), int(array.shape[1]), int(array.shape[0]))
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(numpyToVtkMatrix(LPS_TO_RAS @ geometry.affine_lps))
    return image


def loadVolumeFile(scene, path, className: str = "vtkMRMLScalarVolumeNode", name: str | None = None):
    """An image file (NRRD, NIfTI, ...) as a volume node; its header is checked first, so a corrupt file is a
    clear error and never an abort inside the C++ reader."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InvalidInputFileError("no such file", path)
    check_image_header(path)
    node = scene.AddNewNodeByClass(className, name or path.name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InvalidInputFileError("cannot read as an image volume", path)
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node
