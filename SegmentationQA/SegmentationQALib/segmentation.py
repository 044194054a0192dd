"""In-memory segmentation model: Slicer's shared-labelmap layout, without Slicer.

Slicer stores a segmentation as a few *layers* (label volumes); each segment is one label value in one layer, and
segments overlap only across layers. Keeping that layout (instead of one boolean mask per segment) is what makes
1000-segment segmentations cheap: a LABELMAP SEG is one layer, a BINARY SEG is built per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from DicomFidelityCommonLib.errors import GeometryError
from DicomFidelityCommonLib.geometry import VolumeGeometry, resample_labels


@dataclass(frozen=True)
class CodedTerm:
    """A DICOM coded concept (CodeValue, CodingSchemeDesignator, CodeMeaning)."""

    value: str
    scheme: str
    meaning: str

    def to_json(self) -> dict:
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}

    def to_slicer(self) -> str:
        """Slicer's terminology string form: 'scheme^value^meaning'."""
        return f"{self.scheme}^{self.value}^{self.meaning}"

    @classmethod
    def from_slicer(cls, text: str | None) -> CodedTerm | None:
        if not text:
            return None
        parts = text.split("^")
        if len(parts) < 3 or not parts[0] or not parts[1]:
            return None
        return cls(value=parts[1], scheme=parts[0], meaning="^".join(parts[2:]))


@dataclass(frozen=True)
class SegmentTerminology:
    """Segment category/type (required by DICOM SEG) and optional modifier and anatomic region."""

    category: CodedTerm
    type: CodedTerm
    type_modifier: CodedTerm | None = None
    anatomic_region: CodedTerm | None = None
    anatomic_region_modifier: CodedTerm | None = None

    def to_json(self) -> dict:
        return {k: (v.to_json() if v is not None else None) for k, v in self.__dict__.items()}

    def is_generic_default(self) -> bool:
        """Slicer gives every new segment category and type 'Tissue' (SCT 85756007): that means 'not chosen'."""
        tissue = ("85756007", "SCT")
        return ((self.category.value, self.category.scheme) == tissue and (self.type.value, self.type.scheme) == tissue
                and self.type_modifier is None and self.anatomic_region is None)

    def to_slicer(self, context: str = "Segmentation category and type - DICOM master list") -> str:
        """Slicer's tag value (vtkSegment 'TerminologyEntry'):
        context~category~type~typeModifier~regionContext~region~regionModifier."""

        def term(value: CodedTerm | None) -> str:
            return value.to_slicer() if value is not None else "^^"

        region_context = "Anatomic codes - DICOM master list" if self.anatomic_region is not None else ""
        return "~".join([context, term(self.category), term(self.type), term(self.type_modifier), region_context,
                         term(self.anatomic_region), term(self.anatomic_region_modifier)])

    @classmethod
    def from_slicer(cls, text: str | None) -> SegmentTerminology | None:
        if not text:
            return None
        parts = text.split("~")
        if len(parts) < 3:
            return None
        parts += [""] * (7 - len(parts))
        category, type_ = CodedTerm.from_slicer(parts[1]), CodedTerm.from_slicer(parts[2])
        if category is None or type_ is None:
            return None
        return cls(category, type_, CodedTerm.from_slicer(parts[3]), CodedTerm.from_slicer(parts[5]),
                   CodedTerm.from_slicer(parts[6]))


@dataclass
class Segment:
    """One segment: where it lives (layer, label value) and how it is described."""

    name: str
    layer: int
    label_value: int
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)  # RGB in 0..1
    terminology: SegmentTerminology | None = None
    segment_id: str = ""
    algorithm_type: str | None = None  # MANUAL, SEMIAUTOMATIC or AUTOMATIC; None: not stated (the export option)
    algorithm_name: str | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "segment_id": self.segment_id,
            "layer": self.layer,
            "label_value": self.label_value,
            "color": [round(float(c), 4) for c in self.color],
            "terminology": self.terminology.to_json() if self.terminology else None,
            "algorithm_type": self.algorithm_type,
            "algorithm_name": self.algorithm_name,
        }


