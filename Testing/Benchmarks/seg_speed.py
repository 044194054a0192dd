"""Issue 3 benchmark: DICOM SEG export/load vs seg.nrrd, from ~100 to 1000 segments, against highdicom, pydicom-seg
and dcmqi, in the same run.

Cases are built from real labels: TotalSegmentator's multi-label example_seg_fast_force_split.nii.gz (61 organs on
example_ct.nii.gz; names in the class order of example_seg_fast/statistics.json) is split into compact sub-blocks
(the largest segment halved along its longest axis, repeatedly) until it has 117 (TotalSegmentator's class count)
or 1000 segments, then nearest-upsampled onto a 512x512xN grid (N = --slices) that gets a real CT series written by
our write_reference_series. The overlapping variants add a second layer with dilated copies ("margins") of the 20
largest organs, so a BINARY SEG is needed.

Every measurement runs in a fresh child process: inputs are loaded first (untimed; for the highdicom-based tools,
ours and highdicom itself, highdicom's standard tables are loaded by an untimed one-plane warm-up, as they are after
the first use in a running Slicer; for the tools that read the CT series, ours, highdicom and dcmqi, its files are
read once untimed, as they are in the page cache after the series was loaded: otherwise the machine's page reclaim
made one export in three read them from disk), then one operation is timed and
its peak memory is the resident-set high-water mark above the resident set just before it (clear_refs), so C/C++
allocations count. Children run under an address-space limit (--mem-limit-gb) so that a tool needing one boolean
volume per segment fails with MemoryError instead of swamping the shared machine. Medians over --repeats runs.

Rows and references (ratio column):
  writes (ours from a segmentation node, peers from arrays) -> SimpleITK gzip seg.nrrd write;
  array reads -> SimpleITK seg.nrrd read; loads into a segmentation node -> our logic's loadSegmentationFile of the
  seg.nrrd that our logic's saveSegmentationFile wrote. Each DICOM tool reads the file it wrote. The export is also
  compared with saveSegmentationFile of the same node (the "(alt.)" target row).

    .venv/bin/python Testing/Benchmarks/seg_speed.py [--quick] [--slices 200] [--repeats 3] [--cases labelmap_117,...]
        [--json seg_speed.json] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SegmentationQA"))
sys.path.insert(0, str(REPO / "Testing" / "peers"))
from memory_probe import measure  # noqa: E402  (shared with the peers' environment)

PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
PYDICOMSEG_SCRIPT = REPO / "Testing" / "peers" / "pydicomseg_bench.py"
MARGIN_ORGANS = 20
MARGIN_VOXELS = 2  # on the 3 mm source grid, before upsampling
TISSUE = {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Tissue"}

# operation -> (kind, reference operation for the ratio column, tool)
OPERATIONS = {
    "sitk_nrrd_write": ("write", "sitk_nrrd_write", "SimpleITK seg.nrrd (gzip)"),
    "pynrrd_write": ("write", "sitk_nrrd_write", "pynrrd seg.nrrd (gzip, its default level 9)"),
    "slicer_nrrd_write": ("write", "sitk_nrrd_write", "node -> seg.nrrd (saveSegmentationFile)"),
    "ours_export": ("write", "sitk_nrrd_write", "OURS export (node -> SEG)"),
    "highdicom_write": ("write", "sitk_nrrd_write", "highdicom"),
    "pydicomseg_write": ("write", "sitk_nrrd_write", "pydicom-seg"),
    "dcmqi_write": ("write", "sitk_nrrd_write", "dcmqi itkimage2segimage"),
    "sitk_nrrd_read": ("read", "sitk_nrrd_read", "SimpleITK seg.nrrd read"),
    "pynrrd_read": ("read", "sitk_nrrd_read", "pynrrd seg.nrrd read"),
    "slicer_nrrd_load": ("load", "slicer_nrrd_load", "seg.nrrd -> node (loadSegmentationFile)"),
    "ours_load": ("load", "slicer_nrrd_load", "OURS load (SEG -> node)"),
    "highdicom_read": ("read", "sitk_nrrd_read", "highdicom read (to array)"),
    "pydicomseg_read": ("read", "sitk_nrrd_read", "pydicom-seg read (to array)"),
    "dcmqi_read": ("read", "sitk_nrrd_read", "dcmqi segimage2itkimage"),
}
READ_SOURCE = {  # which write produced the file a read operation reads
    "sitk_nrrd_read": "sitk_nrrd_write", "pynrrd_read": "pynrrd_write", "slicer_nrrd_load": "slicer_nrrd_write",
    "ours_load": "ours_export", "highdicom_read": "highdicom_write", "pydicomseg_read": "pydicomseg_write",
    "dcmqi_read": "dcmqi_write",
}
OUTPUT_NAME = {
    "sitk_nrrd_write": "sitk.seg.nrrd", "pynrrd_write": "pynrrd.seg.nrrd", "slicer_nrrd_write": "slicer.seg.nrrd",
    "ours_export": "ours.seg.dcm", "highdicom_write": "highdicom.seg.dcm", "pydicomseg_write": "pydicomseg.seg.dcm",
    "dcmqi_write": "dcmqi.seg.dcm",
}


# ---------------------------------------------------------------------------------------------- measuring
# ---------------------------------------------------------------------------------------------- building cases
def split_into(labels: np.ndarray, count: int) -> tuple[np.ndarray, list[int]]:
    """Relabel ``labels`` into at least ``count`` segments by halving the largest one along its longest axis.

    Returns the new label volume (values 1..n) and, per new value, the original label it came from.
    """
    flat = labels.ravel()
    index = np.flatnonzero(flat)
    values = flat[index]
    order = np.argsort(values, kind="stable")
    index, values = index[order], values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(values)) + 1]
    groups = list(np.split(index, starts[1:]))
    parents = [int(values[s]) for s in starts]
    heap = [(-len(g), i) for i, g in enumerate(groups)]
    heapq.heapify(heap)
    while len(groups) < count and heap:
        _, i = heapq.heappop(heap)
        group = groups[i]
        if len(group) < 2:
            break
        coords = np.unravel_index(group, labels.shape)
        axis = int(np.argmax([c.max() - c.min() for c in coords]))
        order = np.argsort(coords[axis], kind="stable")
        half = len(group) // 2
        groups[i], new = group[order[:half]], group[order[half:]]
        groups.append(new)
        parents.append(parents[i])
        heapq.heappush(heap, (-len(groups[i]), i))
        heapq.heappush(heap, (-len(new), len(groups) - 1))
    result = np.zeros(labels.shape, dtype=np.uint8 if len(groups) < 256 else np.uint16)
    for number, group in enumerate(groups, start=1):
        result.flat[group] = number
    return result, parents


def margins(labels: np.ndarray, organs: list[int]) -> np.ndarray:
    """Second layer: dilated copies of ``organs`` (later ones win where two margins meet)."""
    from scipy import ndimage

    layer = np.zeros(labels.shape, dtype=np.uint8)
    structure = ndimage.generate_binary_structure(3, 1)
    for number, organ in enumerate(organs, start=1):
        layer[ndimage.binary_dilation(labels == organ, structure, iterations=MARGIN_VOXELS)] = number
    return layer


def target_grid(source, rows_cols: int, slices: int):
    """A CT-like grid over the source field of view: square in-plane pixels, ``rows_cols`` x ``rows_cols`` x ``slices``,
    and per axis the nearest source index of every target voxel (-1 outside the source)."""
    from DicomFidelityCommonLib.geometry import VolumeGeometry

    ns = np.array(source.shape[::-1], dtype=float)  # (i, j, k) sizes
    ss = source.spacing
    in_plane = max(ns[0] * ss[0], ns[1] * ss[1]) / rows_cols
    st = np.array([in_plane, in_plane, ns[2] * ss[2] / slices])
    nt = np.array([rows_cols, rows_cols, slices])
    continuous_first = (ns - 1) / 2 - (nt - 1) / 2 * st / ss  # source index of target voxel 0, per axis
    affine = np.eye(4)
    affine[:3, :3] = source.direction * st
    affine[:3, 3] = source.index_to_lps(continuous_first)
    lookups = []
    for axis in range(3):
        c = np.rint(continuous_first[axis] + np.arange(nt[axis]) * st[axis] / ss[axis]).astype(int)
        c[(c < 0) | (c >= ns[axis])] = -1
        lookups.append(c)
    return VolumeGeometry((slices, rows_cols, rows_cols), affine), lookups


def upsample(array: np.ndarray, lookups) -> np.ndarray:
    """Nearest-neighbour upsampling with the per-axis lookups of target_grid (outside the source: 0)."""
    padded = np.zeros(tuple(s + 1 for s in array.shape), dtype=array.dtype)
    padded[:-1, :-1, :-1] = array  # index -1 is the zero border
    i, j, k = lookups
    return padded[np.ix_(k, j, i)]


def dcmqi_meta(segments: list[dict], layers: int) -> dict:
    """dcmqi metainfo (also pydicom-seg's template format): one attribute list per input label file."""
    attributes = [[] for _ in range(layers)]
    for s in segments:
        attributes[s["layer"]].append({
            "labelID": s["label_value"], "SegmentDescription": s["name"][:64], "SegmentAlgorithmType": "MANUAL",
            "SegmentedPropertyCategoryCodeSequence": TISSUE, "SegmentedPropertyTypeCodeSequence": TISSUE,
            "recommendedDisplayRGBValue": [int(round(c * 255)) for c in s["color"]],
        })
    return {"ContentCreatorName": "DicomFidelity^", "ClinicalTrialSeriesID": "1", "ClinicalTrialTimePointID": "1",
            "SeriesDescription": "Segmentation", "SeriesNumber": "300", "InstanceNumber": "1",
            "BodyPartExamined": "", "segmentAttributes": attributes}


def build_cases(data: Path, work: Path, slices: int, rows_cols: int, counts: list[int],
                wanted) -> tuple[Path, list[dict]]:
    """Write the CT series and every case's inputs under ``work``; returns the CT folder and the case list."""
    import SimpleITK as sitk

    from DicomFidelityCommonLib.geometry import VolumeGeometry
    from SegmentationQALib.reference_series import write_reference_series
    from SegmentationQALib.segmentation import default_color

    files = data / "totalsegmentator" / "reference_files"
    ct_image = sitk.ReadImage(str(files / "example_ct.nii.gz"))
    label_image = sitk.ReadImage(str(files / "example_seg_fast_force_split.nii.gz"))
    source = VolumeGeometry.from_sitk(ct_image)
    if not source.is_close(VolumeGeometry.from_sitk(label_image)):
        raise SystemExit("example_seg_fast_force_split.nii.gz is not on the example_ct.nii.gz grid")
    class_names = list(json.loads((files / "example_seg_fast" / "statistics.json").read_text()))
    labels = sitk.GetArrayFromImage(label_image).astype(np.uint16)
    geometry, lookups = target_grid(source, rows_cols, slices)
    ct = upsample(sitk.GetArrayFromImage(ct_image).astype(np.int16), lookups)
    ct_dir = work / "ct"
    write_reference_series(ct, geometry, ct_dir)
    del ct

    organs = [int(v) for v in np.unique(labels) if v]
    sizes = np.bincount(labels.ravel())
    biggest = sorted(organs, key=lambda v: -sizes[v])[:MARGIN_ORGANS]

    def name(value: int) -> str:
        return class_names[value - 1] if 0 < value <= len(class_names) else f"label_{value}"

    cases = []
    for count in counts:
        split, parents = split_into(labels, count)
        pieces: dict[int, int] = {}
        segments = []
        for number, parent in enumerate(parents, start=1):
            pieces[parent] = pieces.get(parent, 0) + 1
            segments.append({"name": f"{name(parent)} {pieces[parent]}", "layer": 0, "label_value": number,
                             "color": list(default_color(number))})
        for overlap in (False, True):
            layers = [split]
            case_segments = list(segments)
            if overlap:
                layers.append(margins(labels, biggest))
                case_segments += [{"name": f"{name(organ)} margin", "layer": 1, "label_value": number,
                                   "color": list(default_color(len(segments) + number))}
                                  for number, organ in enumerate(biggest, start=1)]
            case_name = f"{'binary' if overlap else 'labelmap'}_{len(case_segments)}"
            if wanted and not any(case_name.startswith(w) for w in wanted):
                continue
            folder = work / case_name
            folder.mkdir()
            label_bytes = 0
            for index, layer in enumerate(layers):
                high = upsample(layer, lookups)
                label_bytes += high.nbytes
                np.save(folder / f"layer{index}.npy", high)
                sitk.WriteImage(geometry.to_sitk(high), str(folder / f"dcmqi_input{index}.nrrd"), False)
            (folder / "segments.json").write_text(json.dumps(case_segments))
            (folder / "geometry.json").write_text(json.dumps({"shape": list(geometry.shape),
                                                              "affine_lps": geometry.affine_lps.tolist()}))
            (folder / "dcmqi_meta.json").write_text(json.dumps(dcmqi_meta(case_segments, len(layers))))
            cases.append({"name": case_name, "folder": folder, "segments": len(case_segments), "layers": len(layers),
                          "seg_type": "BINARY" if overlap else "LABELMAP", "label_bytes": label_bytes,
                          "base_segments": count})
    return ct_dir, cases


# ---------------------------------------------------------------------------------------------- worker (child process)
def load_case(folder: Path):
    from DicomFidelityCommonLib.geometry import VolumeGeometry
    from SegmentationQALib.segmentation import LayeredSegmentation, Segment

    meta = json.loads((folder / "geometry.json").read_text())
    geometry = VolumeGeometry(tuple(meta["shape"]), np.asarray(meta["affine_lps"]))
    segments = [Segment(s["name"], s["layer"], s["label_value"], tuple(s["color"]), segment_id=f"Segment_{n}")
                for n, s in enumerate(json.loads((folder / "segments.json").read_text()), start=1)]
    layers = [np.load(path) for path in sorted(folder.glob("layer*.npy"))]
    return LayeredSegmentation(geometry, layers, segments)


def nrrd_header_fields(layered) -> dict[str, str]:
    """Slicer's per-segment seg.nrrd fields, so the plain writers produce a real .seg.nrrd."""
    fields = {}
    for n, s in enumerate(layered.segments):
        fields.update({f"Segment{n}_ID": s.segment_id, f"Segment{n}_Name": s.name, f"Segment{n}_Layer": str(s.layer),
                       f"Segment{n}_LabelValue": str(s.label_value),
                       f"Segment{n}_Color": " ".join(f"{c:g}" for c in s.color)})
    return fields


def warm_highdicom(ct_dir: Path) -> None:
    """Untimed: build a one-plane highdicom SEG once, so its standard tables (JSON, about 0.3 s, loaded on first
    use and cached for the life of the process, as in a running Slicer) are not charged to the first export."""
    import highdicom as hd
    import pydicom

    source = pydicom.dcmread(next(iter(sorted(ct_dir.glob("*.dcm")))), stop_before_pixels=True)
    pixels = np.zeros((1, int(source.Rows), int(source.Columns)), dtype=np.uint8)
    pixels[0, 0, 0] = 1
    code = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="warm-up", segmented_property_category=code, segmented_property_type=code,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    hd.seg.Segmentation(
        source_images=[source], pixel_array=pixels, segmentation_type="BINARY", segment_descriptions=[description],
        series_instance_uid=hd.UID(), series_number=1, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="bench", manufacturer_model_name="bench", software_versions="0", device_serial_number="0")


def worker(operation: str, folder: Path, ct_dir: Path, path: Path) -> dict:
    """Set up the inputs of ``operation`` untimed, then time it; returns seconds, peak bytes, file size, detail."""
    kind = OPERATIONS[operation][0]
    if operation in ("ours_export", "highdicom_write", "dcmqi_write"):
        for file in sorted(ct_dir.iterdir()):  # the series was just loaded: its files are in the page cache
            file.read_bytes()
    if operation in ("ours_export", "ours_load", "highdicom_write", "highdicom_read"):
        warm_highdicom(ct_dir)  # the same for our writer and highdicom's
    case = json.loads((folder / "case.json").read_text())
    step = logic = None
    if operation in ("slicer_nrrd_write", "ours_export", "slicer_nrrd_load", "ours_load"):
        import slicer

        from SegmentationQALib.logic import SegmentationQAMRMLLogic
        from SegmentationQALib.seg.options import SegExportOptions, SegType

        logic = SegmentationQAMRMLLogic(slicer.vtkMRMLScene())
        if kind == "write":
            layered = load_case(folder)
            node = logic.segmentationNodeFromLayered(layered, "Segmentation")
            del layered
        if operation == "slicer_nrrd_write":
            def step():
                logic.saveSegmentationFile(node, path)
        elif operation == "ours_export":
            out_dir = path.parent / f"export-{os.getpid()}"

            def step():
                options = SegExportOptions(seg_type=SegType[case["seg_type"]])
                result = logic.exportDicomSeg(node, None, out_dir, options, referenceDicomFolder=ct_dir)
                Path(result.seg_path).replace(path)
                return {"segments": len(result.segments), "seg_type": result.seg_type,
                        "compression": result.compression, "timings": result.timings}
        else:
            def step():
                if operation == "ours_load":
                    node, result = logic.loadDicomSeg(path)
                    detail = {"timings": result.timings}
                else:
                    node, detail = logic.loadSegmentationFile(path), {}
                detail["segments"] = node.GetSegmentation().GetNumberOfSegments()
                return detail
    elif operation in ("sitk_nrrd_write", "pynrrd_write", "highdicom_write"):
        layered = load_case(folder)
        if operation == "sitk_nrrd_write":
            import SimpleITK as sitk

            def step():
                g = layered.geometry
                array = layered.layers[0] if len(layered.layers) == 1 else np.stack(layered.layers, axis=-1)
                image = sitk.GetImageFromArray(array, isVector=len(layered.layers) > 1)
                image.SetOrigin(tuple(float(v) for v in g.origin_lps))
                image.SetSpacing(tuple(float(v) for v in g.spacing))
                image.SetDirection(tuple(float(v) for v in g.direction.ravel()))
                for key, value in nrrd_header_fields(layered).items():
                    image.SetMetaData(key, value)
                sitk.WriteImage(image, str(path), True)
        elif operation == "pynrrd_write":
            import nrrd

            def step():
                g = layered.geometry
                multi = len(layered.layers) > 1
                data = np.stack(layered.layers, axis=-1) if multi else layered.layers[0]  # layers fastest, as Slicer
                directions = g.affine_lps[:3, :3].T.tolist()
                header = {"space": "left-posterior-superior", "space origin": g.origin_lps.tolist(),
                          "space directions": ([[np.nan] * 3] if multi else []) + directions,
                          "kinds": (["list"] if multi else []) + ["domain"] * 3, "encoding": "gzip"}
                header.update(nrrd_header_fields(layered))
                nrrd.write(str(path), data, header, index_order="C")
        else:
            import highdicom as hd
            import pydicom
            from pydicom.uid import ExplicitVRLittleEndian, RLELossless

            def step():
                sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(ct_dir.glob("*.dcm"))]
                descriptions = [hd.seg.SegmentDescription(
                    segment_number=n, segment_label=s.name[:64],
                    segmented_property_category=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
                    segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL) for n, s in enumerate(layered.segments, 1)]
                if case["seg_type"] == "LABELMAP":
                    pixels, seg_type, syntax = layered.layers[0], "LABELMAP", RLELossless
                else:  # highdicom takes overlapping segments as one boolean volume per segment
                    pixels = np.zeros((*layered.geometry.shape, len(layered.segments)), dtype=bool)
                    for index in range(len(layered.segments)):
                        pixels[..., index] = layered.mask(index)
                    seg_type, syntax = "BINARY", ExplicitVRLittleEndian
                seg = hd.seg.Segmentation(
                    source_images=sources, pixel_array=pixels, segmentation_type=seg_type,
                    segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=300,
                    sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bench", manufacturer_model_name="bench",
                    software_versions="0", device_serial_number="0", transfer_syntax_uid=syntax,
                    omit_empty_frames=True)
                seg.save_as(path)
                return {"segments": len(seg.SegmentSequence)}
    elif operation == "sitk_nrrd_read":
        import SimpleITK as sitk

        def step():
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            return {"shape": list(array.shape)}
    elif operation == "pynrrd_read":
        import nrrd

        def step():
            data, _ = nrrd.read(str(path), index_order="C")
            return {"shape": list(data.shape)}
    elif operation == "highdicom_read":
        import highdicom as hd

        def step():
            seg = hd.seg.segread(path)
            labelmap = seg.segmentation_type.value == "LABELMAP"
            volume = (seg.get_volume(combine_segments=True, skip_overlap_checks=True) if labelmap
                      else seg.get_volume(combine_segments=False, dtype=np.uint8))
            return {"segments": len(seg.SegmentSequence), "shape": list(volume.array.shape)}
    elif operation in ("dcmqi_write", "dcmqi_read"):
        binary = Path(sys.executable).parent
        if operation == "dcmqi_write":
            inputs = ",".join(str(p) for p in sorted(folder.glob("dcmqi_input*.nrrd")))
            command = [str(binary / "itkimage2segimage"), "--inputImageList", inputs, "--inputDICOMDirectory",
                       str(ct_dir), "--outputDICOM", str(path), "--inputMetadata", str(folder / "dcmqi_meta.json"),
                       "--segmentationType", case["seg_type"].lower()]
        else:
            out_dir = path.parent / f"dcmqi-read-{os.getpid()}"
            out_dir.mkdir()
            command = [str(binary / "segimage2itkimage"), "--inputDICOM", str(path), "--outputDirectory", str(out_dir),
                       "--mergeSegments", "-t", "nrrd"]

        def step():
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{Path(command[0]).name} exit {done.returncode}: {done.stderr.strip()[-400:]}")
    else:
        raise SystemExit(f"unknown operation {operation!r}")
    seconds, peak, detail = measure(step)
    if logic is not None:
        logic.releaseSegmentations()  # untimed; Slicer's own teardown takes ~0.1 s per segment on this grid
    if operation == "dcmqi_read":
        shutil.rmtree(path.parent / f"dcmqi-read-{os.getpid()}", ignore_errors=True)
    return {"seconds": seconds, "peak_bytes": peak, "file_bytes": path.stat().st_size if kind == "write" else None,
            "detail": detail}


