"""The SEG outputs the matrix reads: `segqa export-seg` on a crop of the TotalSegmentator CT and its labels (real
data, 16 slices of 101 x 122: 37 labels, and a frame size that is not a multiple of 8, so BINARY frames do not start
on byte boundaries), once per output kind. The overlapping kinds export the same labels plus one segment over all of
them (the union of the labels, in a second .seg.nrrd layer), which makes the export choose BINARY."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from DicomFidelityCommonLib.geometry import VolumeGeometry

TOTALSEG = "totalsegmentator/reference_files"
SLICES = slice(88, 104)


@dataclass(frozen=True)
class OutputKind:
    name: str
    flags: tuple[str, ...]
    seg_type: str  # what the export must have written
    transfer_syntax: str
    description: str
    overlapping: bool = False  # the input has the extra segment overlapping every other one


OUTPUT_KINDS = (
    OutputKind("default", ("--compatibility", "default"), "labelmap", "1.2.840.10008.1.2.1.99",
               "`--compatibility default`: LABELMAP, Deflated Explicit VR LE"),
    OutputKind("viewer", ("--compatibility", "viewer"), "labelmap", "1.2.840.10008.1.2.5",
               "`--compatibility viewer`: LABELMAP, RLE Lossless"),
    OutputKind("legacy", ("--compatibility", "legacy"), "binary", "1.2.840.10008.1.2.1",
               "`--compatibility legacy`: BINARY, Explicit VR LE"),
    OutputKind("binary-deflate", ("--seg-type", "binary", "--compression", "deflate"), "binary",
               "1.2.840.10008.1.2.1.99", "`--seg-type binary --compression deflate`: BINARY, Deflated"),
    OutputKind("labelmap-none", ("--seg-type", "labelmap", "--compression", "none"), "labelmap",
               "1.2.840.10008.1.2.1", "`--seg-type labelmap --compression none`: LABELMAP, Explicit VR LE"),
    OutputKind("overlap-default", ("--compatibility", "default"), "binary", "1.2.840.10008.1.2.1.99",
               "overlapping segments, `--compatibility default`: BINARY, Deflated", overlapping=True),
    OutputKind("overlap-viewer", ("--compatibility", "viewer"), "binary", "1.2.840.10008.1.2.1",
               "overlapping segments, `--compatibility viewer`: BINARY, Explicit VR LE", overlapping=True),
)
KINDS_BY_NAME = {k.name: k for k in OUTPUT_KINDS}


OVERLAP_NAME = "all labels"


@dataclass
class SourceLabels:
    """The labels the SEGs were made from: what every reader's segments are compared with."""

    geometry: VolumeGeometry
    masks: dict[str, np.ndarray]  # segment name -> (slices, rows, columns) mask


@dataclass
class Case:
    kind: OutputKind
    seg_path: Path
    reference_dir: Path
    export: dict  # the --json of the export
    masks: dict[int, np.ndarray]  # segment number (as exported) -> the source mask it must hold


def write_sources(data_dir: Path, workdir: Path) -> tuple[Path, dict[bool, Path], SourceLabels]:
    """Crop the CT and labels into ``workdir`` as a user would hand them to segqa: a NIfTI label volume, and a
    .seg.nrrd of the same labels plus their union as an overlapping segment."""
    from SegmentationQALib.seg_nrrd import write_seg_nrrd
    from SegmentationQALib.segmentation import LayeredSegmentation, Segment

    workdir.mkdir(parents=True, exist_ok=True)
    ct = sitk.ReadImage(str(data_dir / TOTALSEG / "example_ct.nii.gz"))[:, :, SLICES]
    labels = sitk.ReadImage(str(data_dir / TOTALSEG / "example_seg_fast_force_split.nii.gz"))[:, :, SLICES]
    ct_path, labels_path, overlap_path = workdir / "ct.nii.gz", workdir / "labels.nii.gz", workdir / "overlap.seg.nrrd"
    sitk.WriteImage(ct, str(ct_path))
    sitk.WriteImage(labels, str(labels_path))
    array = sitk.GetArrayFromImage(labels)
    geometry = VolumeGeometry.from_sitk(labels)
    values = [int(v) for v in np.unique(array) if v != 0]
    masks = {f"Segment_{v}": array == v for v in values}
    masks[OVERLAP_NAME] = array != 0
    segments = [Segment(f"Segment_{v}", 0, v, segment_id=f"Segment_{v}") for v in values]
    segments.append(Segment(OVERLAP_NAME, 1, 1, (1.0, 1.0, 0.0), segment_id="all_labels"))
    layered = LayeredSegmentation(geometry, [array, masks[OVERLAP_NAME].astype(array.dtype)], segments)
    write_seg_nrrd(layered, overlap_path)
    return ct_path, {False: labels_path, True: overlap_path}, SourceLabels(geometry, masks)


def export(kind: OutputKind, ct_path: Path, segmentation_path: Path, source: SourceLabels, workdir: Path) -> Case:
    """`segqa export-seg` (its main, in this process: Slicer's libraries load once for all kinds)."""
    from SegmentationQALib import cli

    out, report = workdir / kind.name, workdir / f"{kind.name}.json"
    messages = io.StringIO()
    with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(messages):
        code = cli.main(["export-seg", "--segmentation", str(segmentation_path), "--reference", str(ct_path),
                         "--output-dir", str(out), "--export-reference", "--json", str(report), "--quiet", *kind.flags])
    if code != 0:
        raise RuntimeError(f"segqa export-seg {' '.join(kind.flags)} failed: {messages.getvalue().strip()[-500:]}")
    result = json.loads(report.read_text())
    if result["seg_type"] != kind.seg_type or result["transfer_syntax_uid"] != kind.transfer_syntax:
        raise RuntimeError(f"{kind.name}: expected {kind.seg_type} {kind.transfer_syntax}, "
                           f"got {result['seg_type']} {result['transfer_syntax_uid']}")
    names = {int(s["number"]): s["label"] for s in result["segments"]}
    expected = {name for name in source.masks if kind.overlapping or name != OVERLAP_NAME}
    if set(names.values()) != expected:
        raise RuntimeError(f"{kind.name}: exported segments {sorted(names.values())} are not {sorted(expected)}")
    return Case(kind, Path(result["seg_path"]), Path(result["reference_paths"][0]).parent, result,
                {number: source.masks[name] for number, name in names.items()})


def build_cases(data_dir: Path, workdir: Path, kinds=OUTPUT_KINDS) -> tuple[SourceLabels, list[Case]]:
    ct_path, inputs, source = write_sources(data_dir, workdir / "source")
    return source, [export(kind, ct_path, inputs[kind.overlapping], source, workdir) for kind in kinds]
