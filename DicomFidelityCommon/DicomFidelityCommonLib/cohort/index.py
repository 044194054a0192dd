"""Index a folder tree of DICOM files into SQLite: patients, studies, series (with a geometry summary), instances,
the references between objects, and the files that could not be read (with why).

Any layout and any file names: every non-hidden file is tried. Image slices, the bulk of any tree, are read with
``dicom.headers.read_values`` (UIDs, position, orientation straight from the bytes, no dataset); the first file of
each series is read in full for what read_values leaves to pydicom (PatientID is LO) and the series' pixel
geometry, against which every later slice's size is checked (pydicom stops before the pixels, so it never notices a
truncated file). Objects that carry references (RTDOSE, RTSTRUCT, RTPLAN, SEG, ...) are read in full: their
references live in sequences.

Incremental: a file whose (path, size, mtime_ns) is unchanged is not opened again; vanished files are removed. The
series a run touches are marked dirty in the same transaction as their instances, so an interrupted run is
finished by the next one.
"""

from __future__ import annotations

import enum
import json
import math
import multiprocessing
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError

from DicomFidelityCommonLib.dicom import headers
from DicomFidelityCommonLib.errors import DicomFidelityError, InvalidInputFileError
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress

SCHEMA_VERSION = "1"
BATCH_FILES = 500  # files per transaction: an interrupted run loses at most this much work
PARALLEL_MIN_FILES = 1000  # below this, starting worker processes costs more than it saves
POSITION_TOLERANCE_MM = 1e-2

# objects whose references live in sequences: always read in full
REFERENCING_MODALITIES = frozenset({"RTDOSE", "RTSTRUCT", "RTPLAN", "RTRECORD", "SEG", "SR", "KO", "PR", "REG",
                                    "RTIMAGE"})
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
# per slice only what sorts and pairs it: every keyword more costs read_values time on every file (_Reader.read
# unpacks them in this order). NumberOfFrames (IS, which read_values leaves to pydicom) sends a file that states it
# to the full read, which counts its frames: a multi-frame image is never taken for a single slice.
SLICE_KEYWORDS = (*REQUIRED, "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient")
FAST_KEYWORDS = (*SLICE_KEYWORDS, "NumberOfFrames")
PIXEL_KEYWORDS = ("Rows", "Columns", "PixelSpacing", "SamplesPerPixel", "BitsAllocated")
FULL_KEYWORDS = (*SLICE_KEYWORDS, *PIXEL_KEYWORDS)
# read once per series (from its first file): PatientID is LO, which read_values leaves to pydicom
SERIES_TEXT = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "SeriesDescription", "SeriesNumber")
_ROWS, _COLUMNS, _SPACING, _SAMPLES, _BITS = range(len(SERIES_TEXT), len(SERIES_TEXT) + 5)
REFERENCE_SEQUENCES = ("ReferencedSeriesSequence", "ReferencedFrameOfReferenceSequence", "ReferencedRTPlanSequence",
                       "ReferencedStructureSetSequence", "ReferencedDoseSequence")
# every top-level element a full read uses (_rows, _series_text, _references): the rest of the header is skipped
INDEX_KEYWORDS = (*FULL_KEYWORDS, *SERIES_TEXT, "NumberOfFrames", "DoseSummationType", "DoseUnits", "DoseType",
                  *REFERENCE_SEQUENCES)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances(path TEXT PRIMARY KEY, sop_instance_uid TEXT NOT NULL, sop_class_uid TEXT,
    modality TEXT, patient_id TEXT, study_uid TEXT, series_uid TEXT NOT NULL, frame_of_reference_uid TEXT,
    position TEXT, orientation TEXT, pixel_spacing TEXT, rows INTEGER, columns INTEGER, number_of_frames INTEGER,
    dose_summation_type TEXT, dose_units TEXT, dose_type TEXT, size INTEGER, mtime_ns INTEGER);
