"""Cohorts: index a DICOM tree, pair what belongs together, run a task on every case (resumable, local workers or a
Dask cluster). The Slicer shell only; the work is CohortsLib (tasks, logic, the `dicomfidelity` CLI) and
DicomFidelityCommonLib.cohort. At load time it imports only what Slicer bundles."""

from __future__ import annotations

from pathlib import Path

import qt
import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from DicomFidelityCommonLib.dependencies import ensure_installed

TASK_NAMES = ("compare-seg", "export-seg", "ml-dataset", "rtstruct-check")  # CohortsLib.tasks.TASKS (tested equal)


class Cohorts(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Cohorts"
        self.parent.categories = ["DicomFidelity"]
        self.parent.dependencies = ["DicomFidelityCommon", "SegmentationQA", "DoseAlignment"]
        self.parent.contributors = ["DicomFidelity contributors"]
        self.parent.helpText = (
            "Index a folder of DICOM files, pair each CT with its doses and structures (never guessing: what cannot be "
            "paired is listed with the reason), and run a task on every case with a manifest of what happened. Also "
            "the 'dicomfidelity' command line.")
        self.parent.acknowledgementText = "DicomFidelity, BSD-3-Clause."


@parameterNodeWrapper
class CohortsParameterNode:
    root: str = ""
    outputDirectory: str = ""
    task: str = TASK_NAMES[0]
    workers: int = 2
    labelManifest: str = ""  # export-seg: the CSV of label files to export


class CohortsLogic(ScriptedLoadableModuleLogic):
    """The console entry point: runCohort, manifestRows, loadCase of CohortsLib.logic.CohortsLogic."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._scene, self._logic = scene, None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._logic is None:
            ensure_installed()
            from CohortsLib.logic import CohortsLogic as Logic

            self._logic = Logic(self._scene if self._scene is not None else slicer.mrmlScene)
        return getattr(self._logic, name)


class CohortsWidget(ScriptedLoadableModuleWidget):
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Cohorts.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.taskComboBox.addItems(list(TASK_NAMES))
        self.logic = CohortsLogic()
        self._parameterNode = CohortsParameterNode(self.logic.getParameterNode())
        self._parameterNode.connectGui(self.ui)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.loadCaseButton.connect("clicked(bool)", self.onLoadCase)
        self._rows = []

    def _progress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(100 * fraction))
        self.ui.progressBar.setFormat(message[:80])
        slicer.app.processEvents()

    def onRun(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Cohort run failed.", waitCursor=True):
            # local worker processes: the cases run in plain Python beside Slicer, not in the app's interpreter
            options = {"manifest": p.labelManifest} if p.task == "export-seg" and p.labelManifest else None
            run = self.logic.runCohort(p.root, p.outputDirectory, p.task, workers=p.workers, options=options,
                                       progress=self._progress)
            self._rows = self.logic.manifestRows(p.outputDirectory)
            columns = ["case", "status", "error", "seconds", "patient_id"]
            table = self.ui.manifestTable
            table.setSortingEnabled(False)
            table.clear()
            table.setColumnCount(len(columns))
            table.setHorizontalHeaderLabels(columns)
            table.setRowCount(len(self._rows))
            for r, row in enumerate(self._rows):
                for c, key in enumerate(columns):
                    table.setItem(r, c, qt.QTableWidgetItem(str(row.get(key, ""))))
            table.setSortingEnabled(True)
            counts = run.run.counts
            self.ui.statusLabel.setText(f"{counts}; manifest in {Path(p.outputDirectory) / 'manifest.csv'}")

    def onLoadCase(self) -> None:
        items = self.ui.manifestTable.selectedItems()
        if not items:
            return
        case = self.ui.manifestTable.item(items[0].row(), 0).text()
        row = next(r for r in self._rows if r["case"] == case)
        with slicer.util.tryWithErrorDisplay("Loading the case failed.", waitCursor=True):
            nodes = self.logic.loadCase(self._parameterNode.outputDirectory, row)
            if nodes:
                slicer.util.setSliceViewerLayers(background=nodes[0], foreground=nodes[1] if len(nodes) > 1 else None,
                                                 foregroundOpacity=0.4)


class CohortsTest(ScriptedLoadableModuleTest):
    """Runs the cohort tests of the repository (Testing/unit/test_cohort_*.py) inside the application."""

    def runTest(self):
        import importlib.util

        repository = Path(__file__).resolve().parents[1]
        if importlib.util.find_spec("pytest") is None:
            slicer.util.pip_install("pytest")
        import pytest

        tests = sorted(str(p) for p in (repository / "Testing" / "unit").glob("test_cohort_*.py"))
        self.assertTrue(tests, "the repository's Testing folder is needed")
        self.assertEqual(int(pytest.main([*tests, "-q", "-p", "no:cacheprovider", f"--rootdir={repository}"])), 0)