# ---------------------------------------------------------------------------------------------- driver
def run_child(operation: str, case: dict, ct_dir: Path, timeout: float, mem_limit: int) -> dict:
    """One measurement in a fresh process under an address-space limit; an error or timeout is a result too."""
    folder = case["folder"]
    path = folder / OUTPUT_NAME[operation if operation in OUTPUT_NAME else READ_SOURCE[operation]]
    if operation.startswith("pydicomseg"):
        command = [str(PEERS_PYTHON), str(PYDICOMSEG_SCRIPT), operation.split("_")[1], str(folder), str(ct_dir),
                   str(path)]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", operation, str(folder), str(ct_dir),
                   str(path)]

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s"}
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit code {done.returncode}")[:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def ct_header_bytes(ct_dir: Path) -> int:
    """Resident memory of the reference series headers as our logic reads them (part of the memory budget)."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
            "import seg_speed; from DicomFidelityCommonLib.dicom.series import read_image_series;"
            "s = seg_speed.measure(lambda: {'n': len(read_image_series(sys.argv[3]).datasets)}); print(s[1])")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(REPO / "SegmentationQA"),
                           str(ct_dir)], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def applicable(operation: str, case: dict) -> bool:
    if operation.startswith("pydicomseg") and case["seg_type"] == "BINARY":
        return False  # pydicom-seg writes one multi-class label volume: it cannot represent overlapping segments
    return True


def summarise(runs: list[dict]) -> dict:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[0]["error"] if runs else "not run", "runs": runs}
    return {"seconds": statistics.median(r["seconds"] for r in good),
            "peak_bytes": statistics.median(r["peak_bytes"] for r in good),
            "file_bytes": good[-1]["file_bytes"], "ok_runs": len(good), "runs": runs,
            "error": None if len(good) == len(runs) else runs[-1].get("error")}


def evaluate(case: dict, rows: dict, header_bytes: int) -> list[dict]:
    """The issue's targets for one case: PASS/FAIL from the measured medians (n/a where a peer cannot do it)."""
    scale = 2.0 if case["base_segments"] >= 1000 else 1.0
    limit = (5.0 if case["seg_type"] == "BINARY" else 2.0) * scale
    targets = []

    def seconds(op):
        row = rows.get(op)
        return row.get("seconds") if row else None

    def add(name, value, bound, unit, verdict=None):
        if verdict is None:
            verdict = "FAIL" if value is None or bound is None else ("PASS" if value <= bound else "FAIL")
        targets.append({"case": case["name"], "target": name, "value": value, "limit": bound, "unit": unit,
                        "verdict": verdict})

    for ours, reference, what in (("ours_export", "sitk_nrrd_write", "export / SimpleITK seg.nrrd write"),
                                  ("ours_export", "slicer_nrrd_write", "(alt.) export / saveSegmentationFile"),
                                  ("ours_load", "slicer_nrrd_load", "load into node / seg.nrrd into node")):
        a, b = seconds(ours), seconds(reference)
        add(what, a / b if a is not None and b else None, limit, "ratio")
    size, reference_size = (rows.get("ours_export", {}).get("file_bytes"),
                            rows.get("sitk_nrrd_write", {}).get("file_bytes"))
    add("file size / gzip seg.nrrd", size / reference_size if size and reference_size else None, 1.5, "ratio")
    budget = 3 * case["label_bytes"] + header_bytes
    for ours in ("ours_export", "ours_load"):
        add(f"{ours} peak memory (MB)", _mb(rows.get(ours, {}).get("peak_bytes")), _mb(budget), "MB")
    for ours, peers in (("ours_export", ("highdicom_write", "pydicomseg_write", "dcmqi_write")),
                        ("ours_load", ("highdicom_read", "pydicomseg_read", "dcmqi_read"))):
        for peer in peers:
            mine, theirs = seconds(ours), seconds(peer)
            name = f"{ours} faster than {peer.split('_')[0]}"
            if peer not in rows:
                add(name, mine, None, "s", "n/a")
            elif theirs is None:  # the peer failed: we pass only if we did not
                add(name, mine, None, "s", "PASS" if mine is not None else "FAIL")
            else:
                add(name, mine, theirs, "s")
    return targets


