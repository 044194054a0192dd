"""Cohort tasks: ``task(case, case_output_dir, options) -> dict`` top-level functions the runner sends to workers.

Each calls the same code as the single-case commands, so a cohort result equals the one-case result (tested bit
for bit against `dosealign`). A task writes only into ``case_output_dir`` (the runner stages and publishes it) and
raises a DicomFidelityError naming the file for a case it cannot do; the run goes on.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import numpy as np

from DicomFidelityCommonLib.errors import DicomFidelityError, UnitsMismatchError
from DicomFidelityCommonLib.safe_write import safe_file_name


class ArrayFormat(Enum):
    NIFTI = "nifti"
    NRRD = "nrrd"
    NPZ = "npz"

    @property
    def suffix(self) -> str:
        return {ArrayFormat.NIFTI: ".nii.gz", ArrayFormat.NRRD: ".nrrd", ArrayFormat.NPZ: ".npz"}[self]


# Every option of every task, with its default. run_task fills them in before the options are hashed, so a run from
# the panel (which sets few) and one from the command line (which sets all) agree on which cases are done.
TASK_DEFAULTS = {
    "ml-dataset": {"format": ArrayFormat.NIFTI.value},
    "compare-seg": {"consensus": "majority", "rtstruct": True, "consensus_seg": True},
    "export-seg": {"seg_type": "auto", "algorithm_type": "manual", "series_description": "Segmentation"},
    "rtstruct-check": {},
}


def with_defaults(task: str, options: dict | None) -> dict:
    return {**TASK_DEFAULTS.get(task, {}), **(options or {})}


def doses_to_sum(case: dict) -> tuple[list[str], list[str]]:
    """The RTDOSE files of a case that make its dose, and why: the per-beam doses of one plan summed, or the one
    plan/fraction dose. Several candidates are never guessed between: that is an error naming them."""
    doses = case.get("doses") or []
    if not doses:
        return [], []
    groups = [g for g in case.get("dose_groups") or [] if len(g.get("dose_sop_instance_uids") or []) > 1]
    by_uid = {d["sop_instance_uid"]: d["path"] for d in doses}
    if len(groups) == 1:
        group = groups[0]
        if group.get("mixed_units") or group.get("mixed_types"):
            raise UnitsMismatchError("per-beam doses of one plan differ in units or type; not summed",
                                     by_uid[group["dose_sop_instance_uids"][0]])
        paths = [by_uid[uid] for uid in group["dose_sop_instance_uids"]]
        return paths, [f"summed {len(paths)} per-beam doses of plan {group.get('plan_sop_instance_uid')}"]
    if len(doses) == 1:
        return [doses[0]["path"]], []
    raise DicomFidelityError(f"{len(doses)} doses and no single plan to sum them by; choose one "
                             f"({', '.join(Path(d['path']).name for d in doses)})", doses[0]["path"])


def ml_dataset(case: dict, case_output_dir: Path, options: dict) -> dict:
    """CT (HU), dose on the CT grid (Gy) and one mask per structure on the CT grid, plus case.json."""
    from DoseAlignmentLib.align import align, read_reference
    from DoseAlignmentLib.export import write_arrays, write_volume

    fmt = ArrayFormat(with_defaults("ml-dataset", options)["format"])
    out = Path(case_output_dir)
    reference = read_reference(case["ct_files"])
    warnings = list(case.get("warnings") or [])
    outputs: dict = {}
    dose_paths, dose_notes = doses_to_sum(case)
    warnings += dose_notes
    if dose_paths:
        result = align(dose_paths, reference, load_reference=True)
        warnings += result.warnings
        target = out / f"dose{fmt.suffix}"
        written = write_arrays(target, result, None if fmt == ArrayFormat.NPZ else out / f"ct{fmt.suffix}")
        outputs["dose_path"] = written.get("dose") or written.get("arrays")
        outputs["ct_path"] = written.get("reference") or written.get("arrays")
        geometry, ct = result.geometry, result.reference_array
    else:
        geometry, ct = reference.geometry, reference.array()
        outputs["ct_path"] = str(write_volume(out / f"ct{fmt.suffix.replace('.npz', '.nii.gz')}", ct, geometry))
    masks = _structure_masks(case, reference.series, geometry, warnings)
    if masks:
        folder = out / "masks"
        folder.mkdir(parents=True, exist_ok=True)
        names = {}
        for name, mask in masks.items():
            file_name = safe_file_name(name, "structure")
            while file_name in names.values():
                file_name += "_"
            names[name] = file_name
            suffix = fmt.suffix if fmt != ArrayFormat.NPZ else ".nii.gz"
            write_volume(folder / f"{file_name}{suffix}", mask.astype(np.uint8), geometry, compress=True)
        outputs["masks_dir"] = str(folder)
    description = {
        "case": case["case_id"], "patient_id": case.get("patient_id"), "ct_series_uid": case["ct_series_uid"],
        "frame_of_reference_uid": case.get("frame_of_reference_uid"), "geometry": geometry.to_json(),
        "rtdose_files": dose_paths, "rtstruct_files": [r["path"] for r in case.get("rtstructs") or []],
        "structures": sorted(masks), "units": {"ct": "HU", "dose": "Gy"}, "warnings": warnings,
    }
    (out / "case.json").write_text(json.dumps(description, indent=2))
    return {"outputs": outputs, "warnings": warnings}


def _structure_masks(case: dict, series, geometry, warnings: list[str]) -> dict[str, np.ndarray]:
    """Every ROI of the case's RTSTRUCTs as a boolean mask on the CT grid (read even-odd on the CT planes)."""
    from DicomFidelityCommonLib.geometry import resample_labels
    from SegmentationQALib.rtstruct import read_rtstruct

    masks: dict[str, np.ndarray] = {}
    for rtstruct in case.get("rtstructs") or []:
        loaded = read_rtstruct(rtstruct["path"], series)
        warnings += [f"{Path(rtstruct['path']).name}: {w}" for w in loaded.warnings]
        layered = loaded.segmentation
        for index, segment in enumerate(layered.segments):
            mask = layered.mask(index)
            if not layered.geometry.is_close(geometry):
                mask = resample_labels(mask.astype(np.uint8), layered.geometry, geometry) > 0
            name = segment.name if segment.name not in masks else f"{segment.name} ({segment.segment_id})"
            masks[name] = mask
    return masks