SLAB_SLICES = 16  # slices processed at a time by the slab-wise passes


@dataclass
class LayeredSegmentation:
    """Segments on one grid, stored as label layers (arrays indexed [slice, row, column])."""

    geometry: VolumeGeometry
    layers: list[np.ndarray] = field(repr=False)
    segments: list[Segment]

    def __post_init__(self):
        for index, layer in enumerate(self.layers):
            if tuple(layer.shape) != tuple(self.geometry.shape):
                raise GeometryError(f"layer {index} has shape {layer.shape}, geometry is {self.geometry.shape}")
        for segment in self.segments:
            if not 0 <= segment.layer < len(self.layers):
                raise GeometryError(f"segment {segment.name!r} refers to missing layer {segment.layer}")

    def mask(self, index: int) -> np.ndarray:
        segment = self.segments[index]
        return self.layers[segment.layer] == segment.label_value

    def voxel_counts(self) -> list[int]:
        """Voxels per segment, one bincount per layer (not one pass per segment)."""
        counts_per_layer = [label_counts(layer) for layer in self.layers]
        result = []
        for segment in self.segments:
            counts = counts_per_layer[segment.layer]
            result.append(int(counts[segment.label_value]) if 0 < segment.label_value < counts.size else 0)
        return result

    def has_overlap(self) -> bool:
        """True when at least one voxel belongs to two segments (only possible across layers).

        Checked slab by slab through a per-layer membership table, so no volume-sized temporaries.
        """
        if len(self.layers) < 2:
            return False
        tables = []  # per layer: 1 for its segments' values; the last entry (0) takes anything above
        for index in range(len(self.layers)):
            used = [s.label_value for s in self.segments if s.layer == index and s.label_value > 0]
            table = np.zeros(max(used, default=0) + 2, dtype=np.uint8)
            table[used] = 1
            tables.append(table)
        for k in range(0, self.geometry.shape[0], SLAB_SLICES):
            covered = None
            for table, layer in zip(tables, self.layers):
                member = np.take(table, layer[k:k + SLAB_SLICES], mode="clip")  # negative values -> 0
                covered = member if covered is None else covered + member
            if covered.max() > 1:
                return True
        return False

    def segment_number_tables(self, dtype, maxima: Sequence[int] | None = None) -> list[np.ndarray | None]:
        """Per layer, the table from stored label values to segment numbers (1..N in segment order, 0 for values
        no segment has); None for a lone layer already stored that way, which needs no mapping (nor a copy).
        ``maxima``: each layer's largest value when already known (a census), which saves a pass over it."""
        tables: list[np.ndarray | None] = []
        for index, layer in enumerate(self.layers):
            members = [(n, s.label_value) for n, s in enumerate(self.segments, start=1) if s.layer == index]
            if not members:
                tables.append(np.zeros(1, dtype=dtype))
                continue
            largest = maxima[index] if maxima is not None else (int(layer.max()) if layer.size else 0)
            top = max(largest, max(v for _, v in members))
            table = np.zeros(top + 1, dtype=dtype)
            for number, value in members:
                table[value] = number
            identity = (len(self.layers) == 1 and layer.dtype == np.dtype(dtype)
                        and bool(np.all(table[1:] == np.arange(1, table.size, dtype=table.dtype))))
            tables.append(None if identity else table)
        return tables

    def segment_numbers(self, tables: list[np.ndarray | None], pick=slice(None)) -> np.ndarray:
        """Segment numbers of the voxels ``pick`` selects along the slice axis, through ``segment_number_tables``
        (requires no overlap: the layers' numbers are summed)."""
        if tables[0] is None:
            return self.layers[0][pick]
        out = None
        for table, layer in zip(tables, self.layers):
            mapped = np.take(table, layer[pick], mode="clip")
            out = mapped if out is None else out + mapped
        return out

    def as_single_labelmap(self, dtype=None) -> tuple[np.ndarray, list[int]]:
        """One label volume with values 1..N in segment order (requires no overlap); returns it and the values.
        A lone layer already numbered that way is returned as it is, without a copy."""
        count = len(self.segments)
        dtype = dtype or (np.uint8 if count < 256 else np.uint16)
        return self.segment_numbers(self.segment_number_tables(dtype)), list(range(1, count + 1))

    def resampled_to(self, geometry: VolumeGeometry) -> tuple[LayeredSegmentation, int]:
        """Nearest-neighbour resample every layer onto ``geometry``.

        Returns the result and how many source voxels change label when the result is mapped back to the source
        grid (0 when the grids coincide up to a flip or a crop/pad that loses nothing).
        """
        if self.geometry.is_close(geometry):
            return self, 0
        layers, changed = [], 0
        for layer in self.layers:
            forward = resample_labels(layer, self.geometry, geometry)
            back = resample_labels(forward, geometry, self.geometry)
            changed += int(np.count_nonzero(back != layer))
            layers.append(forward)
        return LayeredSegmentation(geometry, layers, list(self.segments)), changed

    def subset(self, indices: Sequence[int]) -> LayeredSegmentation:
        return LayeredSegmentation(self.geometry, self.layers, [self.segments[i] for i in indices])

    @classmethod
    def from_label_volume(cls, geometry: VolumeGeometry, labels: np.ndarray, names: dict[int, str] | None = None,
                          colors: dict[int, tuple[float, float, float]] | None = None) -> LayeredSegmentation:
        """Segments from a multi-label volume (one segment per non-zero value)."""
        values = np.unique(labels)
        values = [int(v) for v in values if v != 0]
        segments = [
            Segment(name=(names or {}).get(v, f"Segment_{v}"), layer=0, label_value=v,
                    color=(colors or {}).get(v, default_color(v)), segment_id=f"Segment_{v}")
            for v in values
        ]
        return cls(geometry, [labels], segments)