def _mb(value):
    return None if value is None else value / 2**20


def print_table(cases: list[dict], results: dict, targets: list[dict]) -> None:
    print(f"\n{'case':<16}{'operation':<44}{'median s':>10}{'peak MB':>10}{'file MB':>10}{'ratio':>8}  vs")
    for case in cases:
        rows = results[case["name"]]
        for operation, row in rows.items():
            _, reference, label = OPERATIONS[operation]
            if row.get("seconds") is None:
                print(f"{case['name']:<16}{label:<44}  {row.get('error')}")
                continue
            ref = rows.get(reference, {}).get("seconds")
            ratio = f"{row['seconds'] / ref:8.2f}" if ref else f"{'-':>8}"
            size = f"{row['file_bytes'] / 2**20:10.1f}" if row.get("file_bytes") else f"{'':>10}"
            note = f"  ({row['ok_runs']}/{len(row['runs'])} ok: {row['error']})" if row.get("error") else ""
            print(f"{case['name']:<16}{label:<44}{row['seconds']:10.2f}{row['peak_bytes'] / 2**20:10.0f}{size}"
                  f"{ratio}  {reference}{note}")
    print(f"\n{'case':<16}{'target':<46}{'value':>10}{'limit':>10}  verdict")
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        bound = "-" if t["limit"] is None else f"{t['limit']:.2f}"
        print(f"{t['case']:<16}{t['target']:<46}{value:>10}{bound:>10}  {t['verdict']}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        operation, folder, ct_dir, path = argv[1:5]
        print(json.dumps(worker(operation, Path(folder), Path(ct_dir), Path(path))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DICOMFIDELITY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="rows and columns of the grid")
    parser.add_argument("--segments", default="117,1000", help="segment counts of the cases (before margins)")
    parser.add_argument("--cases", default="", help="comma-separated case name prefixes (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 60 slices")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    parser.add_argument("--mem-limit-gb", type=float, default=12, help="address-space limit of each measurement")
    parser.add_argument("--operations", default="", help="comma-separated operations to run (default: all)")
    parser.add_argument("--slow-peer-seconds", type=float, default=20.0,
                        help="a peer whose run takes longer is not repeated (its single run is reported)")
    parser.add_argument("--json", default="seg_speed.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.slices = 1, min(args.slices, 60)
    mem_limit = int(args.mem_limit_gb * 2**30)
    wanted = [w for w in args.cases.split(",") if w]
    selected = {o for o in args.operations.split(",") if o}
    unknown = selected - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown operations {sorted(unknown)}; choose from {sorted(OPERATIONS)}")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="seg_speed-") as work:
        work = Path(work)
        ct_dir, cases = build_cases(Path(args.data), work, args.slices, args.size,
                                    [int(c) for c in args.segments.split(",")], wanted)
        header_bytes = ct_header_bytes(ct_dir)
        print(f"grid {args.size}x{args.size}x{args.slices}, {args.repeats} repeat(s), "
              f"CT headers {header_bytes / 2**20:.1f} MB resident; cases: "
              + ", ".join(f"{c['name']} ({c['label_bytes'] / 2**20:.0f} MB labels)" for c in cases),
              flush=True)
        results, targets = {}, []
        for case in cases:
            (case["folder"] / "case.json").write_text(json.dumps({k: v for k, v in case.items() if k != "folder"}))
            runs: dict[str, list[dict]] = {}
            for kind in ("write", "read"):
                ops = [op for op, (k, _, _) in OPERATIONS.items() if (k == "write") == (kind == "write")
                       and applicable(op, case) and (not selected or op in selected)]
                for _ in range(args.repeats):  # interleaved, so machine noise spreads over every tool
                    for op in ops:
                        source = READ_SOURCE.get(op)
                        if source and not any("error" not in r for r in runs.get(source, [])):
                            runs.setdefault(op, [])
                            continue
                        if any("timeout" in r.get("error", "") or "MemoryError" in r.get("error", "")
                               for r in runs.get(op, [])):
                            continue  # do not repeat what cannot finish
                        if not op.startswith(("ours", "sitk", "slicer")) and any(
                                r.get("seconds", 0) > args.slow_peer_seconds for r in runs.get(op, [])):
                            continue  # a slow peer once is enough to compare with; ours and the references repeat
                        result = run_child(op, case, ct_dir, args.timeout, mem_limit)
                        runs.setdefault(op, []).append(result)
                        state = result.get("error") or f"{result['seconds']:.2f} s"
                        print(f"  {case['name']:<16}{op:<20}{state}", flush=True)
            results[case["name"]] = {op: summarise(r) if r else {"error": f"no file from {READ_SOURCE[op]}"}
                                     for op, r in runs.items()}
            targets += evaluate(case, results[case["name"]], header_bytes)
            shutil.rmtree(case["folder"], ignore_errors=True)  # free the disk before the next case
    print_table(cases, results, targets)
    payload = {
        "benchmark": "seg_speed", "grid": [args.slices, args.size, args.size], "repeats": args.repeats,
        "quick": args.quick, "ct_header_bytes": header_bytes, "wall_seconds": time.time() - started,
        "cases": [{k: v for k, v in c.items() if k != "folder"} for c in cases],
        "results": results, "targets": targets,
        "all_pass": all(t["verdict"] in ("PASS", "n/a") for t in targets),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0 if payload["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
