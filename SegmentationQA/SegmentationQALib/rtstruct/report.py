"""RTSTRUCT fidelity report: JSON, CSV and an HTML page with a picture of the worst slice of every changed segment."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np

from DicomFidelityCommonLib.geometry import VolumeGeometry
from DicomFidelityCommonLib.safe_write import atomic_output_dir
from SegmentationQALib.rtstruct.fidelity import FidelityResult, SegmentFidelity, Verdict, contour_geometry_text

CSV_COLUMNS = ("name", "verdict", "voxels_original", "voxels_lost", "voxels_gained", "volume_change_percent",
               "contour_volume_change_percent", "dice", "hd95_mm", "slices_affected", "islands", "holes", "contours",
               "thin_voxels", "resampling_lost", "resampling_gained", "beyond_reference_voxels", "worst_slice",
               "holes_encoding", "union_reader_holes_filled", "union_reader_voxels_gained", "keyholes",
               "keyhole_voxels_changed", "keyhole_area_mm2", "reasons")
COLORS = {Verdict.LOSSLESS: "#2e7d32", Verdict.MINOR: "#f9a825", Verdict.LOSSY: "#c62828"}


def image_slice(image: np.ndarray | None, image_geometry: VolumeGeometry | None, geometry: VolumeGeometry,
                k: int) -> np.ndarray:
    """Slice ``k`` of ``geometry`` cut from the reference image (linear interpolation where the grids differ)."""
    from scipy import ndimage

    rows, cols = geometry.shape[1], geometry.shape[2]
    if image is None or image_geometry is None:
        return np.zeros((rows, cols), dtype=np.float32)
    if image_geometry.is_close(geometry, atol_mm=1e-4):
        return np.asarray(image[k], dtype=np.float32)
    jj, ii = np.mgrid[0:rows, 0:cols]
    ijk = np.column_stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)])
    source = image_geometry.lps_to_index(geometry.index_to_lps(ijk))
    values = ndimage.map_coordinates(image, source[:, ::-1].T, order=1, mode="constant", cval=float(np.min(image)))
    return values.reshape(rows, cols).astype(np.float32)


def save_picture(segment: SegmentFidelity, background: np.ndarray, path: Path, margin: int = 12) -> None:
    """Worst slice: original voxels filled, round-trip outline (the written contour) drawn, lost/gained marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture = segment.picture
    rows, cols = background.shape
    r0, c0 = picture["offset_rows_cols"]
    original = np.zeros((rows, cols), dtype=bool)
    roundtrip = np.zeros((rows, cols), dtype=bool)
    h, w = picture["original"].shape
    original[r0:r0 + h, c0:c0 + w] = picture["original"]
    roundtrip[r0:r0 + h, c0:c0 + w] = picture["roundtrip"]
    window = (slice(max(0, r0 - margin), min(rows, r0 + h + margin)),
              slice(max(0, c0 - margin), min(cols, c0 + w + margin)))
    original, roundtrip, background = original[window], roundtrip[window], background[window]
    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    low, high = np.percentile(background, (1, 99)) if background.size else (0, 1)
    ax.imshow(background, cmap="gray", vmin=low, vmax=max(high, low + 1), interpolation="nearest")
    ax.imshow(np.ma.masked_where(~original, original), cmap="autumn", alpha=0.35, interpolation="nearest")
    if roundtrip.any():
        ax.contour(np.pad(roundtrip, 1).astype(float), levels=[0.5], colors=["#00e5ff"], linewidths=1.2,
                   extent=(-1.5, roundtrip.shape[1] + 0.5, roundtrip.shape[0] + 0.5, -1.5), origin="upper")
    if original.any():
        ax.contour(np.pad(original, 1).astype(float), levels=[0.5], colors=["#ffeb3b"], linewidths=0.8,
                   linestyles="dashed", extent=(-1.5, original.shape[1] + 0.5, original.shape[0] + 0.5, -1.5),
                   origin="upper")
    lost = np.argwhere(original & ~roundtrip)
    gained = np.argwhere(roundtrip & ~original)
    if len(lost):
        ax.plot(lost[:, 1], lost[:, 0], "rx", markersize=4, label=f"lost ({len(lost)})")
    if len(gained):
        ax.plot(gained[:, 1], gained[:, 0], "b+", markersize=4, label=f"gained ({len(gained)})")
    if len(lost) or len(gained):
        ax.legend(loc="lower right", fontsize=7)
    ax.set_title(f"{segment.name}: slice {segment.worst_slice} ({segment.verdict.value})\n"
                 "yellow dashed: original; cyan: RTSTRUCT contour as read back", fontsize=8)
    ax.set_axis_off()
    figure.savefig(path)


