"""The reader matrix: every output kind of `segqa export-seg` read by every independent reader, each decoded segment
compared with the source labels voxel by voxel. Prints the README's Markdown table, or JSON.

    python Testing/readers/matrix.py --markdown            # run it (about a minute) and print the table
    python Testing/readers/matrix.py --json results.json   # run it and keep the results
    python Testing/readers/matrix.py --from-json results.json --markdown   # table from a run of the test
      (Testing/unit/test_reader_matrix.py writes its results where $READER_MATRIX_JSON says)
"""

from __future__ import annotations

import argparse
import enum
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project's libraries and Testing/ on the path
    _repo = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(_repo / p) for p in ("DicomFidelityCommon", "SegmentationQA", "Testing")]

import numpy as np  # noqa: E402

from readers import (  # noqa: E402
    dcmqi_reader,
    dcmtk_reader,
    gdcm_reader,
    highdicom_reader,
    itk_reader,
    node_readers,
    orthanc_reader,
    pydicom_reader,
)
from readers.base import Reader, ReaderMissing, ReaderUnsupported, ReadResult  # noqa: E402
from readers.cases import KINDS_BY_NAME, OUTPUT_KINDS, Case, SourceLabels, build_cases  # noqa: E402

READERS: tuple[Reader, ...] = (pydicom_reader.READER, highdicom_reader.READER, dcmqi_reader.READER,
                               dcmtk_reader.READER, gdcm_reader.READER, itk_reader.READER, node_readers.DCMJS,
                               node_readers.CORNERSTONE3D, orthanc_reader.READER,
                               orthanc_reader.DICOMWEB_READER)


class Outcome(enum.Enum):
    IDENTICAL = "identical"  # read, and every segment voxel-identical to the source labels
    DIFFERS = "differs"  # read, but some segment is missing, has other voxels, or one appears from nowhere
    UNSUPPORTED = "unsupported"  # the reader refused the file or failed on it
    MISSING = "missing"  # the reader is not installed or did not start: a set-up failure, never expected


@dataclass
class Cell:
    kind: str
    reader: str
    outcome: Outcome
    detail: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"kind": self.kind, "reader": self.reader, "outcome": self.outcome.value, "detail": self.detail,
                "notes": list(self.notes), "seconds": round(self.seconds, 3)}

    @classmethod
    def from_json(cls, item: dict) -> Cell:
        return cls(item["kind"], item["reader"], Outcome(item["outcome"]), item.get("detail", ""),
                   list(item.get("notes", [])), item.get("seconds", 0.0))


@dataclass
class MatrixResult:
    cells: list[Cell]
    versions: dict[str, str]
    kinds: list[str]
    source: SourceLabels | None = None  # of the run (not in the JSON)
    cases: list[Case] = field(default_factory=list)

    def cell(self, kind: str, reader: str) -> Cell:
        return next(c for c in self.cells if c.kind == kind and c.reader == reader)

    def cell_case(self, kind: str) -> Case:
        return next(c for c in self.cases if c.kind.name == kind)

    def to_json(self) -> dict:
        return {"versions": self.versions, "kinds": self.kinds, "cells": [c.to_json() for c in self.cells]}

    @classmethod
    def from_json(cls, data: dict) -> MatrixResult:
        return cls([Cell.from_json(c) for c in data["cells"]], dict(data["versions"]), list(data["kinds"]))


def compare(source: SourceLabels, case: Case, result: ReadResult) -> tuple[Outcome, str]:
    """Each source mask against the reader's segment of the same number, in the source grid's voxels."""
    geometry = source.geometry
    problems = []
    for number, expected in case.masks.items():
        points = result.segments.get(number)
        if points is None or len(points) == 0:
            problems.append(f"segment {number} dropped ({int(expected.sum())} voxels)")
            continue
        ijk = geometry.lps_to_index(points)
        rounded = np.rint(ijk).astype(np.int64)
        on_grid = np.all(np.abs(ijk - rounded) < 0.01, axis=1)
        inside = on_grid & np.all((rounded >= 0) & (rounded < np.array(expected.shape[::-1])), axis=1)
        got = np.zeros(expected.shape, bool)
        got[rounded[inside, 2], rounded[inside, 1], rounded[inside, 0]] = True
        missing, extra = int((expected & ~got).sum()), int((got & ~expected).sum()) + int((~inside).sum())
        if missing or extra:
            problems.append(f"segment {number}: {missing} voxels missing, {extra} extra (of {int(expected.sum())})")
    for number, points in result.segments.items():
        if number not in case.masks and len(points):
            problems.append(f"segment {number} not in the source ({len(points)} voxels)")
    if not problems:
        return Outcome.IDENTICAL, ""
    shown = "; ".join(problems[:3])
    return Outcome.DIFFERS, shown + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")


def run_cell(reader: Reader, case: Case, source: SourceLabels, workdir: Path) -> Cell:
    cell = _run_cell(reader, case, source, workdir)
    for path, name in ((case.seg_path, case.seg_path.name), (workdir.parent, "...")):  # messages without tmp paths
        cell.detail = cell.detail.replace(str(path), name)
    cell.detail = " ".join(cell.detail.split())
    return cell


