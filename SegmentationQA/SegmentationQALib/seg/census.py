"""What a SEG writer needs to know about label layers, in one pass: voxels per segment, and the slices and rows
each segment occupies.

Counted on runs rather than voxels: labels come in long runs along a row, so the run starts (split at every row
start) are few, and counting them is about 3x faster than np.bincount over every voxel (0.06 s vs 0.2 s for
512x512x200 TotalSegmentator labels), while also giving the per-slice and per-row presence the frame writer needs.
Slabs of slices bound the temporary memory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from SegmentationQALib.segmentation import SLAB_SLICES, LayeredSegmentation


@dataclass
class LayerCensus:
    counts: np.ndarray  # (values,) voxels per label value
    on_slice: np.ndarray  # (slices, values) bool: the value occurs on the slice
    on_row: np.ndarray  # (values, rows) bool: the value occurs on the row of some slice
    max_value: int  # the largest value in the layer, counted or not (sizes lookup tables without another pass)


def _slab_census(slab: np.ndarray, values: int):
    slices, rows, columns = slab.shape
    flat = slab.reshape(-1)
    boundary = flat[1:] != flat[:-1]
    boundary[columns - 1::columns] = True  # a run never crosses a row
    starts = np.flatnonzero(boundary)
    starts += 1
    starts = np.concatenate(([0], starts))
    lengths = np.diff(np.append(starts, flat.size))
    labels = flat[starts]
    top = int(labels.max()) if labels.size else 0
    keep = (labels > 0) & (labels < values)
    starts, lengths, labels = starts[keep], lengths[keep], labels[keep].astype(np.intp)
    row = starts // columns
    counts = np.bincount(labels, weights=lengths, minlength=values).astype(np.int64)
    on_slice = np.bincount((row // rows) * values + labels, minlength=slices * values).reshape(slices, values) > 0
    on_row = np.bincount(labels * rows + row % rows, minlength=values * rows).reshape(values, rows) > 0
    return counts, on_slice, on_row, top


def layer_census(layer: np.ndarray, values: int, workers: int = 2) -> LayerCensus:
    """Census of label values 1..values-1 in ``layer`` (slices, rows, columns); other values are ignored."""
    slices, rows, _ = layer.shape
    counts = np.zeros(values, dtype=np.int64)
    on_slice = np.zeros((slices, values), dtype=bool)
    on_row = np.zeros((values, rows), dtype=bool)
    top = 0
    starts = list(range(0, slices, SLAB_SLICES))
    with ThreadPoolExecutor(max(1, workers)) as pool:  # numpy's comparisons and copies release the GIL
        results = pool.map(lambda k: _slab_census(layer[k:k + SLAB_SLICES], values), starts)
        for k, (slab_counts, slab_slices, slab_rows, slab_top) in zip(starts, results):
            counts += slab_counts
            on_slice[k:k + slab_slices.shape[0]] = slab_slices
            on_row |= slab_rows
            top = max(top, slab_top)
    return LayerCensus(counts, on_slice, on_row, top)


@dataclass
class SegmentationCensus:
    layers: list[LayerCensus]

    def voxel_counts(self, layered: LayeredSegmentation) -> list[int]:
        return [int(self.layers[s.layer].counts[s.label_value]) if s.label_value < self.layers[s.layer].counts.size
                else 0 for s in layered.segments]

    def slices(self, layered: LayeredSegmentation) -> list[np.ndarray]:
        """Per segment, the slice indices (ascending) it occupies."""
        return [np.flatnonzero(self.layers[s.layer].on_slice[:, s.label_value]) for s in layered.segments]

    def row_range(self, segment) -> tuple[int, int]:
        """First and one-past-last row the segment occupies (0, 0 if empty)."""
        rows = np.flatnonzero(self.layers[segment.layer].on_row[segment.label_value])
        return (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)


def segmentation_census(layered: LayeredSegmentation, workers: int = 2) -> SegmentationCensus:
    layers = []
    for index, layer in enumerate(layered.layers):
        used = [s.label_value for s in layered.segments if s.layer == index and s.label_value > 0]
        layers.append(layer_census(layer, max(used, default=0) + 1, workers))
    return SegmentationCensus(layers)
