"""Which transfer syntax for DICOM SEG: file size, write and read time, and whether dcmqi reads it, for every
compression we offer, on the real TotalSegmentator labels (61 organs at their 1.5 mm grid, LABELMAP) and on the
same labels with 20 dilated margins (overlapping, BINARY), against the gzip seg.nrrd SimpleITK writes. Deflate is
run as exported by default ("deflate-default": the level seg_options.default_deflate_level picks for this size),
and with each backend (ISA-L when ``isal`` is installed, and zlib, the fallback) at that backend's default level;
"zlib read" is the load with zlib inflating, as a reader without ISA-L (pydicom, DCMTK) would. RLE (LABELMAP) is
written by the streamed writer with its default encoder (GDCM when python-gdcm is installed), with pylibjpeg-rle
(the fallback, "rle-pylibjpeg-rle") and, as "rle-highdicom", by highdicom building every frame; each case ends
with the ratio of every export's write time to the default deflate export's (issue 12: RLE within 2x).
The LABELMAP case then times deflate and RLE exports interleaved (the ratios issue 12 is judged on);
--seg-speed-slices N adds the same on seg_speed.py's LABELMAP cases (117 and 1000 segments on a 512x512xN grid:
16-bit frames for 1000).

    .venv/bin/python Testing/Benchmarks/seg_compression_speed.py [--repeats 3] [--json seg_compression.json]
        [--seg-speed-slices 200]
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


def interleaved_rle_ratios(case: str, layered, series, folder: Path, repeats: int) -> list[dict]:
    """Write time of the RLE LABELMAP export (each encoder) over the deflate export's, the exports interleaved so
    that the load of a shared machine hits them alike (the table above times each variant's repeats in a row)."""
    from SegmentationQALib.seg import streamed
    from SegmentationQALib.seg.options import Compression, SegExportOptions, SegType
    from SegmentationQALib.seg.write import write_seg

    default_rle = streamed.rle_encoder()
    encoders = [default_rle] + ([streamed.PYLIBJPEG_RLE] if default_rle != streamed.PYLIBJPEG_RLE else [])
    variants = [("deflate", Compression.DEFLATE, default_rle)] + [
        (f"rle-{encoder.name}", Compression.RLE, encoder) for encoder in encoders]
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    sizes = {}
    for _ in range(repeats):
        for name, compression, encoder in variants:
            streamed.RLE_ENCODER = encoder
            start = time.perf_counter()
            result = write_seg(layered, series, folder / f"interleaved-{name}.dcm",
                               SegExportOptions(seg_type=SegType.LABELMAP, compression=compression))
            times[name].append(time.perf_counter() - start)
            sizes[name] = result.file_size_bytes
    streamed.RLE_ENCODER = default_rle
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{case}, interleaved: " + ", ".join(
        f"{name} {medians[name]:.3f} s {sizes[name] / 1e6:.2f} MB"
        + (f" ({medians[name] / medians['deflate']:.2f}x)" if name != "deflate" else "")
        for name, _, _ in variants), flush=True)
    return [{"case": case, "interleaved": True, "compression": compression.value, "variant": name,
             "writer": "streamed", "rle_encoder": encoder.name if compression == Compression.RLE else None,
             "file_bytes": sizes[name], "write_seconds": medians[name],
             "write_ratio_to_deflate": medians[name] / medians["deflate"]} for name, compression, encoder in variants]


def seg_speed_ratios(data: Path, work: Path, slices: int, repeats: int) -> list[dict]:
    """interleaved_rle_ratios on seg_speed.py's LABELMAP cases (512x512x``slices``)."""
    import seg_speed

    from DicomFidelityCommonLib.dicom.series import read_image_series

    (work / "seg_speed").mkdir()
    ct_dir, built = seg_speed.build_cases(data, work / "seg_speed", slices, 512, [117, 1000], ["labelmap"])
    series = read_image_series(ct_dir)
    rows = []
    for case in built:
        rows += interleaved_rle_ratios(f"{case['name']} (512x512x{slices})", seg_speed.load_case(case["folder"]),
                                       series, work / "seg_speed", repeats)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat")
    parser.add_argument("--json", default="seg_compression.json")
    parser.add_argument("--seg-speed-slices", type=int, default=0,
                        help="also time deflate vs RLE on seg_speed.py's LABELMAP cases at 512x512xN (0: skip)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    import seg_speed
    import SimpleITK as sitk

    from DicomFidelityCommonLib.dicom import deflate as seg_stream
    from DicomFidelityCommonLib.geometry import VolumeGeometry
    from SegmentationQALib.reference_series import write_reference_series
    from SegmentationQALib.seg import streamed
    from SegmentationQALib.seg.options import (
        ISAL_DEFLATE_LEVEL_BY_TYPE,
        ZLIB_DEFLATE_LEVEL_BY_TYPE,
        Compression,
        SegExportOptions,
        SegType,
        SegWriter,
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
            default_rle = streamed.rle_encoder()
            if Compression.RLE.supports(seg_type):  # the fallback encoder, and highdicom building every frame
                index = variants.index((Compression.RLE, None))
                extra = ([streamed.PYLIBJPEG_RLE.name] if default_rle != streamed.PYLIBJPEG_RLE else []) + ["highdicom"]
                variants[index + 1:index + 1] = [(Compression.RLE, other) for other in extra]
            for compression, variant in variants:  # variant: the deflate backend, or how RLE is written
                name = compression.value + (f"-{variant}" if variant else "")
                backend = variant if compression == Compression.DEFLATE else None
                writer = SegWriter.HIGHDICOM if variant == "highdicom" else None
                rle_encoder = streamed.PYLIBJPEG_RLE if variant == streamed.PYLIBJPEG_RLE.name else default_rle
                streamed.RLE_ENCODER = rle_encoder
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
                    written = write_seg(layered, series, path, options, writer=writer)
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
                streamed.RLE_ENCODER = default_rle
                row = {"case": case, "compression": compression.value, "deflate_backend": backend,
                       "writer": written.writer, "variant": name,
                       "rle_encoder": rle_encoder.name if compression == Compression.RLE and writer is None else None,
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
                      f"dcmqi {'yes' if row['dcmqi_reads'] else 'no'}  ({row['writer']}"
                      f"{', ' + row['rle_encoder'] if row['rle_encoder'] else ''})", flush=True)
            case_rows = [row for row in rows if row["case"] == case]
            deflate = next(row for row in case_rows
                           if row["compression"] == "deflate" and row["deflate_backend"] == "default")
            for row in case_rows:
                row["write_ratio_to_deflate"] = row["write_seconds"] / deflate["write_seconds"]
            print("  write time / deflate-default's: " + ", ".join(
                f"{row['variant']} {row['write_ratio_to_deflate']:.2f}x" for row in case_rows
                if row["compression"] != "deflate"), flush=True)
            if seg_type == SegType.LABELMAP:
                rows += interleaved_rle_ratios(case, layered, series, work, max(args.repeats, 5))
        if args.seg_speed_slices:
            rows += seg_speed_ratios(Path(args.data), work, args.seg_speed_slices, args.repeats)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
