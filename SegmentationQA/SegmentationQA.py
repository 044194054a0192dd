"""SegmentationQA: export segmentations as DICOM SEG / RTSTRUCT without silent data loss.

The Slicer shell only: module metadata, the panel (.ui + parameter node), the console Logic (which hands every call
to SegmentationQALib.logic), the DICOM plugin and the self-test. At load time it imports only what Slicer bundles;
everything else (Resources/requirements.txt of DicomFidelityCommon) is installed on first use, before any action.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DicomFidelityCommonLib.dependencies import ensure_installed

MODULE_DIR = Path(__file__).resolve().parent
SEG_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}  # Segmentation, Label Map Seg.
SEG_PLUGIN_CONFIDENCE = 0.99  # above the 0.95 of Slicer 5.12's own DICOMSegmentationPlugin


def ensureDependencies() -> None:
    """Install what Slicer does not bundle (after asking) before any action: panel buttons, DICOM plugin, logic."""
    ensure_installed()


class SegmentationQA(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegmentationQA"
        self.parent.categories = ["DicomFidelity"]
        self.parent.dependencies = ["DicomFidelityCommon", "Segmentations"]
        self.parent.contributors = ["DicomFidelity contributors"]
        self.parent.helpText = (
            "Export segmentations as DICOM SEG (BINARY or LABELMAP, lossless), load SEG fast, and see per segment "
            "what an RTSTRUCT export would lose before you send it anywhere.")
        self.parent.acknowledgementText = "Built on highdicom, pydicom, SimpleITK and Slicer's segmentation core."
        slicer.app.connect("startupCompleted()", registerDicomPlugin)


def registerDicomPlugin() -> None:
    """Let the DICOM browser load SEG through the fast path. It outranks Slicer's own dcmqi-based SEG plugin (0.95)
    for the SEG it can load (patient space), so users are not offered two loadables for one series."""
    if not hasattr(slicer.modules, "dicom"):  # an application without the DICOM module
        return
    from DICOMLib import DICOMLoadable, DICOMPlugin

    class DICOMSegmentationQAPlugin(DICOMPlugin):
        def __init__(self):
            super().__init__()
            self.loadType = "DICOM SEG (SegmentationQA fast path)"
            self.tags["modality"] = "0008,0060"
            self.tags["seriesDescription"] = "0008,103e"
            self.tags["sopClassUID"] = "0008,0016"
            self.tags["frameOfReferenceUID"] = "0020,0052"

        def examine(self, fileLists):
            loadables = []
            for files in fileLists:
                for path in files:
                    value = slicer.dicomDatabase.fileValue
                    if value(path, self.tags["modality"]) != "SEG" or not value(path, self.tags["frameOfReferenceUID"]):
                        continue  # slide-space SEGs have no frame of reference; Slicer's plugin may take them
                    if value(path, self.tags["sopClassUID"]) not in SEG_SOP_CLASSES:
                        continue
                    loadable = DICOMLoadable()
                    loadable.files = [path]
                    loadable.name = (slicer.dicomDatabase.fileValue(path, self.tags["seriesDescription"])
                                     or "Segmentation")
                    loadable.tooltip = "Loaded by SegmentationQA's fast reader (names, colours, terminology kept)"
                    loadable.selected = True
                    loadable.confidence = SEG_PLUGIN_CONFIDENCE
                    loadables.append(loadable)
            return loadables

        def load(self, loadable):
            ensureDependencies()
            dialog = slicer.util.createProgressDialog(windowTitle="Loading DICOM SEG", labelText=loadable.name,
                                                      maximum=100)

            def progress(fraction: float, message: str) -> None:
                dialog.setValue(int(fraction * 100))
                dialog.setLabelText(message)
                slicer.app.processEvents()

            try:
                SegmentationQALogic().loadDicomSeg(loadable.files[0], name=loadable.name, progress=progress)
            finally:
                dialog.close()
            return True

    if not hasattr(slicer.modules, "dicomPlugins"):
        slicer.modules.dicomPlugins = {}
    slicer.modules.dicomPlugins["DICOMSegmentationQAPlugin"] = DICOMSegmentationQAPlugin


@parameterNodeWrapper
class SegmentationQAParameterNode:
    segmentation: vtkMRMLSegmentationNode
    referenceVolume: vtkMRMLScalarVolumeNode
    outputDirectory: str = ""
    segType: str = "auto"
    compression: str = "default"
    seriesDescription: str = "Segmentation"
    contentCreator: str = "DicomFidelity^"
    referenceModality: str = "CT"
    labelDescription: str = ""


class SegmentationQAWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegmentationQA.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        from SegmentationQALib.reference_series import ReferenceModality
        from SegmentationQALib.seg.options import Compression, SegType

        self.ui.segTypeComboBox.addItems([t.value for t in SegType])
        self.ui.compressionComboBox.addItems(["default"] + [c.value for c in Compression])
        self.ui.referenceModalityComboBox.addItems([m.value for m in ReferenceModality])
        self.logic = SegmentationQALogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.exportSegButton.connect("clicked(bool)", self.onExportSeg)
        self.ui.loadSegButton.connect("clicked(bool)", self.onLoadSeg)
        self.ui.applyLabelsButton.connect("clicked(bool)", self.onApplyLabels)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.compareTable.connect("itemSelectionChanged()", self.onCompareRowSelected)
        self._compareImages = {}
        self.ui.checkRtStructButton.connect("clicked(bool)", self.onCheckRtStruct)
        self.ui.exportRtStructButton.connect("clicked(bool)", self.onExportRtStruct)
        self.ui.sendButton.connect("clicked(bool)", self.onSend)  # the last export, to a PACS
        self.initializeParameterNode()

    def _rememberExport(self, written: list[str], referenceVolume) -> None:
        series = self.logic.referenceSeriesForVolume(referenceVolume) if referenceVolume is not None else None
        self._lastExport = (written, [str(path) for path in series.paths] if series is not None else [])
        self.ui.sendButton.enabled = True

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self._parameterNode = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self._parameterNode = SegmentationQAParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.segmentation:
            self._parameterNode.segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        if not self._parameterNode.referenceVolume:
            self._parameterNode.referenceVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not self._parameterNode.outputDirectory:
            self._parameterNode.outputDirectory = str(Path.home() / "DicomFidelity")
        self._parameterNode.connectGui(self.ui)

    # ------------------------------------------------------------------ actions
    def _progressDialog(self, title: str):
        dialog = slicer.util.createProgressDialog(windowTitle=title, labelText=title, maximum=100)

        def progress(fraction: float, message: str) -> None:
            dialog.setValue(int(fraction * 100))
            dialog.setLabelText(message)
            self.ui.progressBar.setValue(int(fraction * 100))
            slicer.app.processEvents()

        return dialog, progress

    def _referenceNeedsExport(self) -> bool:
        """True when the reference is not from DICOM and the user agreed to export it; raises if they declined."""
        volume = self._parameterNode.referenceVolume
        if volume is None or self.logic.referenceSeriesForVolume(volume) is not None:
            return False
        if slicer.util.confirmOkCancelDisplay(
                "The reference volume is not from DICOM. Export it as a DICOM series too?",
                "A DICOM SEG or RTSTRUCT must reference DICOM images. OK writes the volume as a new series "
                "(new UIDs, exact geometry) next to the export; Cancel exports nothing."):
            return True
        raise RuntimeError("Export cancelled: the reference volume is not from DICOM.")

    def onExportSeg(self) -> None:
        from SegmentationQALib.reference_series import ReferenceModality
        from SegmentationQALib.seg.options import Compression, SegExportOptions, SegType

        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("DICOM SEG export failed.", waitCursor=True):
            ensureDependencies()
            exportReference = self._referenceNeedsExport()
            options = SegExportOptions(
                seg_type=SegType(p.segType),
                compression=None if p.compression == "default" else Compression(p.compression),
                series_description=p.seriesDescription, content_creator_name=p.contentCreator)
            dialog, progress = self._progressDialog("Exporting DICOM SEG")
            try:
                result = self.logic.exportDicomSeg(
                    p.segmentation, p.referenceVolume, p.outputDirectory, options, exportReference=exportReference,
                    referenceModality=ReferenceModality(p.referenceModality), progress=progress)
            finally:
                dialog.close()
            self._showResult(f"Wrote {result.seg_path} ({result.seg_type.upper()}, {len(result.segments)} segments) "
                             f"in {result.timings['total']:.1f} s.", result.warnings)
            self._rememberExport([result.seg_path, *result.reference_paths], p.referenceVolume)

    def onSend(self) -> None:
        from SegmentationQALib.seg.to_binary import send_with_binary_fallback

        written, references = self._lastExport  # set by _rememberExport: the button is enabled only after an export
        with slicer.util.tryWithErrorDisplay("Sending failed.", waitCursor=True):
            ensureDependencies()
            dialog, progress = self._progressDialog("Sending")
            try:
                result = send_with_binary_fallback(written, self.ui.sendToLineEdit.text, references, progress)
            finally:
                dialog.close()
            self._showResult(f"{result.summary()}.",
                             [f"{o.path}: {o.problem}" for o in result.failed] + result.warnings)

    def onLoadSeg(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, "Load DICOM SEG", "", "DICOM (*.dcm);;All files (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("DICOM SEG load failed.", waitCursor=True):
            ensureDependencies()
            dialog, progress = self._progressDialog("Loading DICOM SEG")
            try:
                node, result = self.logic.loadDicomSeg(path, progress=progress)
            finally:
                dialog.close()
            self._parameterNode.segmentation = node
            self._showResult(f"Loaded {len(result.segments)} segments in {result.timings['total']:.1f} s.",
                             result.warnings)

    def onApplyLabels(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Applying the label description failed.", waitCursor=True):
            ensureDependencies()
            warnings = self.logic.applyLabelDescription(p.segmentation, p.labelDescription)
            self._showResult(f"Label description applied to {p.segmentation.GetName()}.", warnings)

    def onCompare(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Comparing the segmentations failed.", waitCursor=True):
            ensureDependencies()
            nodes = self.ui.compareSegmentationsSelector.checkedNodes()
            folder = Path(p.outputDirectory) / "model-review"
            folder = folder.with_name(f"{folder.name}-{len(list(folder.parent.glob(folder.name + '*'))) + 1}")
            dialog, progress = self._progressDialog("Comparing segmentations")
            try:
                result, report, warnings = self.logic.compareSegmentations(nodes, p.referenceVolume,
                                                                           outputDir=folder, progress=progress)
            finally:
                dialog.close()
            self._compareImages = {k: str(v) for k, v in report.structure_images.items()}
            rows = [r for r in result.rows if r.model_b == "consensus"]
            flagged = {(o.structure, o.model) for o in result.outliers}
            table = self.ui.compareTable
            table.setSortingEnabled(False)
            table.clear()
            columns = ["structure", "model", "dice", "hd95_mm", "msd_mm", "surface_dice", "flagged"]
            table.setColumnCount(len(columns))
            table.setHorizontalHeaderLabels(columns)
            table.setRowCount(len(rows))
            for r, row in enumerate(rows):
                values = row.to_json()
                cells = [row.structure, row.model_a, values["dice"], values["hd95_mm"], values["msd_mm"],
                         values["surface_dice"], "yes" if (row.structure, row.model_a) in flagged else ""]
                for c, value in enumerate(cells):
                    item = qt.QTableWidgetItem()
                    item.setData(qt.Qt.DisplayRole, round(value, 3) if isinstance(value, float) else value)
                    table.setItem(r, c, item)
            table.setSortingEnabled(True)
            self._showResult(f"{len(result.outliers)} outlier(s); review in {report.html}.", warnings)

    def onCompareRowSelected(self) -> None:
        """Show the selected structure's slice of largest disagreement, with every model's outline."""
        items = self.ui.compareTable.selectedItems()
        path = self._compareImages.get(items[0].text()) if items else None
        self.ui.compareImageLabel.setPixmap(qt.QPixmap(path) if path else qt.QPixmap())

    def _fillFidelityTable(self, rows: list[dict]) -> None:
        columns = ["name", "verdict", "voxels_lost", "voxels_gained", "volume_change_percent", "dice"]
        table = self.ui.fidelityTable
        table.clear()
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(columns):
                value = row.get(key, "")
                table.setItem(r, c, qt.QTableWidgetItem(f"{value:.3g}" if isinstance(value, float) else str(value)))

    def onCheckRtStruct(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("RTSTRUCT fidelity check failed.", waitCursor=True):
            ensureDependencies()
            dialog, progress = self._progressDialog("Checking RTSTRUCT fidelity")
            try:
                result = self.logic.rtstruct.checkFidelity(p.segmentation, p.referenceVolume, progress=progress,
                                                          reportDir=Path(p.outputDirectory) / "rtstruct-report")
            finally:
                dialog.close()
            self._fillFidelityTable(self.logic.rtstruct.verdictTable(result))
            self._showResult(f"Fidelity report written to {Path(p.outputDirectory) / 'rtstruct-report'}.",
                             result.warnings)

    def onExportRtStruct(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("RTSTRUCT export failed.", waitCursor=True):
            ensureDependencies()
            result = self.logic.rtstruct.checkFidelity(p.segmentation, p.referenceVolume)
            rows = self.logic.rtstruct.verdictTable(result)
            self._fillFidelityTable(rows)
            lossy = [row["name"] for row in rows if row.get("verdict") != "lossless"]
            if lossy and not slicer.util.confirmOkCancelDisplay(
                    f"{len(lossy)} segment(s) will change in the RTSTRUCT: {', '.join(lossy[:10])}"
                    f"{'...' if len(lossy) > 10 else ''}. Export anyway?",
                    "Planar contours cannot hold every island, hole, thin or off-slice part. See the table."):
                return
            exportReference = self._referenceNeedsExport()
            dialog, progress = self._progressDialog("Exporting RTSTRUCT")
            try:
                written, _ = self.logic.rtstruct.export(p.segmentation, p.referenceVolume, p.outputDirectory,
                                                       exportReference=exportReference, progress=progress)
            finally:
                dialog.close()
            self._showResult(f"Wrote {written.path}.", written.warnings)
            self._rememberExport([written.path, *written.reference_paths], p.referenceVolume)

    def _showResult(self, message: str, warnings: list[str]) -> None:
        self.ui.progressBar.setValue(100)
        text = message if not warnings else f"{message}\n{len(warnings)} warning(s):\n" + "\n".join(warnings[:20])
        self.ui.statusLabel.setText(text)


class SegmentationQALogic(ScriptedLoadableModuleLogic):
    """The console entry point: every method of SegmentationQALib.logic.SegmentationQAMRMLLogic (exportDicomSeg,
    loadDicomSeg, rtstruct.checkFidelity, ...) on slicer.mrmlScene. The MRML logic is made on first use, after the
    packages it needs are installed, so creating this object (as the panel does) installs nothing."""

    def __init__(self, scene=None, segmentationsLogic=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._scene, self._segmentationsLogic, self._mrmlLogic = scene, segmentationsLogic, None

    @property
    def mrmlLogic(self):
        if self._mrmlLogic is None:
            ensureDependencies()
            from SegmentationQALib.logic import SegmentationQAMRMLLogic

            self._mrmlLogic = SegmentationQAMRMLLogic(self._scene, self._segmentationsLogic)
        return self._mrmlLogic

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.mrmlLogic, name)


class SegmentationQATest(ScriptedLoadableModuleTest):
    """Runs the same logic as the tests under the slicer-core wheel, inside the real application."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_exportAndLoadSeg()
        self.test_pytestSuitesInsideSlicer()

    def test_exportAndLoadSeg(self):
        import numpy as np

        from DicomFidelityCommonLib.geometry import VolumeGeometry
        from SegmentationQALib.segmentation import LayeredSegmentation, Segment

        self.delayDisplay("Export a synthetic overlapping segmentation as DICOM SEG and load it back")
        logic = SegmentationQALogic()
        geometry = VolumeGeometry.from_origin_spacing_direction((8, 32, 32), (-20, -20, 5), (1.25, 1.25, 2.5),
                                                                np.eye(3))
        ct = (np.arange(8 * 32 * 32, dtype=np.int16).reshape(8, 32, 32) % 200) - 100
        volume = logic.volumeNodeFromArray(ct, geometry, "SelfTestCT")
        first = np.zeros(geometry.shape, np.uint8)
        second = np.zeros(geometry.shape, np.uint8)
        first[2:6, 4:20, 4:20] = 1
        second[3:7, 10:28, 10:28] = 1
        layered = LayeredSegmentation(geometry, [first, second], [Segment("liver", 0, 1, (1, 0, 0)),
                                                                  Segment("tumor", 1, 1, (0, 1, 0))])
        segmentation = logic.segmentationNodeFromLayered(layered, "SelfTestSegmentation", volume)
        outputDir = tempfile.mkdtemp(prefix="SegmentationQA-selftest-")
        result = logic.exportDicomSeg(segmentation, volume, outputDir, exportReference=True)
        self.assertEqual(result.seg_type, "binary")
        loaded, _ = logic.loadDicomSeg(result.seg_path)
        back = logic.layeredSegmentationFromNode(loaded, geometry)
        for index in range(2):
            self.assertTrue(np.array_equal(back.mask(index), layered.mask(index)))
            self.assertEqual(back.segments[index].name, layered.segments[index].name)
        self.delayDisplay("Self-test passed")

    def test_pytestSuitesInsideSlicer(self):
        """Run the repository's pytest suites in Slicer's Python when the repository and pytest are there."""
        repository = MODULE_DIR.parent
        if not (repository / "Testing" / "mrml").is_dir():
            return
        import importlib.util

        if importlib.util.find_spec("pytest") is None:
            slicer.util.pip_install("pytest")
        import pytest

        code = pytest.main([str(repository / "Testing" / "unit"), str(repository / "Testing" / "mrml"), "-q",
                            "-p", "no:cacheprovider", f"--rootdir={repository}"])
        self.assertEqual(int(code), 0)
