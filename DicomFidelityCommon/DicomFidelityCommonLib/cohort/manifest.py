"""What a cohort run leaves for people and scripts: manifest.csv, summary.json and index.html in output_dir.

The manifest has one row per case in the order the cases were given, whether a case ran now or in an earlier run,
so a resumed run writes the same manifest as an uninterrupted one. Every file is written atomically.
"""

from __future__ import annotations

import csv
import enum
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from DicomFidelityCommonLib.safe_write import atomic_output_file

BASE_COLUMNS = ("case", "status", "error", "warnings", "seconds")
LOG_FOLDER = "_logs"  # per-case tracebacks of failed cases: output_dir/_logs/<case>.log
MAX_LIST_ITEMS = 32  # longer list fields are left out of the manifest
FILE_LIST_SUFFIXES = ("files", "paths")  # a series' file list is no manifest column, however short
RESERVED_NAMES = frozenset({LOG_FOLDER, "manifest.csv", "summary.json", "index.html"})


class JobStatus(str, enum.Enum):
    """A case's state. The manifest shows OK, FAILED and SKIPPED; RUNNING exists only in the job database."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    RUNNING = "running"


@dataclass
class CaseRecord:
    """One case's outcome, from this run (``executed``) or an earlier one."""

    case_id: str
    status: JobStatus
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    executed: bool = False
    log_path: str = ""

    def to_json(self) -> dict:
        return {"case": self.case_id, "status": self.status.value, "error": self.error, "warnings": list(self.warnings),
                "seconds": self.seconds, "outputs": dict(self.outputs), "fields": dict(self.fields),
                "executed": self.executed, "log": self.log_path}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def passthrough_fields(case: dict, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Case fields for the manifest: the given names, else every scalar or short list of scalars (UID lists), but
    not case_id and not file lists (``*files``, ``*paths``): the manifest is an overview, the case dict the record."""
    keys = list(names) if names is not None else [k for k in case if k not in ("case_id", "skip_reason")]
    kept = {}
    for key in keys:
        value = case.get(key)
        if isinstance(value, (list, tuple)):
            if names is None and (len(value) > MAX_LIST_ITEMS or not all(_scalar(v) for v in value)
                                  or str(key).lower().endswith(FILE_LIST_SUFFIXES)):
                continue
            value = ";".join("" if v is None else str(v) for v in value)
        elif isinstance(value, dict):
            if names is None:
                continue
            value = json.dumps(value, sort_keys=True, default=str)
        elif not _scalar(value):
            if names is None:
                continue
            value = str(value)
        key = str(key)
        kept[f"case_{key}" if key in BASE_COLUMNS else key] = value  # e.g. the pairing's own ``warnings``
    return kept


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ";".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def manifest_rows(records: Sequence[CaseRecord]) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows: the base columns, case fields in order of first appearance, then the task's outputs under
    their own names (``ct_path``, ``dose_path``, ``masks_dir``), ``output_<name>`` where a case field has the name."""
    field_names: dict[str, None] = {}
    output_names: dict[str, None] = {}
    for record in records:
        field_names.update(dict.fromkeys(k for k in record.fields if k not in BASE_COLUMNS))
        output_names.update(dict.fromkeys(record.outputs))
    taken = set(BASE_COLUMNS) | set(field_names)
    column_of = {name: (f"output_{name}" if name in taken else name) for name in output_names}
    columns = list(BASE_COLUMNS) + list(field_names) + list(column_of.values())
    rows = []
    for record in records:
        row = {"case": record.case_id, "status": record.status.value, "error": record.error,
               "warnings": " | ".join(record.warnings),
               "seconds": "" if record.seconds is None else f"{record.seconds:.3f}"}
        row.update({k: _cell(record.fields.get(k)) for k in field_names})
        row.update({column_of[k]: _cell(record.outputs.get(k)) for k in output_names})
        rows.append(row)
    return columns, rows


def write_manifest(path: Path, records: Sequence[CaseRecord]) -> Path:
    """manifest.csv: one row per case; a spreadsheet or pandas reads it without our code."""
    columns, rows = manifest_rows(records)
    with atomic_output_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_json(path: Path, data: dict) -> Path:
    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return Path(path)


_STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:2px 6px;text-align:left;font-size:90%}.ok{color:#070}.failed{color:#b00}.skipped{color:#777}"""


def write_index(path: Path, summary: dict, records: Sequence[CaseRecord]) -> Path:
    """index.html: counts, failures with reasons and a link per case, readable in any browser without a server."""
    esc = html.escape
    counts = summary.get("counts", {})
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>Cohort run: {esc(str(summary.get('task', '')))}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Cohort run</h1><p>Task <code>{esc(str(summary.get('task', '')))}</code>, "
             f"{esc(str(summary.get('executor', '')))}, {summary.get('total_seconds', 0):.1f} s, "
             f"{summary.get('cases_per_minute', 0):.1f} cases/min. "
             "<a href='manifest.csv'>manifest.csv</a> &middot; <a href='summary.json'>summary.json</a></p>",
             "<table><tr>" + "".join(f"<th>{esc(k)}</th>" for k in counts) + "</tr><tr>"
             + "".join(f"<td>{v}</td>" for v in counts.values()) + "</tr></table>"]
    failures = [r for r in records if r.status is JobStatus.FAILED]
    if failures:
        parts.append("<h2>Failures</h2><table><tr><th>case</th><th>reason</th></tr>")
        for record in failures:
            link = esc(record.case_id)
            if record.log_path:
                link = f"<a href='{esc(quote(record.log_path))}'>{link}</a>"
            parts.append(f"<tr><td>{link}</td><td>{esc(record.error)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Cases</h2><table><tr><th>case</th><th>status</th><th>seconds</th><th>warnings</th>"
                 "<th>outputs</th></tr>")
    for record in records:
        name = esc(record.case_id)
        if record.status is JobStatus.OK:
            name = f"<a href='{esc(quote(record.case_id))}/'>{name}</a>"
        elif record.log_path:
            name = f"<a href='{esc(quote(record.log_path))}'>{name}</a>"
        outputs = []
        for key, value in record.outputs.items():
            text = _cell(value)
            if isinstance(value, str) and record.status is JobStatus.OK and value.startswith(record.case_id + "/"):
                outputs.append(f"<a href='{esc(quote(value))}'>{esc(key)}</a>")
            else:
                outputs.append(f"{esc(key)}: {esc(text)}")
        seconds = "" if record.seconds is None else f"{record.seconds:.2f}"
        detail = esc(record.error) if record.error else esc(" | ".join(record.warnings))
        parts.append(f"<tr><td>{name}</td><td class='{record.status.value}'>{record.status.value}</td>"
                     f"<td>{seconds}</td><td>{detail}</td><td>{' '.join(outputs)}</td></tr>")
    parts.append("</table></body></html>\n")
    with atomic_output_file(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return Path(path)
