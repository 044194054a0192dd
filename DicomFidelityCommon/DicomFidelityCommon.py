"""DicomFidelityCommon: the library SegmentationQA and DoseAlignment share (DicomFidelityCommonLib), as a hidden
scripted module so that both can list it in ``dependencies`` and Slicer puts it on the path first.

The module itself does nothing: no panel, no logic of its own. Its load imports only what Slicer bundles.
"""

from __future__ import annotations

from slicer.ScriptedLoadableModule import ScriptedLoadableModule


class DicomFidelityCommon(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DicomFidelityCommon"
        self.parent.categories = ["DicomFidelity"]
        self.parent.dependencies = []
        self.parent.hidden = True
        self.parent.contributors = ["DicomFidelity contributors"]
        self.parent.helpText = "Shared library of the DicomFidelity modules (errors, geometry, DICOM reading, CLI)."
        self.parent.acknowledgementText = "DicomFidelity, BSD-3-Clause."
