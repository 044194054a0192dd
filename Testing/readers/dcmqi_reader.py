"""dcmqi: segimage2itkimage (DCMTK inside) writes one NRRD per non-overlapping group of segments + meta.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from DicomFidelityCommonLib.geometry import VolumeGeometry
from readers.base import Reader, ReaderUnsupported, ReadResult, run_tool

EXE = Path(sys.executable).with_name("segimage2itkimage")


def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
    workdir.mkdir(parents=True, exist_ok=True)
    run_tool([EXE, "--inputDICOM", seg_path, "--outputDirectory", workdir, "--outputType", "nrrd"], "segimage2itkimage")
    if not (workdir / "meta.json").is_file():
        raise ReaderUnsupported("segimage2itkimage exit 0 but wrote no meta.json")
    meta = json.loads((workdir / "meta.json").read_text())
    header = pydicom.dcmread(seg_path, stop_before_pixels=True)
    number_of_label = {s.SegmentLabel: int(s.SegmentNumber) for s in header.SegmentSequence}  # unique here
    segments = {}
    for file_index, group in enumerate(meta["segmentAttributes"], start=1):
        image = sitk.ReadImage(str(workdir / f"{file_index}.nrrd"))
        array = sitk.GetArrayFromImage(image)
        geometry = VolumeGeometry.from_sitk(image)
        for attributes in group:
            if attributes["labelID"] == 0:
                continue
            number = number_of_label[attributes["SegmentLabel"]]
            kji = np.argwhere(array == attributes["labelID"])
            segments[number] = geometry.index_to_lps(kji[:, ::-1].astype(float))
    return ReadResult(segments)


def version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("dcmqi")
    except Exception:  # noqa: BLE001 - a version string only
        return "?"


READER = Reader("dcmqi", version, read)
