"""Which transfer syntax for DICOM SEG: file size, write and read time, and whether dcmqi reads it, for every
compression we offer, on the real TotalSegmentator labels (61 organs at their 1.5 mm grid, LABELMAP) and on the
same labels with 20 dilated margins (overlapping, BINARY), against the gzip seg.nrrd SimpleITK writes. Deflate is
run as exported by default ("deflate-default": the level seg_options.default_deflate_level picks for this size),
and with each backend (ISA-L when ``isal`` is installed, and zlib, the fallback) at that backend's default level;
"zlib read" is the load with zlib inflating, as a reader without ISA-L (pydicom, DCMTK) would.

    .venv/bin/python Testing/Benchmarks/seg_compression_speed.py [--repeats 3] [--json seg_compression.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "SegmentationQA"), str(HERE)]


def dcmqi_reads(path: Path, out: Path) -> bool:
    out.mkdir()
    binary = Path(sys.executable).with_name("segimage2itkimage")
    done = subprocess.run([str(binary), "--inputDICOM", str(path), "--outputDirectory", str(out), "-t", "nrrd"],
                          capture_output=True, text=True)
    return done.returncode == 0 and any(out.glob("*.nrrd"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat")
    parser.add_argument("--json", default="seg_compression.json")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    import seg_speed
    import SimpleITK as sitk

    from DicomFidelityCommonLib.dicom import deflate as seg_stream
    from DicomFidelityCommonLib.geometry import VolumeGeometry
    from SegmentationQALib.reference_series import write_reference_series
    from SegmentationQALib.seg.options import (
        ISAL_DEFLATE_LEVEL_BY_TYPE,
        ZLIB_DEFLATE_LEVEL_BY_TYPE,
        Compression,
        SegExportOptions,
        SegType,
    )
    from SegmentationQALib.seg.read import load_seg
    from SegmentationQALib.seg.write import write_seg
    from SegmentationQALib.segmentation import LayeredSegmentation, Segment

    files = Path(args.data) / "totalsegmentator" / "reference_files"
    ct = sitk.ReadImage(str(files / "example_ct.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(files / "example_seg_fast_force_split.nii.gz"))).astype(np.uint8)
    geometry = VolumeGeometry.from_sitk(ct)
    values = [int(v) for v in np.unique(labels) if v]
    sizes = np.bincount(labels.ravel())
    biggest = sorted(values, key=lambda v: -sizes[v])[: seg_speed.MARGIN_ORGANS]
    rows = []
    default_backend = seg_stream.BACKEND
    with tempfile.TemporaryDirectory(prefix="seg_compression-") as work:
        work = Path(work)
        series = write_reference_series(sitk.GetArrayFromImage(ct), geometry, work / "ct")
        cases = {
            "LABELMAP (61 organs)": LayeredSegmentation(
                geometry, [labels], [Segment(f"organ {v}", 0, v) for v in values]),
            "BINARY (61 organs + 20 margins)": LayeredSegmentation(
                geometry, [labels, seg_speed.margins(labels, biggest)],
                [Segment(f"organ {v}", 0, v) for v in values]
                + [Segment(f"margin {n}", 1, n) for n in range(1, len(biggest) + 1)]),
        }
        for case, layered in cases.items():
            seg_type = SegType.BINARY if case.startswith("BINARY") else SegType.LABELMAP
            array = layered.layers[0] if len(layered.layers) == 1 else np.stack(layered.layers, axis=-1)
            nrrd = work / "labels.seg.nrrd"
            sitk.WriteImage(sitk.GetImageFromArray(array, isVector=len(layered.layers) > 1), str(nrrd), True)
            reference = nrrd.stat().st_size
            print(f"{case}: gzip seg.nrrd {reference / 1e6:.3f} MB", flush=True)
            variants = [(compression, None) for compression in Compression if compression.supports(seg_type)]
            index = variants.index((Compression.DEFLATE, None))
            backends = ["default"] + (["isal"] if seg_stream.isal_zlib is not None else []) + ["zlib"]
            variants[index:index + 1] = [(Compression.DEFLATE, backend) for backend in backends]
            for compression, backend in variants:
                name = compression.value + (f"-{backend}" if backend else "")
                path = work / f"{seg_type.value}-{name}.dcm"
                levels = ISAL_DEFLATE_LEVEL_BY_TYPE if backend == "isal" else ZLIB_DEFLATE_LEVEL_BY_TYPE
                level = levels[seg_type] if backend not in (None, "default") else None  # default: chosen by size
                options = SegExportOptions(seg_type=seg_type, compression=compression, deflate_level=level)
                chosen = (default_backend if backend == "default"
                          else seg_stream.DeflateBackend(seg_stream.isal_zlib if backend == "isal" else None))
                write_times, read_times, zlib_read_times = [], [], []
                for _ in range(args.repeats):
                    seg_stream.BACKEND = chosen
                    start = time.perf_counter()
                    write_seg(layered, series, path, options)
                    write_times.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    load_seg(path)
                    read_times.append(time.perf_counter() - start)
                    if backend == "isal":
                        seg_stream.BACKEND = seg_stream.DeflateBackend(None)
                        start = time.perf_counter()
                        load_seg(path)
                        zlib_read_times.append(time.perf_counter() - start)
                seg_stream.BACKEND = default_backend
                row = {"case": case, "compression": compression.value, "deflate_backend": backend,
                       "deflate_level": level, "file_bytes": path.stat().st_size,
                       "ratio_to_gzip_nrrd": path.stat().st_size / reference,
                       "write_seconds": statistics.median(write_times), "read_seconds": statistics.median(read_times),
                       "zlib_read_seconds": statistics.median(zlib_read_times or read_times) if backend else None,
                       "dcmqi_reads": dcmqi_reads(path, work / f"dq-{seg_type.value}-{name}")}
                rows.append(row)
                zlib_read = f"  zlib read {row['zlib_read_seconds']:.3f} s" if backend == "isal" else ""
                label = name + (f" {level}" if level else "")
                print(f"  {label:<15}{row['file_bytes'] / 1e6:8.3f} MB {row['ratio_to_gzip_nrrd']:6.2f}x  "
                      f"write {row['write_seconds']:.3f} s  read {row['read_seconds']:.3f} s{zlib_read}  "
                      f"dcmqi {'yes' if row['dcmqi_reads'] else 'no'}", flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
