"""Cumulative DVH per segment on the resampled dose, and a small HTML report (DVH plot, CT slice with isodose lines).

matplotlib is imported lazily (Agg backend) so reading and resampling never need it.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from DicomFidelityCommonLib.errors import EmptySegmentationError, GeometryError, InvalidInputFileError
from DicomFidelityCommonLib.geometry import VolumeGeometry, resample_labels
from DicomFidelityCommonLib.safe_write import atomic_output_dir

ISODOSE_PERCENT = (10, 30, 50, 70, 90, 95)


@dataclass
class DvhCurve:
    """Cumulative DVH: ``volume_percent[n]`` of the segment receives at least ``dose[n]``."""

    name: str
    label: int
    volume_ml: float
    dose: np.ndarray = field(repr=False)
    volume_percent: np.ndarray = field(repr=False)
    min_dose: float = 0.0
    mean_dose: float = 0.0
    max_dose: float = 0.0
    d95: float = 0.0  # dose received by at least 95% of the volume
    d2: float = 0.0  # near-maximum dose (2% of the volume)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("dose", "volume_percent")}


def cumulative_dvh(dose: np.ndarray, mask: np.ndarray, voxel_volume_ml: float, name: str, label: int = 1,
                   bin_width: float | None = None) -> DvhCurve:
    values = np.asarray(dose)[np.asarray(mask, bool)].astype(np.float64)
    if values.size == 0:
        raise EmptySegmentationError(f"segment {name!r} has no voxel on the dose grid")
    top = float(values.max())
    width = bin_width or max(top / 1000.0, 1e-6)
    edges = np.arange(0.0, top + 2 * width, width)
    counts, _ = np.histogram(values, bins=edges)
    at_least = np.cumsum(counts[::-1])[::-1]  # voxels with dose >= edges[n]
    percent = 100.0 * at_least / values.size
    return DvhCurve(name=name, label=label, volume_ml=values.size * voxel_volume_ml, dose=edges[:-1],
                    volume_percent=percent,
                    min_dose=float(values.min()), mean_dose=float(values.mean()), max_dose=top,
                    d95=float(np.percentile(values, 5)), d2=float(np.percentile(values, 98)))


def read_labelmap(path: str | Path, geometry: VolumeGeometry) -> tuple[np.ndarray, dict[int, str], list[str]]:
    """Labelmap (NRRD, NIfTI, Slicer .seg.nrrd with one layer) on ``geometry``; resampled (nearest) if it differs."""
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InvalidInputFileError(f"cannot read the labelmap ({str(exc).strip().splitlines()[-1]})", path) from exc
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise InvalidInputFileError("labelmap must be one 3D layer "
                                    "(overlapping Slicer segments: export a labelmap per layer)", path)
    names: dict[int, str] = {}
    keys = set(image.GetMetaDataKeys())
    n = 0
    while f"Segment{n}_LabelValue" in keys:
        names[int(image.GetMetaData(f"Segment{n}_LabelValue"))] = image.GetMetaData(f"Segment{n}_Name") \
            if f"Segment{n}_Name" in keys else f"label {image.GetMetaData(f'Segment{n}_LabelValue')}"
        n += 1
    warnings = []
    labels, source = sitk.GetArrayFromImage(image), VolumeGeometry.from_sitk(image)
    if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):  # NaN, Inf or fractions: not labels
        raise InvalidInputFileError("voxel values are not integer labels (NaN, Inf or fractions)", path)
    if not source.is_close(geometry, 1e-2):
        warnings.append(f"{path.name}: labelmap grid differs from the dose grid; resampled (nearest neighbour)")
        labels = resample_labels(labels, source, geometry)
    present = [int(v) for v in np.unique(labels) if v != 0]
    for value in present:
        names.setdefault(value, f"label {value}")
    names = {k: v for k, v in names.items() if k in present}
    if not names:
        raise EmptySegmentationError("labelmap has no non-zero voxel on the dose grid", path)
    return labels, names, warnings


def dvh_for_labels(dose: np.ndarray, labels: np.ndarray, names: dict[int, str],
                   geometry: VolumeGeometry) -> list[DvhCurve]:
    if labels.shape != dose.shape:
        raise GeometryError(f"labelmap {labels.shape} and dose {dose.shape} differ in shape")
    voxel_ml = abs(float(np.linalg.det(geometry.affine_lps[:3, :3]))) / 1000.0
    return [cumulative_dvh(dose, labels == value, voxel_ml, name, value) for value, name in sorted(names.items())]


def write_dvh_csv(path: Path, curves: list[DvhCurve], units: str) -> None:
    """Long format: one row per (segment, dose bin)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["segment", "label", f"dose_{units.lower()}", "volume_percent", "volume_ml"])
        for curve in curves:
            for d, v in zip(curve.dose, curve.volume_percent):
                writer.writerow([curve.name, curve.label, f"{d:.5f}", f"{v:.4f}", f"{v * curve.volume_ml / 100:.4f}"])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_dvh(path: Path, curves: list[DvhCurve], units: str) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for curve in curves:
        axes.plot(curve.dose, curve.volume_percent, label=curve.name)
    axes.set_xlabel(f"Dose ({units})")
    axes.set_ylabel("Volume (%)")
    axes.set_ylim(0, 101)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_overlay(path: Path, ct: np.ndarray | None, dose: np.ndarray, slice_index: int | None = None,
                 units: str = "GY") -> int:
    """CT slice (HU window -400..400) with isodose lines at ISODOSE_PERCENT of the maximum; returns the slice used."""
    plt = _pyplot()
    if slice_index is None:
        slice_index = int(np.unravel_index(int(np.argmax(dose)), dose.shape)[0])
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    if ct is not None:
        axes.imshow(ct[slice_index], cmap="gray", vmin=-400, vmax=400)
    else:
        axes.imshow(np.zeros(dose.shape[1:]), cmap="gray")
    maximum = float(dose.max())
    if maximum > 0:
        levels = [maximum * p / 100 for p in ISODOSE_PERCENT]
        contours = axes.contour(dose[slice_index], levels=levels, cmap="jet", linewidths=1)
        axes.clabel(contours, fmt={lv: f"{p}%" for lv, p in zip(contours.levels, ISODOSE_PERCENT)}, fontsize=6)
    axes.set_title(f"slice {slice_index}, isodose % of {maximum:.2f} {units}", fontsize=9)
    axes.axis("off")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return slice_index