TASKS = {"ml-dataset": ml_dataset}


def compare_seg(case: dict, case_output_dir: Path, options: dict) -> dict:
    """The case's segmentations, one per model, compared per structure on its CT grid (SegmentationQALib.compare):
    its SEGs and (option ``rtstruct``, on by default) its RTSTRUCTs, read on the CT planes, so an RTSTRUCT of
    clinical contours is compared with the models too. The review goes into the case folder (review/metrics.csv,
    comparison.json, report.html)."""
    from DicomFidelityCommonLib.dicom.series import read_image_series
    from SegmentationQALib.compare import ComparisonOptions, ConsensusMethod, compare_segmentations
    from SegmentationQALib.compare.report import write_comparison_report, write_consensus_seg
    from SegmentationQALib.rtstruct import read_rtstruct, read_rtstruct_dataset
    from SegmentationQALib.seg import load_seg

    options = with_defaults("compare-seg", options)
    segs = case.get("segs") or []
    rtstructs = (case.get("rtstructs") or []) if options["rtstruct"] else []
    if len(segs) + len(rtstructs) < 2:
        raise DicomFidelityError(f"{len(segs)} SEG(s) and {len(rtstructs)} RTSTRUCT(s) reference this CT series; "
                                 "comparing needs two or more", case["ct_files"][0] if case.get("ct_files") else None)
    series = read_image_series(case["ct_files"])
    models, warnings = [], []

    def on_ct_grid(layered, path: str):
        if layered.geometry.is_close(series.geometry):
            return layered
        layered, changed = layered.resampled_to(series.geometry)
        warnings.append(f"{Path(path).name}: resampled onto the CT grid ({changed} voxels changed)")
        return layered

    for seg in segs:
        loaded = load_seg(seg["path"])
        name = _model_name(loaded, seg["path"], [m for m, _ in models])
        models.append((name, on_ct_grid(loaded.layered, seg["path"])))
    for rtstruct in rtstructs:  # on planes rebuilt from its contours where CT slices are missing: resampled then
        dataset = read_rtstruct_dataset(rtstruct["path"])
        loaded = read_rtstruct(rtstruct["path"], series, dataset=dataset)
        warnings += [f"{Path(rtstruct['path']).name}: {w}" for w in loaded.warnings]
        # named by series description (the same in every case of a cohort, where labels such as "RS1" are not)
        name = _unique(str(dataset.get("SeriesDescription", "")).strip() or "RTSTRUCT", [m for m, _ in models])
        models.append((name, on_ct_grid(loaded.segmentation, rtstruct["path"])))
    result = compare_segmentations(models, ComparisonOptions(consensus=ConsensusMethod(options["consensus"])))
    report = write_comparison_report(result, Path(case_output_dir) / "review", series.pixel_array())
    outputs = {"review": str(report.html), "metrics_csv": str(report.csv), "comparison_json": str(report.json)}
    if options["consensus_seg"] and result.consensus is not None and result.consensus.segments:
        written = write_consensus_seg(result, series, Path(case_output_dir) / "consensus.seg.dcm")
        outputs["consensus_seg"] = written.seg_path
    return {"outputs": outputs, "warnings": warnings}