def write_fidelity_report(result: FidelityResult, report_dir: str | Path, image: np.ndarray | None = None,
                          image_geometry: VolumeGeometry | None = None, extra: dict | None = None) -> dict[str, str]:
    """fidelity.json, fidelity.csv, index.html and one PNG per segment that is not lossless (atomic folder)."""
    report_dir = Path(report_dir)
    data = result.to_json()
    if extra:
        data.update(extra)
    with atomic_output_dir(report_dir) as tmp:
        pictures = {}
        for number, segment in enumerate(result.segments, start=1):
            if segment.verdict == Verdict.LOSSLESS or not segment.picture:
                continue
            name = f"segment_{number:03d}.png"
            background = image_slice(image, image_geometry, result.segmentation_geometry, segment.worst_slice)
            save_picture(segment, background, tmp / name)
            pictures[number] = name
        (tmp / "fidelity.json").write_text(json.dumps(data, indent=2))
        with open(tmp / "fidelity.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for segment in result.segments:
                row = segment.to_json()
                row["reasons"] = "; ".join(row["reasons"])
                writer.writerow(row)
        (tmp / "index.html").write_text(_html(result, pictures))
    return {"json": str(report_dir / "fidelity.json"), "csv": str(report_dir / "fidelity.csv"),
            "html": str(report_dir / "index.html"),
            **{f"png_{n}": str(report_dir / p) for n, p in pictures.items()}}


def _html(result: FidelityResult, pictures: dict[int, str]) -> str:
    columns = ("name", "verdict", "voxels_lost", "voxels_gained", "volume_change_percent",
               "contour_volume_change_percent", "dice", "hd95_mm", "slices_affected", "islands", "holes",
               "union_reader_voxels_gained", "keyholes", "thin_voxels", "resampling_lost", "beyond_reference_voxels",
               "reasons")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for segment in result.segments:
        values = segment.to_json()
        cells = []
        for column in columns:
            value = values[column]
            if column == "reasons":
                value = "; ".join(value)
            style = f' style="color:{COLORS[segment.verdict]};font-weight:bold"' if column == "verdict" else ""
            cells.append(f"<td{style}>{html.escape(str(value))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    images = "".join(
        f'<figure><img src="{pictures[n]}" alt="{html.escape(s.name)}"><figcaption>{html.escape(s.name)}: '
        f'{html.escape("; ".join(s.reasons))}</figcaption></figure>'
        for n, s in enumerate(result.segments, start=1) if n in pictures)
    t = result.thresholds
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>RTSTRUCT fidelity</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 6px;
font-size:13px}} figure{{display:inline-block;margin:6px}} figcaption{{max-width:500px;font-size:12px}}</style></head>
<body><h1>RTSTRUCT fidelity: {html.escape(result.worst_verdict.value)}</h1>
<p>Contours (holes: {html.escape(result.holes.value)}): {html.escape(contour_geometry_text(result.holes))};
compared with the original labelmap on its own grid. Lossy when the voxel volume changes more than
{t.lossy_volume_change_percent} %, Dice is below {t.lossy_dice}, more than {100 * t.lossy_thin_fraction:g} % of
voxels are in one-voxel-thin parts, or the contour-area volume differs more than
{t.lossy_contour_volume_change_percent} %.</p>
<p>{html.escape(" ".join(result.warnings))}</p>
<table><tr>{head}</tr>{"".join(rows)}</table>
<h2>Worst slices</h2>{images or "<p>Every segment is lossless.</p>"}
</body></html>
"""