class LayerPlacer:
    """Puts masks, possibly overlapping, into as few label layers as possible: each into the first layer where it
    overlaps nothing (Slicer's shared-labelmap rule), a new layer when none is free. Layers are uint8: a layer takes
    up to 255 masks. Every mask gets a (layer, label value), an empty one too (a value with no voxels)."""

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(int(s) for s in shape)
        self.layers: list[np.ndarray] = []
        self._used: list[int] = []  # the highest label value handed out per layer

    def place(self, block: np.ndarray | None, offset: Sequence[int] = (0, 0, 0)) -> tuple[int, int]:
        """Place the boolean ``block`` whose first voxel is at ``offset`` (slice, row, column); None is empty."""
        box = tuple(slice(o, o + s) for o, s in zip(offset, block.shape)) if block is not None else None
        for index, layer in enumerate(self.layers):
            label = self._used[index] + 1
            if label > np.iinfo(layer.dtype).max:
                continue
            if box is not None:
                target = layer[box]
                if np.any(target[block]):
                    continue
                target[block] = label
            self._used[index] = label
            return index, label
        self.layers.append(np.zeros(self.shape, dtype=np.uint8))
        self._used.append(1)
        if box is not None:
            self.layers[-1][box][block] = 1
        return len(self.layers) - 1, 1

    def finish(self) -> list[np.ndarray]:
        """The layers (at least one, empty when nothing was placed)."""
        if not self.layers:
            self.layers.append(np.zeros(self.shape, dtype=np.uint8))
        return self.layers


def label_counts(labels: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Voxels per label value. Chunked: np.bincount widens its whole input to int64 first, which for a
    512x512x200 volume is a 400 MB temporary and 6x slower than counting cache-sized pieces."""
    flat = labels.reshape(-1)
    if flat.size == 0:
        return np.zeros(1, np.int64)
    if flat.dtype.kind not in "ui":
        flat = flat.astype(np.int64)
    counts = np.zeros(int(flat.max()) + 1, dtype=np.int64)
    for start in range(0, flat.size, chunk):
        part = np.bincount(flat[start:start + chunk])
        counts[: part.size] += part
    return counts


def default_color(index: int) -> tuple[float, float, float]:
    """Distinct, stable colours for segments that have none (golden-angle hue walk)."""
    import colorsys

    hue = (index * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.65, 0.9)
