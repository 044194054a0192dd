"""Review report of one comparison: metrics.csv, comparison.json and report.html with a structure x model heat map
of Dice vs consensus (worst structures first) and, per flagged structure, its slice of largest disagreement with
every model's outline. The folder appears complete or not at all."""

from __future__ import annotations

import csv
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from DicomFidelityCommonLib.safe_write import atomic_output_dir
from SegmentationQALib.compare.case import CONSENSUS, ComparisonResult, structure_masks

CSV_COLUMNS = ["structure", "code", "model_a", "model_b", "dice", "jaccard", "hd95_mm", "hausdorff_mm", "msd_mm",
               "asd_a_to_b_mm", "asd_b_to_a_mm", "surface_dice", "tolerance_mm", "volume_a_ml", "volume_b_ml",
               "volume_difference_ml", "centroid_distance_mm", "status", "reason"]


@dataclass
class ReportFiles:
    folder: Path
    csv: Path
    json: Path
    html: Path
    heatmap: Path | None
    structure_images: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"folder": str(self.folder), "csv": str(self.csv), "json": str(self.json), "html": str(self.html),
                "heatmap": str(self.heatmap) if self.heatmap else None,
                "structure_images": {k: str(v) for k, v in self.structure_images.items()}}


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "value") and not isinstance(value, (int, float)):
        return str(value.value)
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    return str(value)


