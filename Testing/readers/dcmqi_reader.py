"""dcmqi: segimage2itkimage (DCMTK inside) writes one NRRD per non-overlapping group of segments + meta.json."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom

from readers.base import Reader, ReaderUnsupported, ReadResult, run_tool
from segtools import dcmqi_output_segments

EXE = Path(sys.executable).with_name("segimage2itkimage")


def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
    workdir.mkdir(parents=True, exist_ok=True)
    run_tool([EXE, "--inputDICOM", seg_path, "--outputDirectory", workdir, "--outputType", "nrrd"], "segimage2itkimage")
    if not (workdir / "meta.json").is_file():
        raise ReaderUnsupported("segimage2itkimage exit 0 but wrote no meta.json")
    header = pydicom.dcmread(seg_path, stop_before_pixels=True)
    number_of_label = {s.SegmentLabel: int(s.SegmentNumber) for s in header.SegmentSequence}  # unique here
    segments = {}
    for geometry, mask, attributes in dcmqi_output_segments(workdir):
        kji = np.argwhere(mask)
        segments[number_of_label[attributes["SegmentLabel"]]] = geometry.index_to_lps(kji[:, ::-1].astype(float))
    return ReadResult(segments)


def version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("dcmqi")
    except Exception:  # noqa: BLE001 - a version string only
        return "?"


READER = Reader("dcmqi", version, read)
