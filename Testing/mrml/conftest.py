"""MRML fixtures: a real vtkMRMLScene from the slicer-core wheel and the SegmentationQA logic on it."""

from __future__ import annotations

import pytest


@pytest.fixture
def scene():
    import slicer

    scene = slicer.vtkMRMLScene()
    yield scene
    scene.Clear(True)


@pytest.fixture
def logic(scene):
    from SegmentationQALib.logic import SegmentationQAMRMLLogic

    return SegmentationQAMRMLLogic(scene)
