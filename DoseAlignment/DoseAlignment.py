"""DoseAlignment: RTDOSE onto the CT grid (and back) with every geometry rule right. Thin Slicer shell over
DoseAlignmentLib (logic.py for MRML, the rest pure Python); behaviour lives there so it is tested without the GUI.
At load time it imports only what Slicer bundles; the rest is installed on first use, before any action."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTransformNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DicomFidelityCommonLib.dependencies import ensure_installed
from DicomFidelityCommonLib.errors import DicomFidelityError

DIRECTIONS = ("dose-to-ct", "ct-to-dose")  # DoseAlignmentLib.resample.Direction values (tested equal)
INTERPOLATIONS = ("linear", "nearest", "bspline")  # DoseAlignmentLib.resample.Interpolation values (tested equal)


class DoseAlignment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DoseAlignment"
        self.parent.categories = ["Radiotherapy"]
        self.parent.dependencies = ["DicomFidelityCommon"]
        self.parent.contributors = ["DicomFidelity contributors"]
        self.parent.helpText = (
            "Resample RTDOSE onto a CT grid (or the CT onto the dose grid) honouring orientation, non-uniform and "
            "absolute frame offsets and (row, column) pixel spacing; sum per-beam doses; export NRRD/NIfTI/.npz, an "
            "RTDOSE on the CT grid, DVHs and an HTML report. Also available as the 'dosealign' command line tool.")
        self.parent.acknowledgementText = "DicomFidelity, BSD-3-Clause."


@parameterNodeWrapper
class DoseAlignmentParameterNode:
    """Panel state saved with the scene."""

    referenceVolume: vtkMRMLScalarVolumeNode
    registration: vtkMRMLTransformNode
    direction: str = DIRECTIONS[0]
    interpolation: str = INTERPOLATIONS[0]
    outsideValue: float = 0.0


class DoseAlignmentLogic(ScriptedLoadableModuleLogic):
    """The console entry point: every method of DoseAlignmentLib.logic.DoseAlignmentMRMLLogic (resampleDose,
    exportAligned, computeDvh, ...) on slicer.mrmlScene, made on first use after the packages it needs are installed."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._scene, self._mrmlLogic = scene, None

    @property
    def mrmlLogic(self):
        if self._mrmlLogic is None:
            ensure_installed()
            from DoseAlignmentLib.logic import DoseAlignmentMRMLLogic

            self._mrmlLogic = DoseAlignmentMRMLLogic(self._scene if self._scene is not None else slicer.mrmlScene)
        return self._mrmlLogic

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.mrmlLogic, name)


class DoseAlignmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DoseAlignment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DoseAlignmentLogic()
        for direction in DIRECTIONS:
            self.ui.directionComboBox.addItem(direction)
        for interpolation in INTERPOLATIONS:
            self.ui.interpolationComboBox.addItem(interpolation)
        self.ui.doseFilesBrowseButton.connect("clicked(bool)", self.onBrowseDose)
        self.ui.resampleButton.connect("clicked(bool)", self.onResample)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.exportRtDoseButton.connect("clicked(bool)", self.onExportRtDose)
        self.ui.dvhButton.connect("clicked(bool)", self.onDvh)
        self.doseNode = None
        self.layout.addStretch(1)
        self._parameterNode = DoseAlignmentParameterNode(self.logic.getParameterNode())
        self._parameterNode.connectGui(self.ui)

    def onBrowseDose(self):
        paths = qt.QFileDialog.getOpenFileNames(None, "RTDOSE files", "", "DICOM (*.dcm);;All files (*)")
        if paths:
            self.ui.doseFilesLineEdit.text = ";".join(paths)

    def _progress(self, fraction, message):
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.progressBar.setFormat(message)
        slicer.app.processEvents()

    def _show(self, data):
        lines = [f"{k}: {v}" for k, v in data.items() if k not in ("geometry", "doses", "statistics")]
        self.ui.resultTextEdit.setPlainText("\n".join(lines))

    def onResample(self):
        doses = [p for p in self.ui.doseFilesLineEdit.text.split(";") if p.strip()] or \
            ([self.ui.doseNodeSelector.currentNode()] if self.ui.doseNodeSelector.currentNode() else [])
        with slicer.util.tryWithErrorDisplay("Dose alignment failed.", waitCursor=True):
            ensure_installed()
            if not doses:
                raise DicomFidelityError("choose RTDOSE files or a dose volume")
            self.doseNode, referenceNode, result = self.logic.resampleDose(
                doses, self.ui.referenceSelector.currentNode(), self.ui.transformSelector.currentNode(),
                self.ui.directionComboBox.currentText, self.ui.interpolationComboBox.currentText,
                self.ui.outsideValueSpinBox.value, progressCallback=self._progress)
            background = referenceNode or self.ui.referenceSelector.currentNode()
            slicer.util.setSliceViewerLayers(background=background, foreground=self.doseNode, foregroundOpacity=0.5)
            self._show(result.to_json())

    def onExport(self):
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            ensure_installed()
            path = self.ui.exportPathLineEdit.currentPath
            referencePath = None
            if not path.lower().endswith(".npz"):
                stem, suffix = (path[:-7], ".nii.gz") if path.lower().endswith(".nii.gz") else os.path.splitext(path)
                referencePath = f"{stem}_ct{suffix}"
            self._show(self.logic.exportAligned(path, referencePath=referencePath))

    def onExportRtDose(self):
        with slicer.util.tryWithErrorDisplay("RTDOSE export failed.", waitCursor=True):
            ensure_installed()
            self._show({"rtdose": self.logic.exportRtDose(self.ui.rtDosePathLineEdit.currentPath)})

    def onDvh(self):
        with slicer.util.tryWithErrorDisplay("DVH failed.", waitCursor=True):
            ensure_installed()
            segments = self.ui.segmentationSelector.currentNode()
            labelmap = segments
            if segments is not None and segments.IsA("vtkMRMLSegmentationNode"):
                labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "DVH labels")
                slicer.modules.segmentations.logic().ExportVisibleSegmentsToLabelmapNode(
                    segments, labelmap, self.doseNode)
            reference = self.ui.referenceSelector.currentNode()
            referenceArray = self.logic.arrayFromVolumeNode(reference) if reference is not None and \
                self.logic.geometryFromVolumeNode(reference).is_close(
                    self.logic.geometryFromVolumeNode(self.doseNode)) else None
            curves, outputs = self.logic.computeDvh(self.doseNode, labelmap,
                                                    self.ui.reportPathLineEdit.currentPath or None,
                                                    referenceArray=referenceArray)
            self.logic.dvhTableNode(curves)
            self._show({c.name: c.to_json() for c in curves} | outputs)


