"""Consensus of several models' masks of one structure: majority vote or STAPLE, computed in the structure's box.

Only the models that have the structure vote (a model that does not segment an organ is not a vote for
background). STAPLE (Warfield et al., SimpleITK's ``STAPLEImageFilter``) runs inside the union box of the voters'
masks, so its foreground prior is the mean foreground fraction of that box, not of the whole grid.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from DicomFidelityCommonLib.errors import DicomFidelityError
from DicomFidelityCommonLib.geometry import VolumeGeometry
from SegmentationQALib.compare.metrics import Box
from SegmentationQALib.segmentation import LayeredSegmentation, LayerPlacer, Segment


class ConsensusMethod(enum.Enum):
    MAJORITY = "majority"
    STAPLE = "staple"


@dataclass
class StapleResult:
    mask: np.ndarray
    probability: np.ndarray
    sensitivity: list[float]
    specificity: list[float]


def majority_vote(masks: Sequence[np.ndarray], tie_is_foreground: bool = False) -> np.ndarray:
    """Voxels more than half of the masks contain (exactly half too when ``tie_is_foreground``)."""
    if not masks:
        raise DicomFidelityError("majority vote needs at least one mask")
    votes = np.zeros(masks[0].shape, np.uint16)
    for mask in masks:
        votes += mask.astype(bool)
    needed = len(masks) / 2.0
    return votes >= needed if tie_is_foreground else votes > needed


def staple(masks: Sequence[np.ndarray], threshold: float = 0.5) -> StapleResult:
    """STAPLE estimate of the true mask (probability >= ``threshold``) and each rater's sensitivity/specificity."""
    import SimpleITK as sitk

    if not masks:
        raise DicomFidelityError("STAPLE needs at least one mask")
    images = [sitk.GetImageFromArray(np.ascontiguousarray(m, dtype=np.uint8)) for m in masks]
    flt = sitk.STAPLEImageFilter()
    flt.SetForegroundValue(1.0)
    probability = sitk.GetArrayFromImage(flt.Execute(images))
    probability = np.nan_to_num(probability, nan=0.0)  # an all-background box gives 0/0
    return StapleResult(probability >= threshold, probability, list(flt.GetSensitivity()), list(flt.GetSpecificity()))


def consensus_mask(masks: Sequence[np.ndarray], method: ConsensusMethod) -> np.ndarray:
    if method is ConsensusMethod.STAPLE:
        return staple(masks).mask
    return majority_vote(masks)


def segment_boxes(seg: LayeredSegmentation) -> list[Box | None]:
    """Bounding box of every segment: one ``find_objects`` pass per layer, not one pass per segment."""
    from scipy import ndimage

    per_layer = []
    for layer in seg.layers:
        data = layer if layer.dtype.kind in "ui" else layer.astype(np.int64)
        if data.dtype.kind == "i" and data.size and data.min() < 0:
            data = np.where(data < 0, 0, data)
        per_layer.append(ndimage.find_objects(data) if data.size else [])
    boxes = []
    for segment in seg.segments:
        found = per_layer[segment.layer]
        value = segment.label_value
        boxes.append(found[value - 1] if 0 < value <= len(found) else None)
    return boxes


@dataclass
class ConsensusStructure:
    """A consensus mask over a box of the reference grid, with the segment it stands for."""

    segment: Segment
    box: Box
    mask: np.ndarray = field(repr=False)


def pack_layers(geometry: VolumeGeometry, structures: Sequence[ConsensusStructure]) -> LayeredSegmentation:
    """Put per-structure masks (which may overlap) into as few label layers as keep every layer overlap-free."""
    placer = LayerPlacer(geometry.shape)
    segments: list[Segment] = []
    for structure in structures:
        layer, value = placer.place(structure.mask, [s.start for s in structure.box])
        template = structure.segment
        segments.append(Segment(name=template.name, layer=layer, label_value=value, color=template.color,
                                terminology=template.terminology, segment_id=template.segment_id or template.name,
                                algorithm_type="AUTOMATIC", algorithm_name="consensus"))
    return LayeredSegmentation(geometry, placer.finish(), segments)
