"""MRML-facing logic of DoseAlignment: nodes <-> core arrays and geometry; the core does the resampling.

Imports slicer and vtk, never qt, so it runs in the app, in ``Slicer --no-main-window`` and in plain Python with the
slicer-core wheel. The scene is injected (``slicer.mrmlScene`` only as the in-app default). Slicer is RAS, the core
LPS: every matrix crossing the boundary goes through LPS_TO_RAS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
from vtk.util import numpy_support

from DicomFidelityCommonLib.errors import GeometryError, InvalidInputFileError
from DicomFidelityCommonLib.geometry import LPS_TO_RAS, VolumeGeometry
from DicomFidelityCommonLib.mrml import (
    FRAME_OF_REFERENCE_ATTRIBUTE,
    INSTANCE_UIDS_ATTRIBUTE,
    arrayFromVolumeNode,
    fillVolumeNode,
    geometryFromVolumeNode,
    parentTransformToWorldRas,
    transformToWorldRas,
)
from DicomFidelityCommonLib.progress import ProgressCallback
from DoseAlignmentLib.align import AlignmentResult, Reference, align
from DoseAlignmentLib.dvh import DvhCurve, dvh_for_labels, write_report
from DoseAlignmentLib.export import write_arrays, write_rtdose
from DoseAlignmentLib.resample import Direction, Interpolation
from DoseAlignmentLib.rtdose import DoseGrid, DoseUnits

DOSE_UNITS_ATTRIBUTE = "DoseAlignment.DoseUnits"
SLICERRT_DOSE_UNIT_ATTRIBUTE = "DicomRtImport.DoseUnitName"
DOSE_COLOR_TABLE_NAME = "DoseAlignment Dose"


class DoseAlignmentMRMLLogic:
    """What the panel, the console and ``Slicer --no-main-window`` scripts call."""

    def __init__(self, scene=None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.lastResult: AlignmentResult | None = None

    # ------------------------------------------------------------------ nodes <-> arrays
    def geometryFromVolumeNode(self, volumeNode) -> VolumeGeometry:
        """The node's own grid (its parent transform is handled as a registration, not baked in)."""
        return geometryFromVolumeNode(volumeNode, inWorld=False)

    def arrayFromVolumeNode(self, volumeNode) -> np.ndarray:
        return arrayFromVolumeNode(volumeNode)

    def volumeNodeFromArray(self, array: np.ndarray, geometry: VolumeGeometry, name: str, node=None):
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", self.scene.GenerateUniqueName(name))
        return fillVolumeNode(node, array, geometry)

    def frameOfReferenceUidForNode(self, volumeNode) -> str | None:
        """From the node attribute, or (in the app) from the DICOM database entry of its first instance."""
        uid = volumeNode.GetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE)
        if uid:
            return uid
        instances = volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE)
        database = getattr(slicer, "dicomDatabase", None)
        if instances and database is not None:
            value = database.instanceValue(instances.split()[0], "0020,0052")
            return value or None
        return None

    def referenceFromVolumeNode(self, volumeNode) -> Reference:
        geometry = self.geometryFromVolumeNode(volumeNode)
        reference = Reference(geometry, self.frameOfReferenceUidForNode(volumeNode), volumeNode.GetName(),
                              _loader=lambda: self.arrayFromVolumeNode(volumeNode))
        if reference.frame_of_reference_uid is None:
            reference.warnings.append(f"volume {volumeNode.GetName()!r} has no FrameOfReferenceUID: not checked")
        return reference

    def doseGridFromVolumeNode(self, doseVolumeNode, units: str | None = None) -> DoseGrid:
        """A dose already in the scene (e.g. loaded by SlicerRT) as a regular dose grid."""
        geometry = self.geometryFromVolumeNode(doseVolumeNode)
        direction = geometry.direction
        normal = geometry.slice_normal
        step = geometry.affine_lps[:3, 2]
        if abs(abs(float(np.dot(step, normal))) - np.linalg.norm(step)) > 1e-4 * np.linalg.norm(step):
            raise GeometryError(f"dose volume {doseVolumeNode.GetName()!r} has sheared slices")
        unitName = units or doseVolumeNode.GetAttribute(DOSE_UNITS_ATTRIBUTE) \
            or doseVolumeNode.GetAttribute(SLICERRT_DOSE_UNIT_ATTRIBUTE) or "GY"
        dx, dy, _ = geometry.spacing
        return DoseGrid(
            dose=self.arrayFromVolumeNode(doseVolumeNode).astype(np.float64),
            image_position=geometry.origin_lps,
            image_orientation=np.concatenate([direction[:, 0], direction[:, 1]]),
            pixel_spacing=(float(dy), float(dx)),
            frame_offsets=np.arange(geometry.shape[0]) * float(np.dot(step, normal)),
            units=DoseUnits(unitName.upper()),
            frame_of_reference_uid=self.frameOfReferenceUidForNode(doseVolumeNode),
            path=doseVolumeNode.GetName(), summation_type="PLAN")

    @staticmethod
    def _toWorld(node) -> np.ndarray:
        return parentTransformToWorldRas(node) if node is not None else np.eye(4)

    def registrationMatrix(self, transformNode=None, referenceVolumeNode=None,
                           doseVolumeNode=None) -> np.ndarray | None:
        """LPS 4x4 mapping dose-frame points to the reference volume's own frame; None when there is nothing to apply.

        RTDOSE files: ``transformNode`` maps the dose's frame into the reference's frame (as if the dose were placed
        under it beside an untransformed CT). Dose volume nodes: their place in the world (parent transform, or
        ``transformNode`` instead) relative to the reference's place in the world.
        """
        if transformNode is not None:
            doseMatrix = transformToWorldRas(transformNode, f"transform {transformNode.GetName()!r}")
        elif doseVolumeNode is not None:
            doseMatrix = self._toWorld(doseVolumeNode)
        else:
            return None
        rasMatrix = (doseMatrix if doseVolumeNode is None
                     else np.linalg.inv(self._toWorld(referenceVolumeNode)) @ doseMatrix)
        if transformNode is None and np.allclose(rasMatrix, np.eye(4)):
            return None
        return LPS_TO_RAS @ rasMatrix @ LPS_TO_RAS

    # ------------------------------------------------------------------ resampling
    def resampleDose(self, doses: Sequence, referenceVolumeNode, transformNode=None,
                     direction: Direction | str = Direction.DOSE_TO_CT,
                     interpolation: Interpolation | str = Interpolation.LINEAR,
                     outsideValue: float = 0.0, name: str | None = None,
                     progressCallback: ProgressCallback | None = None):
        """Align RTDOSE files (paths) or dose volume nodes with ``referenceVolumeNode``.

        Returns ``(doseVolumeNode, referenceOnDoseGridNode or None, AlignmentResult)``. dose-to-ct: a dose node on the
        CT grid, under the CT's parent transform. ct-to-dose: dose and CT on the (uniform) dose grid.
        """
        direction = Direction(direction)
        doseNodes = [d for d in doses if not isinstance(d, (str, Path))]
        grids = [self.doseGridFromVolumeNode(d) if d in doseNodes else d for d in doses]
        registration = self.registrationMatrix(transformNode, referenceVolumeNode, doseNodes[0] if doseNodes else None)
        reference = self.referenceFromVolumeNode(referenceVolumeNode)
        result = align(grids, reference, direction=direction, interpolation=interpolation, outside_value=outsideValue,
                       registration=registration, load_reference=direction == Direction.CT_TO_DOSE,
                       progress=progressCallback)
        baseName = name or f"{referenceVolumeNode.GetName()} dose"
        if result.geometry is None:
            raise GeometryError("the dose grid has non-uniform frame offsets: a volume node cannot hold it; use "
                                "dose-to-ct or export .npz", result.dose_paths[0])
        doseNode = self.volumeNodeFromArray(result.dose, result.geometry, baseName)
        doseNode.SetAttribute(DOSE_UNITS_ATTRIBUTE, result.units.value)
        doseNode.SetAttribute(SLICERRT_DOSE_UNIT_ATTRIBUTE, result.units.value)
        if reference.frame_of_reference_uid:
            doseNode.SetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE, reference.frame_of_reference_uid)
        referenceNode = None
        if direction == Direction.DOSE_TO_CT:
            parent = referenceVolumeNode.GetParentTransformNode()
            if parent is not None:
                doseNode.SetAndObserveTransformNodeID(parent.GetID())
        else:
            referenceNode = self.volumeNodeFromArray(result.reference_array, result.geometry,
                                                     f"{referenceVolumeNode.GetName()} on dose grid")
            self.showVolume(referenceNode)
        self.showDose(doseNode, result.statistics.max_dose_in)
        self.lastResult = result
        return doseNode, referenceNode, result

    # ------------------------------------------------------------------ display
    def doseColorTable(self):
        """A dose colour table (blue -> red, transparent at 0), created once per scene."""
        existing = self.scene.GetFirstNodeByName(DOSE_COLOR_TABLE_NAME)
        if existing is not None:
            return existing
        table = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", DOSE_COLOR_TABLE_NAME)
        table.SetTypeToUser()
        count = 256
        table.SetNumberOfColors(count)
        for n in range(count):
            t = n / (count - 1)
            red = min(1.0, max(0.0, 1.5 - abs(4 * t - 3)))
            green = min(1.0, max(0.0, 1.5 - abs(4 * t - 2)))
            blue = min(1.0, max(0.0, 1.5 - abs(4 * t - 1)))
            table.SetColor(n, f"{t:.3f}", red, green, blue, 0.0 if n == 0 else 1.0)
        return table

    def showDose(self, doseNode, maxDose: float) -> None:
        doseNode.CreateDefaultDisplayNodes()
        display = doseNode.GetDisplayNode()
        display.SetAndObserveColorNodeID(self.doseColorTable().GetID())
        display.AutoWindowLevelOff()
        top = max(float(maxDose), 1e-6)
        display.SetWindowLevelMinMax(0.0, top)
        display.SetLowerThreshold(0.01 * top)
        display.ApplyThresholdOn()

    def showVolume(self, volumeNode) -> None:
        volumeNode.CreateDefaultDisplayNodes()

    # ------------------------------------------------------------------ outputs
    def exportAligned(self, path, result: AlignmentResult | None = None, referencePath=None,
                      compress: bool = False) -> dict:
        """NRRD / NIfTI / .npz of the last (or given) alignment; the CT goes beside the dose or into the .npz."""
        result = self._result(result)
        if (referencePath is not None or str(path).lower().endswith(".npz")) and result.reference_array is None \
                and result.reference is not None:
            result.reference_array = result.reference.array()
        return write_arrays(path, result, referencePath, compress)

    def exportRtDose(self, path, result: AlignmentResult | None = None) -> str:
        return str(write_rtdose(path, self._result(result)))

    def computeDvh(self, doseVolumeNode, labelmapVolumeNode, outputDir=None, names: dict[int, str] | None = None,
                   referenceArray: np.ndarray | None = None) -> tuple[list[DvhCurve], dict]:
        """Cumulative DVH per label of ``labelmapVolumeNode`` (on the dose node's grid); optional HTML report folder."""
        geometry = self.geometryFromVolumeNode(doseVolumeNode)
        if not self.geometryFromVolumeNode(labelmapVolumeNode).is_close(geometry, 1e-2):
            raise GeometryError(f"labelmap {labelmapVolumeNode.GetName()!r} is not on the dose grid; "
                                "export it with the dose volume as reference")
        dose = self.arrayFromVolumeNode(doseVolumeNode)
        labels = self.arrayFromVolumeNode(labelmapVolumeNode)
        if names is None:
            names = {int(v): self._labelName(labelmapVolumeNode, int(v)) for v in np.unique(labels) if v != 0}
        curves = dvh_for_labels(dose, labels, names, geometry)
        outputs = {}
        if outputDir is not None:
            units = doseVolumeNode.GetAttribute(DOSE_UNITS_ATTRIBUTE) or "GY"
            summary = self.lastResult.to_json() if self.lastResult is not None else {}
            outputs = write_report(outputDir, dose, referenceArray, geometry, units, curves, summary)
        return curves, outputs

    def dvhTableNode(self, curves: list[DvhCurve], name: str = "DVH"):
        """A table node (dose column + one volume % column per segment) for Slicer's plots."""
        table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName(name))
        vtkTable = table.GetTable()
        length = max(len(c.dose) for c in curves)
        dose = max(curves, key=lambda c: len(c.dose)).dose
        columns = [("Dose", dose)] + [(c.name, np.interp(dose, c.dose, c.volume_percent, right=0.0)) for c in curves]
        for columnName, values in columns:
            array = numpy_support.numpy_to_vtk(np.asarray(values[:length], dtype=np.float64), deep=True)
            array.SetName(columnName)
            vtkTable.AddColumn(array)
        table.Modified()
        return table

    @staticmethod
    def _labelName(labelmapVolumeNode, value: int) -> str:
        display = labelmapVolumeNode.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        if color is not None and color.GetColorName(value):
            return color.GetColorName(value)
        return f"label {value}"

    def _result(self, result: AlignmentResult | None) -> AlignmentResult:
        result = result or self.lastResult
        if result is None:
            raise InvalidInputFileError("nothing to export: resample first")
        return result