def _run_cell(reader: Reader, case: Case, source: SourceLabels, workdir: Path) -> Cell:
    start = time.perf_counter()
    try:
        result = reader.read(case.seg_path, case.reference_dir, workdir / f"{reader.name}-{case.kind.name}")
    except ReaderMissing as exc:
        return Cell(case.kind.name, reader.name, Outcome.MISSING, str(exc), seconds=time.perf_counter() - start)
    except ReaderUnsupported as exc:
        return Cell(case.kind.name, reader.name, Outcome.UNSUPPORTED, str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a library reader failing on the file is its refusal
        return Cell(case.kind.name, reader.name, Outcome.UNSUPPORTED, f"{type(exc).__name__}: {exc}"[:300],
                    seconds=time.perf_counter() - start)
    outcome, detail = compare(source, case, result)
    return Cell(case.kind.name, reader.name, outcome, detail, result.notes, time.perf_counter() - start)


def run_matrix(data_dir: Path, workdir: Path, readers=READERS, kinds=OUTPUT_KINDS) -> MatrixResult:
    source, cases = build_cases(data_dir, workdir, kinds)
    cells, versions = [], {}
    for reader in readers:
        try:
            if reader.start:
                reader.start(workdir)
        except ReaderMissing as exc:
            cells += [Cell(c.kind.name, reader.name, Outcome.MISSING, str(exc)) for c in cases]
            versions[reader.name] = "not available"
            continue
        try:
            versions[reader.name] = reader.version()
            if reader in (node_readers.DCMJS, node_readers.CORNERSTONE3D):
                versions["node"] = node_readers.node_version()
            cells += [run_cell(reader, case, source, workdir / "reads") for case in cases]
        finally:
            if reader.stop:
                reader.stop()
    return MatrixResult(cells, versions, [k.name for k in kinds], source, cases)


SYMBOL = {Outcome.IDENTICAL: "✅", Outcome.DIFFERS: "⚠️ wrong voxels", Outcome.UNSUPPORTED: "❌ not read",
          Outcome.MISSING: "not run"}


def markdown(result: MatrixResult, reasons: dict[tuple[str, str], str] | None = None,
             unstable: set[tuple[str, str]] | frozenset = frozenset()) -> str:
    """The README table: one row per output kind, one column per reader; footnotes say why a cell is not ✅, in the
    reader's own words (and the known reason, from the test's table, where ``reasons`` gives it). ``unstable`` cells
    (a reader bug that shows on some runs only) read "varies" whatever this run saw."""
    readers = list(dict.fromkeys(c.reader for c in result.cells))
    node = f" dcmjs and Cornerstone3D ran under node {result.versions['node']}." if "node" in result.versions else ""
    header = ["Output (`segqa export-seg`)"] + [f"{r} {result.versions.get(r, '')}".strip() for r in readers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: dict[str, int] = {}
    for kind in result.kinds:
        row = [KINDS_BY_NAME[kind].description if kind in KINDS_BY_NAME else kind]
        for reader in readers:
            cell = result.cell(kind, reader)
            varies = (kind, reader) in unstable and cell.outcome in (Outcome.IDENTICAL, Outcome.DIFFERS)
            text = "⚠️ varies" if varies else SYMBOL[cell.outcome]
            known = (reasons or {}).get((kind, reader))
            observed = f"observed: “{cell.detail}”" if cell.detail and known and not varies else cell.detail
            observed = "" if varies else observed
            words = "; ".join(w for w in (known, observed, *cell.notes) if w)
            if words:
                note = f"{reader}: {words}".replace("|", "/").strip()
                text += f" [{notes.setdefault(note, len(notes) + 1)}]"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("✅: read, and every segment voxel-identical to the source labels (TotalSegmentator example, 16 "
                 "slices of 101 x 122, 37 labels; the overlapping rows add their union as a 38th segment). Measured by "
                 "`Testing/unit/test_reader_matrix.py`; regenerate with `python Testing/readers/matrix.py --markdown`. "
                 "⚠️ varies: identical on some runs, stray voxels on others." + node)
    lines.append("")
    lines += [f"{number}. {note}" for note, number in notes.items()]
    return "\n".join(lines)


def known_reasons() -> tuple[dict[tuple[str, str], str], set[tuple[str, str]]]:
    """The reasons in the test's table of expected failures, and its cells that vary from run to run, when the test
    module is beside this package."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "unit" / "test_reader_matrix.py"
    if not path.is_file():
        return {}, set()
    spec = importlib.util.spec_from_file_location("test_reader_matrix", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the table only words the footnotes
        print(f"note: footnotes without the test's reasons ({path.name}: {exc})", file=sys.stderr)
        return {}, set()
    table = module.EXPECTED_FAILURES
    return {key: e.reason for key, e in table.items()}, {key for key, e in table.items() if e.also}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--from-json", metavar="FILE", help="render results written by the test or --json")
    parser.add_argument("--data", metavar="DIR", help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.from_json:
        result = MatrixResult.from_json(json.loads(Path(args.from_json).read_text()))
    else:
        from datapaths import shared_data_dir

        data = Path(args.data) if args.data else shared_data_dir()
        workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="reader-matrix-"))
        try:
            result = run_matrix(data, workdir)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=1))
    if args.markdown or not args.json:
        print(markdown(result, *known_reasons()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