def write_report(folder: str | Path, dose: np.ndarray, ct: np.ndarray | None, geometry: VolumeGeometry, units: str,
                 curves: list[DvhCurve], summary: dict) -> dict[str, str]:
    """dvh.csv, dvh.png, overlay.png and report.html in a new folder (written atomically)."""
    folder = Path(folder)
    with atomic_output_dir(folder) as tmp:
        if curves:
            write_dvh_csv(tmp / "dvh.csv", curves, units)
            plot_dvh(tmp / "dvh.png", curves, units)
        slice_index = plot_overlay(tmp / "overlay.png", ct, dose, units=units)
        rows = "".join(
            f"<tr><td>{html.escape(c.name)}</td><td>{c.volume_ml:.2f}</td><td>{c.min_dose:.3f}</td>"
            f"<td>{c.mean_dose:.3f}</td>"
            f"<td>{c.max_dose:.3f}</td><td>{c.d95:.3f}</td><td>{c.d2:.3f}</td></tr>" for c in curves)
        table = (f"<table border='1' cellpadding='3'><tr><th>segment</th><th>volume (mL)</th><th>min</th><th>mean</th>"
                 f"<th>max</th><th>D95</th><th>D2</th></tr>{rows}</table>") if curves else "<p>No segments given.</p>"
        dvh_image = "<img src='dvh.png' alt='DVH'>" if curves else ""
        text = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Dose alignment report</title></head><body>"
            "<h1>Dose alignment report</h1>"
            f"<h2>Dose-volume histograms ({html.escape(units)})</h2>{table}{dvh_image}"
            f"<h2>Isodose lines on slice {slice_index}</h2><img src='overlay.png' alt='isodose overlay'>"
            f"<h2>Alignment</h2><pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>"
            "</body></html>")
        (tmp / "report.html").write_text(text, encoding="utf-8")
        (tmp / "dvh.json").write_text(json.dumps([c.to_json() for c in curves], indent=2), encoding="utf-8")
    names = ["report.html", "overlay.png", "dvh.json"] + (["dvh.csv", "dvh.png"] if curves else [])
    return {name: str(folder / name) for name in names}
