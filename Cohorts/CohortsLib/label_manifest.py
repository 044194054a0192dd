"""The cases of `dicomfidelity run export-seg`: one per row of a label manifest CSV, resolved against the cohort index.

Columns: ``label_file`` (a label volume), ``ct_series_uid`` or ``ct_folder`` (which CT the labels were drawn on), and
optionally ``labels`` (what the values mean: a label description file or a built-in map such as
``totalsegmentator:total``; ``--labels`` gives the default). Relative paths are relative to the manifest's folder.

A row that cannot be resolved (its CT series is not in the index, its folder holds no or several image series, a
cell is missing) is still a case: it carries the reason as ``row_problem`` and fails with it, so it is in the run's
manifest like any other failure and the run goes on. Pure Python (csv, sqlite3).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sqlite3
from pathlib import Path

from DicomFidelityCommonLib.dicom.series import NON_IMAGE_MODALITIES
from DicomFidelityCommonLib.errors import InvalidInputFileError

LABEL_FILE, CT_SERIES_UID, CT_FOLDER, LABELS = "label_file", "ct_series_uid", "ct_folder", "labels"
MANIFEST_FIELDS = ("manifest_row", "patient_id", CT_SERIES_UID, LABEL_FILE, LABELS)  # export-seg manifest columns


def _file_state(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path}\0missing"
    return f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"


def _resolve(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return os.path.abspath(path if path.is_absolute() else base / path)


def _label_spec(value: str, base: Path) -> str:
    """A built-in map name stays a name; anything else is a file, relative to the manifest."""
    from SegmentationQALib.labels.model_maps import is_model_map_name

    if not value or is_model_map_name(value):
        return value
    return _resolve(value, base)


class _ImageSeries:
    """The image series of the index, with their files (the index's ``series`` and ``instances`` tables)."""

    def __init__(self, db_path: Path):
        if not db_path.is_file():
            raise InvalidInputFileError("no cohort index here: run `dicomfidelity index` first", db_path)
        connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            self.series = {uid: (patient, modality) for uid, patient, modality, count in connection.execute(
                "SELECT series_uid, patient_id, modality, slice_count FROM series")
                if modality not in NON_IMAGE_MODALITIES and count}
            self.files: dict[str, list[tuple[str, int, int]]] = {}
            for path, series_uid, size, mtime in connection.execute(
                    "SELECT path, series_uid, size, mtime_ns FROM instances ORDER BY path"):
                if series_uid in self.series:
                    self.files.setdefault(series_uid, []).append((path, size, mtime))
        except sqlite3.DatabaseError as exc:
            raise InvalidInputFileError(f"not a usable cohort index ({exc})", db_path) from exc
        finally:
            connection.close()

    def in_folder(self, folder: str) -> list[str]:
        """Image series with a file under ``folder`` (as indexed: absolute paths)."""
        prefixes = {os.path.join(os.path.abspath(folder), ""), os.path.join(os.path.realpath(folder), "")}
        return sorted(uid for uid, files in self.files.items()
                      if any(path.startswith(tuple(prefixes)) for path, _, _ in files))


def _case_id(label_file: str, key: str) -> str:
    stem = Path(label_file).name.split(".")[0] if label_file else "row"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:40] or "labels"
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def read_label_manifest(manifest: str | Path, db_path: str | Path, default_labels: str | None = None) -> list[dict]:
    """One export-seg case per data row of ``manifest``: the CT series' files from the index ``db_path``, the
    label file and its description; unresolved rows carry ``row_problem``. Raises only for an unreadable manifest
    or index, or a manifest without the needed columns."""
    manifest = Path(manifest)
    base = manifest.resolve().parent
    default_labels = _label_spec(default_labels or "", Path.cwd())  # a command-line path: from where it was typed
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputFileError(f"cannot read the label manifest ({exc})", manifest) from exc
    if LABEL_FILE not in columns or not {CT_SERIES_UID, CT_FOLDER} & set(columns):
        raise InvalidInputFileError(f"a label manifest needs the columns {LABEL_FILE} and {CT_SERIES_UID} or "
                                    f"{CT_FOLDER} (has: {', '.join(columns) or 'none'})", manifest)
    index = _ImageSeries(Path(db_path))
    cases: list[dict] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):  # the CSV line: the header is line 1
        label_file = _resolve(row[LABEL_FILE], base) if row.get(LABEL_FILE) else ""
        labels = _label_spec(row[LABELS], base) if row.get(LABELS) else default_labels
        uid, folder = row.get(CT_SERIES_UID, ""), row.get(CT_FOLDER, "")
        problem = ""
        if not label_file:
            problem = f"row {number}: no {LABEL_FILE}"
        elif uid:
            if uid not in index.series:
                problem = f"row {number}: CT series {uid} is not in the cohort index"
        elif folder:
            folder = _resolve(folder, base)
            found = index.in_folder(folder)
            if len(found) == 1:
                uid = found[0]
            else:
                problem = (f"row {number}: {CT_FOLDER} {folder} holds "
                           + (f"{len(found)} image series ({', '.join(found)}); give {CT_SERIES_UID}" if found
                              else "no indexed image series"))
        else:
            problem = f"row {number}: neither {CT_SERIES_UID} nor {CT_FOLDER}"
        key = f"{uid or folder}\0{label_file}\0{labels}"
        case_id = _case_id(label_file, key)
        if case_id in seen and not problem:
            problem = f"row {number}: same CT, {LABEL_FILE} and {LABELS} as row {seen[case_id]}"
        if case_id in seen:
            case_id = f"{case_id}-row{number}"
        seen.setdefault(case_id, number)
        ct_files = [] if problem else [path for path, _, _ in index.files[uid]]
        digest = hashlib.sha256()
        for state in ([f"{p}\0{s}\0{m}" for p, s, m in index.files.get(uid, [])] if not problem else []) + [
                _file_state(label_file) if label_file else "", _file_state(labels) if os.path.isabs(labels) else
                labels, problem]:
            digest.update(state.encode() + b"\n")
        cases.append({
            "case_id": case_id, "fingerprint": digest.hexdigest(), "manifest_row": number,
            "patient_id": index.series[uid][0] if uid in index.series else "", CT_SERIES_UID: uid,
            LABEL_FILE: label_file, LABELS: labels, "ct_files": ct_files, "row_problem": problem,
            "label_manifest": str(manifest),
        })
    return cases
