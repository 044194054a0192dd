"""Test helpers: compare segment masks in patient space, whatever grid (order, flips, crops) each one is on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from DicomFidelityCommonLib.geometry import VolumeGeometry


def patient_points(geometry: VolumeGeometry, mask: np.ndarray) -> set[tuple]:
    """Voxel centres (LPS, rounded to 0.01 mm) of the non-zero voxels: comparable across grids."""
    kji = np.argwhere(mask)
    lps = geometry.index_to_lps(kji[:, ::-1].astype(float))
    return {tuple(p) for p in np.round(lps, 2)}


def assert_same_voxels(geometry_a, mask_a, geometry_b, mask_b, what=""):
    a, b = patient_points(geometry_a, mask_a), patient_points(geometry_b, mask_b)
    assert len(a) > 0, f"{what}: empty mask"
    assert a == b, f"{what}: {len(a - b)} voxels only in A, {len(b - a)} only in B (of {len(a)}/{len(b)})"


def dcmqi_segments(seg_path: Path, out_dir: Path) -> dict[int, tuple[VolumeGeometry, np.ndarray, str]]:
    """Read a SEG with dcmqi's segimage2itkimage: {segment number: (geometry, mask, label)}."""
    exe = Path(sys.executable).with_name("segimage2itkimage")
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(exe), "--inputDICOM", str(seg_path), "--outputDirectory", str(out_dir), "--outputType", "nrrd"],
                   check=True, capture_output=True, timeout=600)
    return {number: (geometry, mask, attributes["SegmentLabel"])
            for number, (geometry, mask, attributes) in enumerate(dcmqi_output_segments(out_dir), start=1)}


def dcmqi_output_segments(out_dir: Path):
    """(geometry, mask, meta.json attributes) of every segment segimage2itkimage wrote into ``out_dir``, in order."""
    meta = json.loads((out_dir / "meta.json").read_text())
    for file_index, group in enumerate(meta["segmentAttributes"], start=1):
        image = sitk.ReadImage(str(out_dir / f"{file_index}.nrrd"))
        array = sitk.GetArrayFromImage(image)
        geometry = VolumeGeometry.from_sitk(image)
        for attributes in group:
            if attributes["labelID"] != 0:  # a LABELMAP may describe its background as segment 0
                yield geometry, array == attributes["labelID"], attributes


# Differ between any two exports by design (new UIDs, creation time).
PER_INSTANCE = {"SOPInstanceUID", "SeriesInstanceUID", "ContentDate", "ContentTime", "InstanceCreationDate",
                "InstanceCreationTime", "SeriesDate", "SeriesTime", "PixelData", "PerFrameFunctionalGroupsSequence",
                "DimensionOrganizationSequence", "DimensionIndexSequence"}


def assert_same_seg(fast_path, slow_path):
    """Two SEGs hold the same object: every attribute but the per-instance ones, every frame, every pixel."""
    fast, slow = pydicom.dcmread(fast_path), pydicom.dcmread(slow_path)
    for ds in (fast, slow):
        for item in ds.get("ContributingEquipmentSequence", []):
            item.pop("ContributionDateTime", None)  # the time of writing
    assert fast.file_meta.TransferSyntaxUID == slow.file_meta.TransferSyntaxUID
    keys = {e.keyword for e in fast} | {e.keyword for e in slow}
    for keyword in sorted(keys - PER_INSTANCE):
        assert fast.get(keyword) == slow.get(keyword), keyword
    for a, b in zip(fast.DimensionIndexSequence, slow.DimensionIndexSequence):
        assert (a.DimensionIndexPointer == b.DimensionIndexPointer
                and a.FunctionalGroupPointer == b.FunctionalGroupPointer)
    assert (len(fast.PerFrameFunctionalGroupsSequence) == len(slow.PerFrameFunctionalGroupsSequence)
            == fast.NumberOfFrames)
    for index, (a, b) in enumerate(zip(fast.PerFrameFunctionalGroupsSequence, slow.PerFrameFunctionalGroupsSequence)):
        assert a == b, f"frame {index + 1}"
    assert np.array_equal(fast.pixel_array, slow.pixel_array)


def three_hundred_overlapping_segments(geometry: VolumeGeometry):
    """300 3x3 segments on two layers, half of them overlapping others, on a grid whose frames are not
    byte-aligned in 1-bit pixel data (23x38 in the dcmqi sample)."""
    from SegmentationQALib.segmentation import LayeredSegmentation, Segment

    shape = geometry.shape
    assert (shape[1] * shape[2]) % 8 != 0
    rng = np.random.default_rng(1)
    layers = [np.zeros(shape, np.uint16), np.zeros(shape, np.uint16)]
    segments = []
    for number in range(1, 301):
        layer = number % 2
        k, r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1] - 3), rng.integers(0, shape[2] - 3)
        layers[layer][k, r:r + 3, c:c + 3] = number // 2 + 1 if layer else (number + 1) // 2
        segments.append(Segment(f"s{number}", layer, int(layers[layer][k, r, c]), tuple(rng.random(3))))
    return LayeredSegmentation(geometry, layers, segments)