CREATE INDEX IF NOT EXISTS instances_sop ON instances(sop_instance_uid);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS refs(path TEXT NOT NULL, source_sop_uid TEXT NOT NULL, kind TEXT NOT NULL,
    target_uid TEXT NOT NULL, fraction_group INTEGER, beam_number INTEGER);
CREATE INDEX IF NOT EXISTS refs_path ON refs(path);
CREATE INDEX IF NOT EXISTS refs_source ON refs(source_sop_uid);
CREATE TABLE IF NOT EXISTS unreadable(path TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series_text(series_uid TEXT PRIMARY KEY, patient_id TEXT, patient_name TEXT,
    study_date TEXT, study_description TEXT, series_description TEXT, series_number TEXT, rows INTEGER,
    columns INTEGER, pixel_spacing TEXT, samples INTEGER, bits INTEGER);
CREATE TABLE IF NOT EXISTS dirty_series(series_uid TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS series(series_uid TEXT PRIMARY KEY, study_uid TEXT, patient_id TEXT, modality TEXT,
    frame_of_reference_uid TEXT, series_description TEXT, instance_count INTEGER, rows INTEGER, columns INTEGER,
    pixel_spacing TEXT, orientation TEXT, first_position TEXT, last_position TEXT, slice_count INTEGER,
    slice_spacing REAL, uniform_spacing INTEGER, geometry_note TEXT);
CREATE TABLE IF NOT EXISTS studies(study_uid TEXT PRIMARY KEY, patient_id TEXT, study_date TEXT,
    study_description TEXT);
CREATE TABLE IF NOT EXISTS patients(patient_id TEXT PRIMARY KEY, patient_name TEXT);
"""


class RefKind(str, enum.Enum):
    """What a row of ``refs`` points at."""

    SERIES = "SERIES"  # SEG ReferencedSeriesSequence, RTSTRUCT RTReferencedSeriesSequence
    INSTANCE = "INSTANCE"  # SEG ReferencedInstanceSequence, RTSTRUCT ContourImageSequence
    STUDY = "STUDY"  # RTSTRUCT RTReferencedStudySequence
    FRAME_OF_REFERENCE = "FRAME_OF_REFERENCE"  # RTSTRUCT ReferencedFrameOfReferenceSequence
    RT_PLAN = "RT_PLAN"  # RTDOSE ReferencedRTPlanSequence (+ fraction group / beam)
    STRUCTURE_SET = "STRUCTURE_SET"  # RTPLAN / RTDOSE ReferencedStructureSetSequence
    DOSE = "DOSE"  # RTPLAN ReferencedDoseSequence


class UnreadableKind(str, enum.Enum):
    """Why a file is in the ``unreadable`` table."""

    NOT_DICOM = "NOT_DICOM"
    TRUNCATED = "TRUNCATED"
    MISSING_ATTRIBUTE = "MISSING_ATTRIBUTE"
    READ_ERROR = "READ_ERROR"


@dataclass
class IndexResult:
    """What one ``index_tree`` run did, and what the index holds afterwards."""

    root: str
    db_path: str
    files_seen: int = 0
    files_read: int = 0  # opened this run: new or changed
    files_unchanged: int = 0
    files_removed: int = 0
    full_header_reads: int = 0  # of files_read, those that needed the full header
    unreadable_new: int = 0
    unreadable_total: int = 0
    instances: int = 0
    series: int = 0
    studies: int = 0
    patients: int = 0
    seconds: float = 0.0
    unreadable: list[dict] = field(default_factory=list)  # this run's: path, kind, reason

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


class _Unreadable(Exception):
    def __init__(self, kind: UnreadableKind, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


# ------------------------------------------------------------------------------------------------ database
def open_index(db_path: str | Path) -> sqlite3.Connection:
    """The index database (created when new), WAL so a reader (pairing, a GUI) never blocks the indexer.

    synchronous=OFF (set before WAL, which a new file is switched to in a synced transaction): a run's commits
    never wait for the disk. A killed run still leaves a consistent index (a WAL commit is atomic whatever this
    setting); only an OS crash or power cut while indexing can damage the file. The index is a cache of the tree,
    rebuilt by deleting the file; the runner's job tables, which by default share the file, go with it, but they are
    history only: the stamp in each case folder, not the database, decides that a case is done, so a rebuilt file
    loses no finished case (it forgets which cases failed before). Measured on a loaded 2-CPU machine: 4.2x the
    bare pydicom walk with OFF, 3.1x with NORMAL (its syncs cost 60 ms or more)."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(str(db_path))
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)
        found = connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise InvalidInputFileError(f"not a usable cohort index ({exc})", db_path) from exc
    if found is None:
        connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        connection.commit()
    elif found[0] != SCHEMA_VERSION:
        connection.close()
        raise DicomFidelityError(f"cohort index schema {found[0]}, this version reads {SCHEMA_VERSION}: delete it "
                                 "to rebuild", db_path)
    return connection


def _walk(root: str, skip: set[str]) -> Iterator[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every regular file under ``root``; hidden files and folders (our staging
    folders start with '.') are skipped, folder symlinks are not followed (no loops)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file() and entry.path not in skip:
                    stat = entry.stat()
                    yield entry.path, stat.st_size, stat.st_mtime_ns
            except OSError:
                continue


# ------------------------------------------------------------------------------------------------ reading
def _text(value) -> str | None:
    return None if value is None else (str(value) or None)


def _numbers(value) -> str | None:
    """A DS value as the file states it ('x\\y\\z'): exact, and cheaper than any re-encoding."""
    if value is None:
        return None
    texts = getattr(value, "texts", None)
    return "\\".join(texts if texts is not None else (str(v) for v in value))


def parse_numbers(text: str | None) -> list[float] | None:
    """The floats of a DS text column (position, orientation, pixel spacing)."""
    return None if text is None else [float(v) for v in text.split("\\")]


def _expected_pixel_bytes(rows, columns, frames, samples, bits) -> int | None:
    if not rows or not columns or not bits:
        return None
    return math.ceil(int(rows) * int(columns) * int(frames or 1) * int(samples or 1) * int(bits) / 8)


def _check_size(size: int, expected: int | None, compressed: bool) -> None:
    """A native-pixel file shorter than its pixel data is truncated; pydicom stops before pixels and never sees
    it."""
    if expected is not None and size < expected and not compressed:
        raise _Unreadable(UnreadableKind.TRUNCATED, f"{size} bytes, pixel data alone needs {expected}")


def _items(ds, keyword: str, raw: bool = True) -> list:
    """The items of a sequence: RawItem (read from the raw bytes, no dataset per item) while pydicom has not
    converted it, else pydicom's."""
    if isinstance(ds, headers.RawItem):
        return ds.items(keyword)
    found = headers.raw_items(ds, keyword) if raw else None
    if found is not None:
        return found
    value = ds.get(keyword)
    return list(value) if value else []


def _uid(item, keyword: str) -> str | None:
    """A UID in a sequence item, parsed from its raw bytes: pydicom's conversion of the 100s of image references
    of an RTSTRUCT cost more than reading the file."""
    if isinstance(item, headers.RawItem):
        return item.get(keyword)
    return headers.header_values(item, (keyword,))[0]


def _int(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _references(ds) -> list[tuple[str, str, int | None, int | None]]:
    """(kind, target uid, fraction group, beam) of every reference the pairing follows: from the raw items, or
    where those hold anything unusual, as pydicom converts them."""
    try:
        return _follow(ds, raw=True)
    except headers.NotRaw:
        return _follow(ds, raw=False)


def _follow(ds, raw: bool) -> list[tuple[str, str, int | None, int | None]]:
    refs: list[tuple[str, str, int | None, int | None]] = []

    def items(parent, keyword: str) -> list:
        return _items(parent, keyword, raw)

    def add(kind: RefKind, uid, group=None, beam=None):
        uid = _text(uid)
        if uid:
            refs.append((kind.value, uid.strip(), group, beam))

    for item in items(ds, "ReferencedSeriesSequence"):  # SEG (and others that state their source series)
        add(RefKind.SERIES, _uid(item, "SeriesInstanceUID"))
        for instance in items(item, "ReferencedInstanceSequence"):
            add(RefKind.INSTANCE, _uid(instance, "ReferencedSOPInstanceUID"))
    for frame in items(ds, "ReferencedFrameOfReferenceSequence"):  # RTSTRUCT
        add(RefKind.FRAME_OF_REFERENCE, _uid(frame, "FrameOfReferenceUID"))
        for study in items(frame, "RTReferencedStudySequence"):
            add(RefKind.STUDY, _uid(study, "ReferencedSOPInstanceUID"))
            for series in items(study, "RTReferencedSeriesSequence"):
                add(RefKind.SERIES, _uid(series, "SeriesInstanceUID"))
                for image in items(series, "ContourImageSequence"):
                    add(RefKind.INSTANCE, _uid(image, "ReferencedSOPInstanceUID"))
    for plan in items(ds, "ReferencedRTPlanSequence"):  # RTDOSE
        groups = items(plan, "ReferencedFractionGroupSequence") or [None]
        for group in groups:
            number = _int(group.get("ReferencedFractionGroupNumber")) if group is not None else None
            beams = items(group, "ReferencedBeamSequence") if group is not None else []
            if not beams:
                add(RefKind.RT_PLAN, _uid(plan, "ReferencedSOPInstanceUID"), number)
            for beam in beams:
                add(RefKind.RT_PLAN, _uid(plan, "ReferencedSOPInstanceUID"), number,
                    _int(beam.get("ReferencedBeamNumber")))
    for item in items(ds, "ReferencedStructureSetSequence"):  # RTPLAN, some RTDOSE
        add(RefKind.STRUCTURE_SET, _uid(item, "ReferencedSOPInstanceUID"))
    for item in items(ds, "ReferencedDoseSequence"):  # RTPLAN
        add(RefKind.DOSE, _uid(item, "ReferencedSOPInstanceUID"))
    return refs


def _series_text(ds) -> tuple:
    """The series' text attributes and pixel geometry, from one file read in full."""
    rows, columns, spacing, samples, bits = headers.header_values(ds, PIXEL_KEYWORDS)
    return (*(_text(ds.get(keyword)) for keyword in SERIES_TEXT), rows, columns, _numbers(spacing), samples, bits)


class _Reader:
    """Reads one file into rows; remembers the text attributes of the series it has seen (one full read each)."""

    def __init__(self, series_text: dict[str, tuple]):
        self.series_text = series_text
        self.new_series_text: dict[str, tuple] = {}
        self.full_reads = 0
        self._expected: dict[str, int | None] = {}  # per series: the pixel bytes of one slice

    def _full(self, path: str):
        try:
            return headers.read_header(path)
        except InvalidDicomError as exc:
            raise _Unreadable(UnreadableKind.NOT_DICOM, str(exc)) from None
        except (EOFError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise _Unreadable(UnreadableKind.READ_ERROR, f"{type(exc).__name__}: {exc}") from None

    def _remember(self, series_uid: str, ds) -> None:
        text = _series_text(ds)
        self.series_text[series_uid] = text
        self.new_series_text[series_uid] = text

    def read(self, path: str, size: int, mtime_ns: int) -> tuple[tuple, list]:
        """The instance row and its reference rows; _Unreadable for anything that cannot be indexed."""
        found = headers.read_values(path, FAST_KEYWORDS)
        if found is None:
            return self._read_full(path, size, mtime_ns)
        sop_class, sop_instance, study_uid, series_uid, modality, frame, position, orientation, _ = found[0]
        if modality in REFERENCING_MODALITIES:
            return self._read_full(path, size, mtime_ns)
        text = self.series_text.get(series_uid)
        if text is None or not (sop_class and sop_instance and study_uid and series_uid and modality):
            return self._read_full(path, size, mtime_ns)  # the series' first file, or a file to judge in full
        expected = self._expected.get(series_uid, False)
        if expected is False:
            expected = self._expected[series_uid] = _expected_pixel_bytes(text[_ROWS], text[_COLUMNS], 1,
                                                                          text[_SAMPLES], text[_BITS])
        if expected is not None and size < expected:
            return self._read_full(path, size, mtime_ns)  # truncated, compressed, or a smaller slice: find out
        return (path, sop_instance, sop_class, modality, text[0], study_uid, series_uid, frame,
                None if position is None else "\\".join(position.texts),
                None if orientation is None else "\\".join(orientation.texts),
                None, None, None, 1, None, None, None, size, mtime_ns), []

    def _read_full(self, path: str, size: int, mtime_ns: int) -> tuple[tuple, list]:
        """From the header's index elements alone (headers.read_partial_header: an RTSTRUCT's contours are
        stepped over, not built); from the whole header, as pydicom reads it, when that fails or finds anything
        wrong, so what a broken file is recorded with is pydicom's judgement."""
        self.full_reads += 1
        try:
            ds = headers.read_partial_header(path, INDEX_KEYWORDS)
        except Exception:  # noqa: BLE001 - judged on the whole header below
            ds = None
        if ds is not None:
            try:
                return self._rows(path, size, mtime_ns, ds)
            except Exception:  # noqa: BLE001, S110 - the same, from the whole header
                pass
        return self._rows(path, size, mtime_ns, self._full(path))

    def _rows(self, path: str, size: int, mtime_ns: int, ds) -> tuple[tuple, list]:
        try:
            values = dict(zip(FULL_KEYWORDS, headers.header_values(ds, FULL_KEYWORDS)))
            meta = getattr(ds, "file_meta", None)
            if meta is not None:  # some converters leave the SOP UIDs to the file meta only
                values["SOPClassUID"] = values["SOPClassUID"] or _text(meta.get("MediaStorageSOPClassUID"))
                values["SOPInstanceUID"] = values["SOPInstanceUID"] or _text(meta.get("MediaStorageSOPInstanceUID"))
            missing = next((k for k in REQUIRED if not values[k]), None)
            if missing is not None:
                kind = UnreadableKind.NOT_DICOM if len(ds) == 0 else UnreadableKind.MISSING_ATTRIBUTE
                hint = " (truncated header?)" if size < 2048 else ""
                raise _Unreadable(kind, f"{missing} missing or empty{hint}")
            frames = _int(ds.get("NumberOfFrames")) or 1
            syntax = meta.get("TransferSyntaxUID") if meta is not None else None
            _check_size(size, _expected_pixel_bytes(values["Rows"], values["Columns"], frames,
                                                          values["SamplesPerPixel"], values["BitsAllocated"]),
                        bool(syntax and (syntax.is_compressed or syntax.is_deflated)))
            series_uid = values["SeriesInstanceUID"]
            if series_uid not in self.series_text:
                self._remember(series_uid, ds)
            row = (path, values["SOPInstanceUID"], values["SOPClassUID"], values["Modality"],
                   _text(ds.get("PatientID")), values["StudyInstanceUID"], series_uid, values["FrameOfReferenceUID"],
                   _numbers(values["ImagePositionPatient"]), _numbers(values["ImageOrientationPatient"]),
                   _numbers(values["PixelSpacing"]), values["Rows"], values["Columns"], frames,
                   _text(ds.get("DoseSummationType")), _text(ds.get("DoseUnits")), _text(ds.get("DoseType")),
                   size, mtime_ns)
            refs = [(path, values["SOPInstanceUID"], *ref) for ref in _references(ds)]
        except _Unreadable:
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed value deep in a sequence: record it, go on
            raise _Unreadable(UnreadableKind.READ_ERROR, f"{type(exc).__name__}: {exc}") from None
        return row, refs


# ------------------------------------------------------------------------------------------------ series summary
def _series_summary(rows: list[tuple], text: tuple | None) -> tuple:
    """Geometry of one series from its instances: sorted along the slice normal, never by number or name. Rows,
    columns and pixel spacing are the series' (its first file read in full; slices on the fast path do not state
    them), checked against every instance that was read in full."""
    modality, study_uid, patient_id, frame = rows[0][1], rows[0][2], rows[0][3], rows[0][4]
    notes: list[str] = []
    full = next((r for r in rows if r[8] is not None), None)
    pixels = (full[8], full[9], full[7]) if full else (text[_ROWS], text[_COLUMNS], text[_SPACING]) if text else (
        None, None, None)
    positioned = [r for r in rows if r[5] and r[6]]
    if not positioned:
        return (study_uid, patient_id, modality, frame, len(rows), *pixels, None, None, None, 0, None, None, None)
    first = positioned[0][6]
    orientation = parse_numbers(first)
    # the same text is the same numbers: only a differently written orientation is parsed and compared
    if any(r[6] != first and max(abs(a - b) for a, b in zip(parse_numbers(r[6]), orientation)) > 1e-6
           for r in positioned[1:]):
        notes.append("orientation differs between slices")
    if len({(r[8], r[9], r[7]) for r in rows if r[8] is not None}) > 1:
        notes.append("rows, columns or pixel spacing differ between slices")
    if len({r[4] for r in rows}) > 1:
        notes.append("FrameOfReferenceUID differs between instances")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = (row_dir[1] * col_dir[2] - row_dir[2] * col_dir[1], row_dir[2] * col_dir[0] - row_dir[0] * col_dir[2],
              row_dir[0] * col_dir[1] - row_dir[1] * col_dir[0])
    placed = sorted((_along(r[5], normal), r[5]) for r in positioned)
    distances = [d for d, _ in placed]
    gaps = [b - a for a, b in zip(distances, distances[1:])]
    distinct = 1 + sum(1 for g in gaps if g > POSITION_TOLERANCE_MM)
    if distinct < len(placed):
        notes.append(f"{len(placed) - distinct} slice(s) at a duplicate position")
    steps = [g for g in gaps if g > POSITION_TOLERANCE_MM]
    spacing = sum(steps) / len(steps) if steps else None
    uniform = None if not steps else int(max(steps) - min(steps) <= POSITION_TOLERANCE_MM)
    if uniform == 0:
        notes.append(f"non-uniform slice spacing ({min(steps):.4g}..{max(steps):.4g} mm)")
    return (study_uid, patient_id, modality, frame, len(rows), *pixels, positioned[0][6],
            placed[0][1], placed[-1][1], distinct, spacing, uniform, "; ".join(notes) or None)


def _along(position: str, normal: tuple[float, float, float]) -> float:
    """A position's distance along the slice normal (the usual three values without a generator per slice)."""
    values = position.split("\\")
    if len(values) == 3:
        return float(values[0]) * normal[0] + float(values[1]) * normal[1] + float(values[2]) * normal[2]
    return sum(a * b for a, b in zip(parse_numbers(position), normal))


def _refresh_series(connection: sqlite3.Connection, series_uids: Iterable[str]) -> None:
    text = {row[0]: row[1:] for row in connection.execute("SELECT * FROM series_text")}
    for series_uid in series_uids:
        rows = connection.execute(
            "SELECT path, modality, study_uid, patient_id, frame_of_reference_uid, position, orientation, "
            "pixel_spacing, rows, columns FROM instances WHERE series_uid=? ORDER BY path", (series_uid,)).fetchall()
        connection.execute("DELETE FROM series WHERE series_uid=?", (series_uid,))
        if not rows:
            connection.execute("DELETE FROM series_text WHERE series_uid=?", (series_uid,))
            continue
        if series_uid not in text:  # only files removed from it this run: read what it says again
            try:
                text[series_uid] = _series_text(headers.read_header(rows[0][0]))
                connection.execute("INSERT OR REPLACE INTO series_text VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                                   (series_uid, *text[series_uid]))
            except Exception:  # noqa: BLE001 - changed since it was indexed: the next run reads it again
                pass
        summary = _series_summary(rows, text.get(series_uid))
        description = (text.get(series_uid) or (None,) * 6)[4]
        connection.execute("INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (series_uid, *summary[:4], description, *summary[4:]))
    connection.execute("DELETE FROM dirty_series")
    connection.execute("DELETE FROM studies")
    connection.execute(
        "INSERT INTO studies SELECT s.study_uid, MIN(s.patient_id), MIN(t.study_date), MIN(t.study_description) "
        "FROM series s LEFT JOIN series_text t ON t.series_uid = s.series_uid GROUP BY s.study_uid")
    connection.execute("DELETE FROM patients")
    connection.execute(
        "INSERT INTO patients SELECT COALESCE(s.patient_id, ''), MIN(t.patient_name) FROM series s "
        "LEFT JOIN series_text t ON t.series_uid = s.series_uid GROUP BY COALESCE(s.patient_id, '')")


# ------------------------------------------------------------------------------------------------ the run
def index_tree(root: str | Path, db_path: str | Path, progress: ProgressCallback | None = None,
               workers: int | None = None) -> IndexResult:
    """Index every readable DICOM file under ``root`` into ``db_path``; only new or changed files are read.
    ``workers``: reading processes (forked, for runs of 1000+ files; default one, in this process)."""
    started = time.perf_counter()
    progress = progress or no_progress
    root_path = Path(root)
    if not root_path.is_dir():
        raise InvalidInputFileError("not a folder", root_path)
    root_text = os.path.abspath(root_path)
    db_text = os.path.abspath(db_path)
    skip = {db_text + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    result = IndexResult(root=root_text, db_path=db_text)
    connection = open_index(db_text)
    try:
        progress(0.0, "listing files")
        prefix = root_text.rstrip(os.sep)  # this root's files only: one index may hold several trees
        known = {path: (size, mtime) for path, size, mtime in connection.execute(
            "SELECT path, size, mtime_ns FROM files WHERE path >= ? AND path < ?",
            (prefix + os.sep, prefix + chr(ord(os.sep) + 1)))}
        todo: list[tuple[str, int, int]] = []
        seen: set[str] = set()
        for path, size, mtime in _walk(root_text, skip):
            seen.add(path)
            if known.get(path) == (size, mtime):
                result.files_unchanged += 1
            else:
                todo.append((path, size, mtime))
        result.files_seen = len(seen)
        vanished = [path for path in known if path not in seen]
        changed = [path for path, _, _ in todo if path in known]
        with connection:
            dirty = _forget(connection, vanished + changed)
            connection.executemany("INSERT OR IGNORE INTO dirty_series VALUES (?)", [(uid,) for uid in dirty])
            # a changed series is read again from its first file: its PatientID may be what changed
            connection.executemany("DELETE FROM series_text WHERE series_uid=?", [(uid,) for uid in dirty])
        result.files_removed = len(vanished)

        series_text = {row[0]: row[1:] for row in connection.execute("SELECT * FROM series_text")}
        todo.sort()  # neighbours share a series: one full header read per series and chunk
        count = _worker_count(workers, len(todo))
        size = BATCH_FILES if count == 1 else max(50, min(BATCH_FILES, math.ceil(len(todo) / (4 * count))))
        batches = [todo[start:start + size] for start in range(0, len(todo), size)]
        done = 0
        for batch in _read_batches(batches, series_text, count):
            _store(connection, batch, result)
            done += batch.files
            progress(0.05 + 0.89 * done / max(len(todo), 1), f"read {done} of {len(todo)} files")
        result.files_read = len(todo)

        progress(0.95, "summarising series")
        with connection:
            dirty_uids = [row[0] for row in connection.execute("SELECT series_uid FROM dirty_series")]
            _refresh_series(connection, dirty_uids)
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('root', ?)", (root_text,))
        for table in ("instances", "series", "studies", "patients", "unreadable"):
            count = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
            setattr(result, "unreadable_total" if table == "unreadable" else table, count)
    finally:
        connection.close()
    result.seconds = time.perf_counter() - started
    progress(1.0, f"indexed {result.files_seen} files ({result.files_read} read)")
    return result


def _forget(connection: sqlite3.Connection, paths: list[str]) -> set[str]:
    """Remove everything known about ``paths``; the series they belonged to."""
    dirty: set[str] = set()
    for path in paths:
        found = connection.execute("SELECT series_uid FROM instances WHERE path=?", (path,)).fetchone()
        if found:
            dirty.add(found[0])
    for table in ("files", "instances", "refs", "unreadable"):
        connection.executemany(f"DELETE FROM {table} WHERE path=?", [(p,) for p in paths])  # noqa: S608
    return dirty


@dataclass
class _Batch:
    """Rows read from one batch of files, in a worker or in the calling process."""

    files: int
    file_rows: list = field(default_factory=list)
    instances: list = field(default_factory=list)
    refs: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    series_text: dict = field(default_factory=dict)
    full_reads: int = 0


def _read_batch(reader: _Reader, batch: list[tuple[str, int, int]]) -> _Batch:
    out = _Batch(files=len(batch))
    start_reads = reader.full_reads
    for path, size, mtime in batch:
        try:
            row, row_refs = reader.read(path, size, mtime)
        except _Unreadable as exc:
            out.unreadable.append((path, exc.kind.value, exc.reason))
            out.file_rows.append((path, size, mtime, "unreadable"))
            continue
        except OSError as exc:  # vanished or unreadable between listing and reading
            out.unreadable.append((path, UnreadableKind.READ_ERROR.value, str(exc)))
            out.file_rows.append((path, size, mtime, "unreadable"))
            continue
        out.instances.append(row)
        out.refs.extend(row_refs)
        out.file_rows.append((path, size, mtime, "indexed"))
    out.series_text, reader.new_series_text = reader.new_series_text, {}
    out.full_reads = reader.full_reads - start_reads
    return out


_WORKER_READER: _Reader | None = None


def _start_worker(series_text: dict) -> None:
    global _WORKER_READER
    _WORKER_READER = _Reader(series_text)


def _read_in_worker(batch: list[tuple[str, int, int]]) -> _Batch:
    return _read_batch(_WORKER_READER, batch)


def _worker_count(workers: int | None, files: int) -> int:
    """Reading processes: one unless asked (forking the Slicer application is not safe, and on a loaded machine
    extra processes cost more than they bring). Reading is pure Python, so threads would not help."""
    count = max(1, int(workers or 1))
    if count > 1 and (files < PARALLEL_MIN_FILES or "fork" not in multiprocessing.get_all_start_methods()):
        count = 1  # spawn would re-import pydicom in every worker, costing more than it saves
    return count


def _read_batches(batches: list, series_text: dict, count: int) -> Iterator[_Batch]:
    """The batches' rows in order; read by ``count`` forked processes while this one writes SQLite."""
    if count == 1 or len(batches) < 2:
        reader = _Reader(series_text)
        for batch in batches:
            yield _read_batch(reader, batch)
        return
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+ warns about fork with threads alive
        pool = context.Pool(min(count, len(batches)), initializer=_start_worker, initargs=(series_text,))
    try:
        yield from pool.imap(_read_in_worker, batches)
    finally:
        pool.terminate()
        pool.join()


def _store(connection: sqlite3.Connection, batch: _Batch, result: IndexResult) -> None:
    """One batch in one transaction, with the series it touched marked dirty: an interrupted run leaves a
    consistent index that the next run completes."""
    result.unreadable_new += len(batch.unreadable)
    result.full_header_reads += batch.full_reads
    result.unreadable.extend({"path": p, "kind": k, "reason": r} for p, k, r in batch.unreadable)
    with connection:
        connection.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?)", batch.file_rows)
        connection.executemany("INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               batch.instances)
        connection.executemany("INSERT INTO refs VALUES (?,?,?,?,?,?)", batch.refs)
        connection.executemany("INSERT OR REPLACE INTO unreadable VALUES (?,?,?)", batch.unreadable)
        connection.executemany("INSERT OR REPLACE INTO series_text VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                               [(uid, *text) for uid, text in batch.series_text.items()])
        connection.executemany("INSERT OR IGNORE INTO dirty_series VALUES (?)",
                               [(uid,) for uid in {row[6] for row in batch.instances}])
