"""The cohort view of a compare-seg run: every case's agreement with its consensus in one table, per-structure
distributions (box plots), and a ranked list of (case, structure, model) outliers.

An outlier is low agreement with the case's consensus (flagged by the case comparison), or a volume far from that
structure's volumes across the cohort (robust z-score from median and MAD above VOLUME_Z_LIMIT, and a quarter of
the median or more away from it).
"""

from __future__ import annotations

import csv
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from DicomFidelityCommonLib.safe_write import atomic_output_file

VOLUME_Z_LIMIT = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
VOLUME_MIN_RELATIVE_DIFFERENCE = 0.25  # and at least this far from the median: voxel-size steps are not outliers
CONSENSUS = "consensus"


@dataclass
class CohortOutlier:
    case: str
    structure: str
    model: str
    dice: float
    volume_ml: float
    reasons: list[str] = field(default_factory=list)
    volume_z: float | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CohortReview:
    rows: list[dict]  # case, structure, code, model, dice, hd95_mm, msd_mm, volume_ml (model against consensus)
    outliers: list[CohortOutlier]
    files: dict[str, str]

    def to_json(self) -> dict:
        return {"rows": len(self.rows), "outliers": [o.to_json() for o in self.outliers], "files": self.files}


def collect_rows(output_dir: Path, cases: list[str]) -> tuple[list[dict], dict[tuple[str, str, str], list[str]]]:
    """Every model-against-consensus row of the cases' comparison.json, and each case's own outlier reasons."""
    rows, flagged = [], {}
    for case in cases:
        path = output_dir / case / "review" / "comparison.json"
        if not path.is_file():
            continue
        comparison = json.loads(path.read_text())
        for row in comparison["rows"]:
            if row["model_b"] == CONSENSUS:
                rows.append({"case": case, "structure": row["structure"], "code": row["code"],
                             "model": row["model_a"], "dice": row["dice"], "hd95_mm": row.get("hd95_mm"),
                             "msd_mm": row.get("msd_mm"), "volume_ml": row["volume_a_ml"]})
        for outlier in comparison["outliers"]:
            flagged[(case, outlier["structure"], outlier["model"])] = list(outlier["reasons"])
    return rows, flagged


def volume_z_scores(rows: list[dict]) -> dict[int, float]:
    """Row index -> modified z-score of its volume among that structure's volumes in the cohort (all models), for
    the rows far enough from the median to matter."""
    by_structure: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_structure.setdefault(row["code"] or row["structure"], []).append(index)
    scores = {}
    for indices in by_structure.values():
        volumes = [rows[i]["volume_ml"] for i in indices]
        if len(volumes) < 4:
            continue
        median = statistics.median(volumes)
        mad = statistics.median(abs(v - median) for v in volumes)
        if mad > 0:
            scale = mad / 0.6745
        else:  # most volumes equal: the mean absolute deviation (Iglewicz and Hoaglin's fallback)
            scale = 1.253314 * statistics.mean(abs(v - median) for v in volumes)
        if scale == 0:
            continue
        for i in indices:
            if abs(rows[i]["volume_ml"] - median) >= VOLUME_MIN_RELATIVE_DIFFERENCE * abs(median):
                scores[i] = (rows[i]["volume_ml"] - median) / scale
    return scores


def write_cohort_review(output_dir: str | Path, cases: list[str]) -> CohortReview:
    """cohort_metrics.csv, cohort_outliers.csv (worst first), structure box plots and cohort_review.html."""
    output_dir = Path(output_dir)
    rows, flagged = collect_rows(output_dir, cases)
    scores = volume_z_scores(rows)
    outliers = []
    for index, row in enumerate(rows):
        reasons = list(flagged.get((row["case"], row["structure"], row["model"]), []))
        z = scores.get(index)
        if z is not None and abs(z) > VOLUME_Z_LIMIT:
            reasons.append("volume_far_from_cohort")
        if reasons:
            outliers.append(CohortOutlier(row["case"], row["structure"], row["model"], row["dice"], row["volume_ml"],
                                          reasons, None if z is None else round(z, 2)))
    outliers.sort(key=lambda o: (o.dice, -abs(o.volume_z or 0.0)))
    files = {"metrics": str(output_dir / "cohort_metrics.csv"), "outliers": str(output_dir / "cohort_outliers.csv"),
             "boxplot": str(output_dir / "cohort_dice_boxplot.png"), "html": str(output_dir / "cohort_review.html")}
    _write_csv(Path(files["metrics"]), rows, ["case", "structure", "code", "model", "dice", "hd95_mm", "msd_mm",
                                              "volume_ml"])
    _write_csv(Path(files["outliers"]), [o.to_json() for o in outliers],
               ["case", "structure", "model", "dice", "volume_ml", "volume_z", "reasons"])
    _boxplot(Path(files["boxplot"]), rows)
    _html(Path(files["html"]), rows, outliers)
    return CohortReview(rows, outliers, files)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with atomic_output_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (";".join(v) if isinstance(v, list) else v) for k, v in row.items()})


def _boxplot(path: Path, rows: list[dict]) -> None:
    """Dice against the consensus per structure (all cases and models), lowest median first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_structure: dict[str, list[float]] = {}
    for row in rows:
        by_structure.setdefault(row["structure"], []).append(row["dice"])
    order = sorted(by_structure, key=lambda s: statistics.median(by_structure[s]))
    figure = Figure(figsize=(max(6.0, 0.35 * len(order) + 2), 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if order:
        axes.boxplot([by_structure[s] for s in order])
        axes.set_xticks(range(1, len(order) + 1), order, rotation=90, fontsize=7)
    axes.set_ylabel("Dice with the case consensus")
    axes.set_ylim(0, 1.02)
    figure.tight_layout()
    with atomic_output_file(path) as tmp:
        figure.savefig(tmp, format="png")


def _html(path: Path, rows: list[dict], outliers: list[CohortOutlier]) -> None:
    def cells(o: CohortOutlier) -> str:
        z = "" if o.volume_z is None else o.volume_z
        return (f"<tr><td>{html.escape(o.case)}</td><td>{html.escape(o.structure)}</td><td>{html.escape(o.model)}</td>"
                f"<td>{o.dice:.3f}</td><td>{o.volume_ml:.1f}</td><td>{z}</td><td>{html.escape(', '.join(o.reasons))}"
                f"</td><td><a href='{html.escape(o.case)}/review/report.html'>case review</a></td></tr>")

    items = "".join(cells(o) for o in outliers)
    cases = len({r["case"] for r in rows})
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Cohort review</title></head><body>"
            f"<h1>Cohort review</h1><p>{cases} cases, {len(rows)} (case, structure, model) rows, "
            f"{len(outliers)} outliers. Full table: <a href='cohort_metrics.csv'>cohort_metrics.csv</a>.</p>"
            f"<img src='cohort_dice_boxplot.png' alt='Dice per structure'>"
            f"<h2>Outliers, worst first</h2><table border='1' cellpadding='3'><tr><th>case</th><th>structure</th>"
            f"<th>model</th><th>Dice</th><th>volume ml</th><th>volume z</th><th>why</th><th></th></tr>{items}"
            f"</table></body></html>")
    with atomic_output_file(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