def _model_name(loaded, path: str, taken: list[str]) -> str:
    """A SEG's model: its segments' algorithm name, else its series description, else its file name; unique."""
    names = {s.algorithm_name for s in loaded.layered.segments if s.algorithm_name}
    return _unique(next(iter(names)) if len(names) == 1 else (loaded.series_description or Path(path).stem), taken)


def _unique(name: str, taken: list[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name} ({number})", number + 1
    return candidate


TASKS["compare-seg"] = compare_seg
compare_seg.cohort_version = 2  # 2: a case's RTSTRUCTs are models too (cases finished by version 1 are redone)


def export_seg(case: dict, case_output_dir: Path, options: dict) -> dict:
    """A label file of the label manifest as a DICOM SEG referencing its CT series: the same reading (with the
    row's label description) and SEG writer as `segqa export-seg`. A label grid that is not the CT's (up to a flip
    or permutation of the axes) is an error here, not a resampling: in a cohort it means the wrong CT."""
    from DicomFidelityCommonLib.dicom.series import first_missing_reference_uid, read_image_series
    from DicomFidelityCommonLib.errors import EmptySegmentationError, GeometryError, MissingTagError
    from SegmentationQALib.label_volume import read_label_volume
    from SegmentationQALib.seg import SegExportOptions, SegType, write_seg

    if case.get("row_problem"):
        raise DicomFidelityError(case["row_problem"], case.get("label_manifest"))
    label_file = case["label_file"]
    series = read_image_series(case["ct_files"])
    unreferenceable = first_missing_reference_uid(series)
    if unreferenceable:
        raise MissingTagError("the CT series cannot be referenced (UID blanked, e.g. by anonymisation)",
                              *unreferenceable)
    layered, warnings = read_label_volume(label_file, case.get("labels") or None)
    if not layered.geometry.is_close(series.geometry):
        grid, ct = layered.geometry, series.geometry
        same_voxels = (int(np.prod(grid.shape)) == int(np.prod(ct.shape)) and ct.is_reindexing_of(grid)
                       and grid.is_reindexing_of(ct))
        changed = None
        if same_voxels:
            layered, changed = layered.resampled_to(ct)
        if changed != 0:
            raise GeometryError(
                f"label grid {'x'.join(map(str, grid.shape[::-1]))} at {np.round(grid.origin_lps, 2).tolist()} mm, "
                f"spacing {np.round(grid.spacing, 4).tolist()} is not the grid of CT series "
                f"{series.series_instance_uid} ({'x'.join(map(str, ct.shape[::-1]))} at "
                f"{np.round(ct.origin_lps, 2).tolist()} mm, spacing {np.round(ct.spacing, 4).tolist()})", label_file)
        warnings.append("label volume axes reordered onto the CT grid (no voxel changed)")
    options = with_defaults("export-seg", options)
    seg_options = SegExportOptions(seg_type=SegType(options["seg_type"]),
                                   series_description=options["series_description"],
                                   algorithm_type=str(options["algorithm_type"]).upper())
    name = f"{safe_file_name(Path(label_file).name.split('.')[0])}.seg.dcm"
    try:
        result = write_seg(layered, series, Path(case_output_dir) / name, seg_options)
    except EmptySegmentationError:  # the input's fault: name it, not the case folder's file
        raise EmptySegmentationError("nothing to export: every segment is empty on the CT grid", label_file) from None
    result.seg_path = name
    result.warnings = list(series.warnings) + warnings + result.warnings
    details = dict(result.to_json(), label_file=label_file, labels=case.get("labels") or None,
                   ct_series_uid=series.series_instance_uid)
    (Path(case_output_dir) / "export.json").write_text(json.dumps(details, indent=2))
    outputs = {"seg": str(Path(case_output_dir) / name), "export_json": str(Path(case_output_dir) / "export.json"),
               "seg_type": result.seg_type, "segments": len(result.segments),
               "seg_bytes": result.file_size_bytes}
    return {"outputs": outputs, "warnings": result.warnings}


TASKS["export-seg"] = export_seg

STRUCTURE_COLUMNS = ("source", "kind", "name", "verdict", "voxels_original", "voxels_lost", "voxels_gained",
                     "volume_change_percent", "contour_volume_change_percent", "dice", "hd95_mm", "reasons")


def rtstruct_check(case: dict, case_output_dir: Path, options: dict) -> dict:
    """Per structure, what an RTSTRUCT round trip keeps: each RTSTRUCT of the case read (even-odd, on its CT) and
    contoured again, each SEG contoured onto the CT planes; the fidelity check and report of `segqa rtstruct-check`
    (plus `load-rtstruct`'s file check for RTSTRUCTs), one report folder per object."""
    import csv

    from DicomFidelityCommonLib.dicom.series import read_image_series
    from SegmentationQALib.rtstruct import (
        FidelityThresholds,
        ReferenceImages,
        Verdict,
        check_rtstruct,
        check_rtstruct_fidelity,
        load_reference,
        read_rtstruct,
        read_rtstruct_dataset,
        write_fidelity_report,
    )
    from SegmentationQALib.seg import load_seg

    objects = [("rtstruct", o) for o in case.get("rtstructs") or []] + [("seg", o) for o in case.get("segs") or []]
    if not objects:
        raise DicomFidelityError("no RTSTRUCT or SEG to check", case["ct_files"][0] if case.get("ct_files") else None)
    defaults = FidelityThresholds()
    thresholds = FidelityThresholds(
        lossy_volume_change_percent=float(options.get("lossy_volume_change", defaults.lossy_volume_change_percent)),
        lossy_dice=float(options.get("lossy_dice", defaults.lossy_dice)))
    out = Path(case_output_dir)
    series = read_image_series(case["ct_files"])
    image = series.pixel_array()
    ct_planes = ReferenceImages.from_series(series)
    warnings: list[str] = []
    sources, structures, rows = [], {}, []
    worst = Verdict.LOSSLESS
    for number, (kind, obj) in enumerate(objects, start=1):
        path = obj["path"]
        label = f"{kind}{number}"
        extra: dict = {"source": path, "kind": kind, "sop_instance_uid": obj.get("sop_instance_uid")}
        if kind == "rtstruct":  # as `segqa load-rtstruct`: its planes (rebuilt when CT slices are missing)
            dataset = read_rtstruct_dataset(path)  # the file read once, the series once per case
            planes = load_reference(series, dataset)
            loaded = read_rtstruct(path, planes, dataset=dataset)
            layered, object_warnings = loaded.segmentation, loaded.warnings  # the planes' warnings included
            extra["file_check"] = check_rtstruct(path, planes, dataset=dataset).to_json()
        else:
            loaded = load_seg(path)
            layered, object_warnings = loaded.layered, loaded.warnings + ct_planes.warnings
        fidelity = check_rtstruct_fidelity(layered, ct_planes.geometry, thresholds)
        fidelity.warnings = list(object_warnings) + fidelity.warnings
        write_fidelity_report(fidelity, out / label, image, series.geometry, extra)  # fidelity.json names the file
        warnings += [f"{Path(path).name}: {w}" for w in fidelity.warnings]
        if fidelity.worst_verdict.rank > worst.rank:
            worst = fidelity.worst_verdict
        sources.append({**extra, "label": label, "report": f"{label}/index.html",
                        "verdict": fidelity.worst_verdict.value, "counts": fidelity.to_json()["counts"]})
        for segment in fidelity.segments:
            values = segment.to_json()
            row = {"source": label, "kind": kind, **{c: values[c] for c in STRUCTURE_COLUMNS[2:]}}
            row["reasons"] = "; ".join(row["reasons"])
            rows.append(row)
            key = f"{label}/{segment.name}"
            key = f"{key} ({segment.segment_id})" if key in structures else key
            structures[key] = {c: values[c] for c in STRUCTURE_COLUMNS[3:-1]}
    with open(out / "structures.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=STRUCTURE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "rtstruct_check.json").write_text(json.dumps(
        {"case": case["case_id"], "ct_series_uid": case.get("ct_series_uid"), "verdict": worst.value,
         "thresholds": thresholds.to_json(), "sources": sources, "structures": rows, "warnings": warnings},
        indent=2, default=str))
    outputs = {"verdict": worst.value, "lossy_structures": sum(1 for r in rows if r["verdict"] == "lossy"),
               "report_dirs": [str(out / Path(s["report"]).parent) for s in sources],
               "structures_csv": str(out / "structures.csv"), "check_json": str(out / "rtstruct_check.json"),
               "structures": structures}
    return {"outputs": outputs, "warnings": warnings}


TASKS["rtstruct-check"] = rtstruct_check