def write_metrics_csv(result: ComparisonResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in result.rows:
            values = {"structure": row.structure, "code": row.code, "model_a": row.model_a, "model_b": row.model_b,
                      "dice": row.metrics.dice, "msd_mm": row.metrics.msd_mm, **row.metrics.__dict__}
            writer.writerow([_cell(values.get(column)) for column in CSV_COLUMNS])


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "structure"


def _figure(width: float, height: float):
    """A figure without pyplot (no global state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def write_heatmap(result: ComparisonResult, path: Path) -> bool:
    """Structure x model Dice vs consensus, worst structures on top; grey where a model lacks the structure."""
    table = result.dice_vs_consensus()
    structures = result.structures_worst_first()
    if not structures:
        return False
    values = np.array([[table[s].get(m, np.nan) for m in result.models] for s in structures], dtype=float)
    figure = _figure(2.5 + 1.1 * len(result.models), 1.2 + 0.24 * len(structures))
    axes = figure.add_subplot(1, 1, 1)
    import matplotlib

    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#bbbbbb")
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                        interpolation="nearest")
    axes.set_xticks(range(len(result.models)), result.models, rotation=30, ha="right")
    axes.set_yticks(range(len(structures)), structures, fontsize=7)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
    axes.set_title(f"Dice vs {result.options.consensus.value} consensus")
    figure.colorbar(image, ax=axes, fraction=0.05)
    figure.tight_layout()
    figure.savefig(path)
    return True


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [1, 99])
    if low < -500 and high > 100:  # CT in HU: soft-tissue window
        return -160.0, 240.0
    return float(low), float(high if high > low else low + 1)


def write_disagreement_slice(result: ComparisonResult, label: str, path: Path, image: np.ndarray | None) -> bool:
    """The slice (along the slice axis) where the models' masks of ``label`` disagree most, with every model's
    outline and the consensus dashed."""
    structure = next((s for s in result.matching.structures if s.label == label), None)
    if structure is None:
        return False
    by_name = dict(result.segmentations)
    box, crops = structure_masks(structure, by_name, result.boxes_by_model())
    if box is None:
        return False
    votes = sum(c.astype(np.uint8) for c in crops.values())
    disagreement = ((votes > 0) & (votes < len(crops))).sum(axis=(1, 2))
    k = int(np.argmax(disagreement)) if disagreement.any() else int(np.argmax(votes.sum(axis=(1, 2))))
    margin = 8
    shape = result.geometry.shape
    rows = slice(max(box[1].start - margin, 0), min(box[1].stop + margin, shape[1]))
    cols = slice(max(box[2].start - margin, 0), min(box[2].stop + margin, shape[2]))
    dx, dy, _ = result.geometry.spacing
    figure = _figure(6, 6)
    axes = figure.add_subplot(1, 1, 1)
    if image is not None:
        low, high = _window(image)
        axes.imshow(image[box[0].start + k, rows, cols], cmap="gray", vmin=low, vmax=high, aspect=dy / dx,
                    interpolation="nearest")
    else:
        axes.imshow(np.zeros((rows.stop - rows.start, cols.stop - cols.start)), cmap="gray", vmin=0, vmax=1,
                    aspect=dy / dx)
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    handles = []
    from matplotlib.lines import Line2D

    full = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8)
    r0, c0 = box[1].start - rows.start, box[2].start - cols.start
    outlines = list(crops.items())
    if structure.key in result.consensus_segments and result.consensus is not None:
        outlines.append((CONSENSUS, result.consensus.mask(result.consensus_segments[structure.key])[box]))
    for number, (model, crop) in enumerate(outlines):
        full[:] = 0
        full[r0:r0 + crop.shape[1], c0:c0 + crop.shape[2]] = crop[k]
        colour = "white" if model == CONSENSUS else colours(number % 10)
        style = "--" if model == CONSENSUS else "-"
        if full.any():
            axes.contour(full, levels=[0.5], colors=[colour], linewidths=1.2, linestyles=style)
        handles.append(Line2D([0], [0], color=colour, linestyle=style, label=model))
    axes.legend(handles=handles, loc="upper right", fontsize=7, facecolor="#444444", labelcolor="white")
    axes.set_title(f"{label}: slice {box[0].start + k} (largest disagreement)")
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(path)
    return True


def _html(result: ComparisonResult, files: dict[str, str], heatmap: str | None) -> str:
    e = html.escape
    table = result.dice_vs_consensus()
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Multi-model review</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style></head><body>",
             f"<h1>Multi-model review: {e(', '.join(result.models))}</h1>",
             f"<p>Consensus: {e(result.options.consensus.value)}; surface Dice tolerance {result.options.tolerance_mm}"
             f" mm; HD{result.options.percentile:g}. {len(result.matching.structures)} matched structures, "
             f"{len(result.outliers)} flagged (model, structure) pairs. Metrics: <a href='metrics.csv'>metrics.csv</a>,"
             " <a href='comparison.json'>comparison.json</a>.</p>"]
    if heatmap:
        parts.append(f"<h2>Dice vs consensus (worst first)</h2><img src='{e(heatmap)}' alt='heat map'>")
    parts.append("<h2>Structures, worst first</h2><table><tr><th>structure</th>"
                 + "".join(f"<th>{e(m)}</th>" for m in result.models) + "<th>missing in</th></tr>")
    missing = {s.label: s.missing_in for s in result.matching.structures}
    for label in result.structures_worst_first():
        cells = "".join(f"<td>{table[label][m]:.3f}</td>" if m in table[label] else "<td>-</td>"
                        for m in result.models)
        parts.append(f"<tr><td>{e(label)}</td>{cells}<td>{e(', '.join(missing.get(label, [])))}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Flagged</h2><table><tr><th>structure</th><th>model</th><th>Dice</th><th>median of others</th>"
                 "<th>why</th></tr>")
    for outlier in result.outliers:
        median = "" if outlier.median_other_dice is None else f"{outlier.median_other_dice:.3f}"
        parts.append(f"<tr><td>{e(outlier.structure)}</td><td>{e(outlier.model)}</td><td>{outlier.dice:.3f}</td>"
                     f"<td>{median}</td><td>{e(', '.join(r.value for r in outlier.reasons))}</td></tr>")
    parts.append("</table>")
    if result.no_consensus:
        parts.append(f"<p>No consensus (fewer than {result.options.min_voters} models have them, or all empty): "
                     f"{e(', '.join(result.no_consensus))}</p>")
    parts.append("<h2>Structures found in one model only</h2><ul>")
    for model, names in result.matching.unmatched.items():
        parts.append(f"<li>{e(model)}: {e(', '.join(names)) or 'none'}</li>")
    parts.append("</ul>")
    for label, name in files.items():
        parts.append(f"<h3>{e(label)}</h3><img src='{e(name)}' alt='{e(label)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_comparison_report(result: ComparisonResult, out_dir: str | Path, image: np.ndarray | None = None,
                            max_images: int = 40) -> ReportFiles:
    """Write the report folder (which must not exist or be empty). ``image``: the CT on the same grid, indexed
    [slice, row, column], drawn under the outlines."""
    out_dir = Path(out_dir)
    flagged = list(dict.fromkeys(o.structure for o in result.outliers))[:max_images]
    images: dict[str, str] = {}
    with atomic_output_dir(out_dir) as tmp:
        write_metrics_csv(result, tmp / "metrics.csv")
        (tmp / "comparison.json").write_text(json.dumps(result.to_json(), indent=1, allow_nan=False),
                                             encoding="utf-8")
        heatmap = "dice_heatmap.png" if write_heatmap(result, tmp / "dice_heatmap.png") else None
        for number, label in enumerate(flagged):
            name = f"disagreement_{number:02d}_{_safe_name(label)}.png"
            if write_disagreement_slice(result, label, tmp / name, image):
                images[label] = name
        (tmp / "report.html").write_text(_html(result, images, heatmap), encoding="utf-8")
    return ReportFiles(out_dir, out_dir / "metrics.csv", out_dir / "comparison.json", out_dir / "report.html",
                       out_dir / heatmap if heatmap else None, {k: out_dir / v for k, v in images.items()})


def write_consensus_seg(result: ComparisonResult, reference, path: str | Path, options=None):
    """The consensus as a DICOM SEG on ``reference`` (an ImageSeries on the comparison grid), every segment an
    AUTOMATIC one whose algorithm identification names the models it came from. Returns the SegExportResult."""
    import dataclasses

    from DicomFidelityCommonLib.errors import EmptySegmentationError
    from SegmentationQALib.seg import SegExportOptions, write_seg

    if result.consensus is None or not result.consensus.segments:
        raise EmptySegmentationError("no structure has a consensus (too few models have it)", path)
    name = f"consensus of {', '.join(result.models)}"
    name = name if len(name) <= 64 else name[:61] + "..."
    segments = [dataclasses.replace(s, algorithm_type="AUTOMATIC", algorithm_name=name)
                for s in result.consensus.segments]
    consensus = dataclasses.replace(result.consensus, segments=segments)
    options = options or SegExportOptions(series_description="Consensus", algorithm_type="AUTOMATIC",
                                          algorithm_name=name)
    return write_seg(consensus, reference, path, options)