class DoseAlignmentTest(ScriptedLoadableModuleTest):
    """Self-test: a linear dose on a non-uniform, anisotropic RTDOSE must land on a CT grid to 1e-3 Gy."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_LinearDoseOnNonUniformGrid()

    def test_LinearDoseOnNonUniformGrid(self):
        import sys

        from pydicom.uid import generate_uid

        from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom

        testing = Path(__file__).resolve().parents[1] / "Testing"  # test data builders live with the tests
        if not testing.is_dir():
            self.fail(f"the self-test needs the repository's Testing folder ({testing})")
        sys.path.insert(0, str(testing))
        from data_builders import synthetic_dose as synthetic

        self.delayDisplay("Writing synthetic CT and RTDOSE")
        folder = Path(tempfile.mkdtemp(prefix="DoseAlignmentTest"))
        uid = generate_uid()
        field = synthetic.linear_field()
        ct = VolumeGeometry((12, 20, 22), affine_from_dicom([-30.0, -28.0, -18.0], [1, 0, 0, 0, 1, 0], [2.8, 2.6], 3.0))
        synthetic.write_ct_series(folder / "ct", ct, uid)
        dose = synthetic.write_rtdose(folder / "dose.dcm", field, [-20.0, -20.0, -12.0], [1, 0, 0, 0, 1, 0], [2.0, 3.0],
                                      12, 14, [0, 2, 5, 7, 12, 15, 21], uid)
        logic = DoseAlignmentLogic()
        ctNode = logic.volumeNodeFromArray(synthetic_ct_array(folder / "ct"), ct, "CT")
        ctNode.SetAttribute("DICOM.FrameOfReferenceUID", uid)
        doseNode, _, result = logic.resampleDose([dose], ctNode)
        values = logic.arrayFromVolumeNode(doseNode)
        k, j, i = np.nonzero(result.inside_dose_grid)
        points = ct.index_to_lps(np.stack([i, j, k], -1))
        grid = result.dose_grids[0]
        rel = points - grid.image_position
        strict = ((rel @ grid.image_orientation[:3] <= (grid.shape[2] - 1) * grid.pixel_spacing[1])
                  & (rel @ grid.image_orientation[3:] <= (grid.shape[1] - 1) * grid.pixel_spacing[0])
                  & (rel @ grid.image_orientation[:3] >= 0) & (rel @ grid.image_orientation[3:] >= 0)
                  & (rel @ grid.normal >= 0) & (rel @ grid.normal <= 21))
        error = np.abs(values[k, j, i][strict] - field(points[strict]))
        self.assertGreater(strict.sum(), 100)
        self.assertLess(float(error.max()), 1e-3)
        self.delayDisplay(f"Test passed: max error {error.max():.2e} Gy")


def synthetic_ct_array(folder):
    from DoseAlignmentLib.align import read_reference

    return read_reference(folder).array()
