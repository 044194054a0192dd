"""Run one task over a cohort of cases: resumable, transactional, on local worker processes or a Dask cluster.

A *task* is a picklable top-level callable ``task(case: dict, case_output_dir: Path, options: dict) -> dict`` that
writes its files into ``case_output_dir`` and returns its outputs (paths, numbers), optionally with a ``warnings``
list (or ``{"outputs": {...}, "warnings": [...]}``); paths under ``case_output_dir`` are recorded relative to
output_dir (``<case_id>/<file>``). A *case* is a dict (or a dataclass such as the pairing's ``Case``) with at least
``case_id`` and ``fingerprint`` (a hash of the case's inputs); a case with a non-empty ``skip_reason`` is recorded
as skipped without running. The task receives the case as given.

Why it is built this way:

- Only this (client) process writes the job database; workers compute and publish their case folder, nothing else.
- A case is published by renaming its staging folder to ``output_dir/<case_id>`` with a stamp file
  (task, fingerprint, options hash). The stamp, not the database, decides whether a case is done, so a client killed
  between a worker's rename and its database write resumes deterministically: the case is adopted, not redone.
- A rerun skips cases whose stamp matches; failed cases are redone only with ``retry_failed``; changing a case's
  fingerprint, the options, or the task's ``cohort_version`` attribute redoes it.
- The manifest lists every case in input order with the same values whether it ran now or earlier, so a resumed run
  and an uninterrupted one give the same manifest (apart from the measured seconds).

Job state lives in the SQLite file ``db_path`` (WAL), in tables of its own (``cohort_runner_jobs``,
``cohort_runner_runs``) beside whatever else (e.g. the cohort index) that file holds.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from DicomFidelityCommonLib.cohort.executors import (
    STAGING_PREFIX,
    TRASH_PREFIX,
    LocalProcessExecutor,
    error_message,
    make_executor,
    one_line,
    read_stamp,
    stamp_matches,
    wait_for_orphan_workers,
)
from DicomFidelityCommonLib.cohort.manifest import (
    LOG_FOLDER,
    RESERVED_NAMES,
    CaseRecord,
    JobStatus,
    passthrough_fields,
    write_index,
    write_json,
    write_manifest,
)
from DicomFidelityCommonLib.errors import DicomFidelityError
from DicomFidelityCommonLib.progress import ProgressCallback, no_progress
from DicomFidelityCommonLib.safe_write import atomic_output_file

RUNNER_LOCK_NAME = ".cohort_runner.lock"

SCHEMA = """
CREATE TABLE IF NOT EXISTS cohort_runner_jobs (
    task TEXT NOT NULL,             -- module:qualname of the task callable
    output_dir TEXT NOT NULL,       -- resolved output folder: one task may run with other options elsewhere
    case_id TEXT NOT NULL,
    options_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,           -- JobStatus value: ok, failed, skipped, running
    error TEXT NOT NULL DEFAULT '',
    warnings TEXT NOT NULL DEFAULT '[]',   -- JSON list of one-line messages
    seconds REAL,                   -- the task's own time in its worker
    outputs_json TEXT NOT NULL DEFAULT '{}',
    attempt INTEGER NOT NULL DEFAULT 0,    -- how many times the case was handed to a worker
    run_id TEXT,
    updated TEXT NOT NULL,
    PRIMARY KEY (task, output_dir, case_id)
);
CREATE TABLE IF NOT EXISTS cohort_runner_runs (
    run_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    options_hash TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    summary_json TEXT
);
"""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def task_identity(task: Callable) -> str:
    """The name a task's results are filed under (``module:qualname``)."""
    module = getattr(task, "__module__", None) or type(task).__module__
    name = getattr(task, "__qualname__", None) or type(task).__qualname__
    return f"{module}:{name}"


def options_hash(options: Mapping[str, Any] | None, task: Callable | None = None) -> str:
    """A stable hash of the options (and the task's ``cohort_version``): changing either redoes every case."""
    payload = {"options": dict(options or {}), "version": getattr(task, "cohort_version", None)}
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def case_id_problem(case_id: str) -> str | None:
    """Why ``case_id`` cannot name a folder in output_dir, or None."""
    if not case_id or case_id in (".", ".."):
        return f"case_id {case_id!r} is empty"
    if case_id.startswith("."):
        return f"case_id {case_id!r} starts with '.', which is kept for staging folders"
    if any(c in case_id for c in "/\\\0") or any(ord(c) < 32 for c in case_id):
        return f"case_id {case_id!r} contains a path separator or control character"
    if case_id in RESERVED_NAMES:
        return f"case_id {case_id!r} is a reserved name in the output folder"
    if len(case_id.encode("utf-8")) > 200:
        return f"case_id {case_id[:40]!r}... is longer than 200 bytes"
    return None


def _as_dict(case: Any) -> dict:
    if isinstance(case, Mapping):
        return dict(case)
    if hasattr(case, "to_json"):
        data = case.to_json()
        return json.loads(data) if isinstance(data, str) else dict(data)
    if dataclasses.is_dataclass(case):
        data = dataclasses.asdict(case)
        for name, attribute in vars(type(case)).items():  # derived lists such as the pairing's dose_sop_uids
            if isinstance(attribute, property) and not name.startswith("_") and name not in data:
                try:
                    data[name] = getattr(case, name)
                except Exception:  # noqa: BLE001 - a property that cannot be read is not a manifest field
                    continue
        return data
    raise TypeError(f"a case must be a dict (or have to_json()), got {type(case).__name__}")


class JobDatabase:
    """The runner's job table in an SQLite file shared with other cohort tables. Written by the client only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process; the stamp is truth
        with self._db:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, task: str, output_dir: str, case_id: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM cohort_runner_jobs WHERE task=? AND output_dir=? AND case_id=?",
                                (task, output_dir, case_id)).fetchone()

    def rows(self, task: str, output_dir: str) -> dict[str, sqlite3.Row]:
        cursor = self._db.execute("SELECT * FROM cohort_runner_jobs WHERE task=? AND output_dir=?", (task, output_dir))
        return {row["case_id"]: row for row in cursor}

    def record(self, task: str, output_dir: str, case_id: str, *, options_hash: str, fingerprint: str,
               status: JobStatus, run_id: str, error: str = "", warnings: Sequence[str] = (),
               seconds: float | None = None, outputs: Mapping | None = None, new_attempt: bool = False) -> None:
        """Insert or update one job; ``new_attempt`` counts a hand-over to a worker."""
        with self._db:
            self._db.execute(
                """INSERT INTO cohort_runner_jobs (task, output_dir, case_id, options_hash, fingerprint, status, error,
                       warnings, seconds, outputs_json, attempt, run_id, updated)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT (task, output_dir, case_id) DO UPDATE SET options_hash=excluded.options_hash,
                       fingerprint=excluded.fingerprint, status=excluded.status, error=excluded.error,
                       warnings=excluded.warnings, seconds=excluded.seconds, outputs_json=excluded.outputs_json,
                       attempt=attempt + excluded.attempt, run_id=excluded.run_id, updated=excluded.updated""",
                (task, output_dir, case_id, options_hash, fingerprint, status.value, error,
                 json.dumps(list(warnings)), seconds, json.dumps(dict(outputs or {}), default=str),
                 1 if new_attempt else 0, run_id, _now()))

    def start_run(self, run_id: str, task: str, output_dir: str, options_hash: str) -> None:
        with self._db:
            self._db.execute("INSERT INTO cohort_runner_runs (run_id, task, output_dir, options_hash, started) "
                             "VALUES (?,?,?,?,?)", (run_id, task, output_dir, options_hash, _now()))

    def finish_run(self, run_id: str, summary: dict) -> None:
        with self._db:
            self._db.execute("UPDATE cohort_runner_runs SET finished=?, summary_json=? WHERE run_id=?",
                             (_now(), json.dumps(summary, default=str), run_id))


class _RunnerLock:
    """One runner per output folder: a second one would clean the first one's staging folders."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / RUNNER_LOCK_NAME
        self._handle = None

    def __enter__(self):
        if os.name != "posix":
            return self
        import fcntl

        self._handle = open(self.path, "a+")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._handle.close()
            raise DicomFidelityError("another cohort run is writing into this output folder",
                                     path=self.path.parent) from exc
        return self

    def __exit__(self, *exc_info):
        if self._handle is not None:
            self._handle.close()  # closing releases the lock; the kernel does the same for a killed process


def clean_staging(output_dir: Path) -> int:
    """Remove what killed runs left: staging and trash folders, half-written manifest files. Returns the count."""
    removed = 0
    for entry in output_dir.iterdir():
        name = entry.name
        if name.startswith((STAGING_PREFIX, TRASH_PREFIX)) or (name.startswith(".") and ".partial" in name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


@dataclass
class CohortRunResult:
    """What a run produced: the per-case records (input order), the summary and the paths of the overview files."""

    output_dir: Path
    manifest_path: Path
    summary_path: Path
    index_path: Path
    records: list[CaseRecord]
    summary: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict:
        return dict(self.summary.get("counts", {}))

    @property
    def failed(self) -> list[CaseRecord]:
        return [r for r in self.records if r.status is JobStatus.FAILED]

    def to_json(self) -> dict:
        return {"output_dir": str(self.output_dir), "manifest": str(self.manifest_path),
                "summary_path": str(self.summary_path), "index": str(self.index_path), "summary": self.summary,
                "cases": [r.to_json() for r in self.records]}


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_cohort(cases: Iterable[Any], task: Callable, output_dir: str | Path, db_path: str | Path,
               options: Mapping[str, Any] | None = None, workers: int | None = None, scheduler: str | None = None,
               retry_failed: bool = False, progress: ProgressCallback | None = None,
               manifest_fields: Sequence[str] | None = None) -> CohortRunResult:
    """Run ``task`` over ``cases`` into ``output_dir``; always completes and writes manifest, summary and index.

    ``workers``: local worker processes (default: one per core). ``scheduler``: ``tcp://HOST:PORT`` of a Dask
    distributed scheduler to run on instead. ``manifest_fields``: case fields to copy into the manifest (default:
    every scalar or short list field). Raises only for caller mistakes (missing or duplicate case_id, no
    fingerprint), a second runner on the same output folder, or an unreachable scheduler.
    """
    started_clock = time.perf_counter()
    started = _now()
    report = progress or no_progress
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    options = dict(options or {})
    task_name = task_identity(task)
    opts_hash = options_hash(options, task)
    run_id = uuid.uuid4().hex

    if not scheduler:
        try:
            pickle.dumps(task)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing here
            raise TypeError(f"task {task_identity(task)} cannot be sent to worker processes; use a top-level "
                            f"function ({error_message(exc)})") from exc
    originals = list(cases)
    dicts = [_as_dict(c) for c in originals]
    seen: set[str] = set()
    for number, case in enumerate(dicts):
        if "case_id" not in case or "fingerprint" not in case:
            raise ValueError(f"case {number} has no case_id or fingerprint (keys: {sorted(case)})")
        case["case_id"] = str(case["case_id"])
        if case["case_id"] in seen:
            raise ValueError(f"case_id {case['case_id']!r} occurs twice")
        seen.add(case["case_id"])

    with _RunnerLock(output_dir):
        if not scheduler and not wait_for_orphan_workers(output_dir):
            raise DicomFidelityError("worker processes of an earlier run still write into this folder", path=output_dir)
        clean_staging(output_dir)
        (output_dir / LOG_FOLDER).mkdir(exist_ok=True)
        database = JobDatabase(db_path)
        try:
            return _run(originals, dicts, task, task_name, opts_hash, options, output_dir, database, run_id, started,
                        started_clock, workers, scheduler, retry_failed, report, manifest_fields)
        finally:
            database.close()


def _run(originals, dicts, task, task_name, opts_hash, options, output_dir, database, run_id, started, started_clock,
         workers, scheduler, retry_failed, report, manifest_fields) -> CohortRunResult:
    out_key = str(output_dir)
    database.start_run(run_id, task_name, out_key, opts_hash)
    rows = database.rows(task_name, out_key)
    records: dict[str, CaseRecord] = {}
    jobs = []
    earlier = 0  # cases whose result (ok, or failed and not retried) comes from an earlier run

    def store(case: dict, status: JobStatus, **values) -> None:
        database.record(task_name, out_key, case["case_id"], options_hash=opts_hash,
                        fingerprint=str(case["fingerprint"]), status=status, run_id=run_id, **values)

    for original, case in zip(originals, dicts):
        case_id, fingerprint = case["case_id"], str(case["fingerprint"])
        fields = passthrough_fields(case, manifest_fields)
        problem = case_id_problem(case_id)
        if problem:
            records[case_id] = CaseRecord(case_id, JobStatus.FAILED, error=problem, fields=fields)
            store(case, JobStatus.FAILED, error=problem)
            continue
        if case.get("skip_reason"):
            reason = one_line(str(case["skip_reason"]))
            records[case_id] = CaseRecord(case_id, JobStatus.SKIPPED, error=reason, fields=fields)
            store(case, JobStatus.SKIPPED, error=reason)
            continue
        stamp = read_stamp(output_dir / case_id)
        if stamp is not None and stamp.get("task") != task_name:
            # Another task's results: replacing them would silently destroy work. One output folder per task.
            raise DicomFidelityError(f"holds results of task {stamp.get('task')}, not {task_name}; "
                                     "use one output folder per task", path=output_dir / case_id)
        row = rows.get(case_id)
        if stamp_matches(stamp, task_name, fingerprint, opts_hash):
            records[case_id] = CaseRecord(case_id, JobStatus.OK, warnings=list(stamp.get("warnings", [])),
                                          seconds=stamp.get("seconds"), outputs=dict(stamp.get("outputs", {})),
                                          fields=fields)
            if row is None or row["status"] != JobStatus.OK.value or row["fingerprint"] != fingerprint \
                    or row["options_hash"] != opts_hash:
                # Published by a worker of a run killed before it could record the case: adopt it.
                store(case, JobStatus.OK, warnings=records[case_id].warnings, seconds=records[case_id].seconds,
                      outputs=records[case_id].outputs)
            earlier += 1
            continue
        if (not retry_failed and row is not None and row["status"] == JobStatus.FAILED.value
                and row["fingerprint"] == fingerprint and row["options_hash"] == opts_hash):
            log = f"{LOG_FOLDER}/{case_id}.log"
            records[case_id] = CaseRecord(case_id, JobStatus.FAILED, error=row["error"],
                                          warnings=json.loads(row["warnings"] or "[]"), seconds=row["seconds"],
                                          fields=fields, log_path=log if (output_dir / log).is_file() else "")
            earlier += 1
            continue
        jobs.append({"task": task, "task_name": task_name, "case": original, "case_id": case_id,
                     "fingerprint": fingerprint, "options": options, "options_hash": opts_hash,
                     "output_dir": out_key, "_fields": fields})

    total = len(dicts)
    counts = collections.Counter(r.status for r in records.values())
    executor_text = "nothing to run"
    worker_count = 0
    task_seconds = 0.0
    executed = 0
    run_started = time.perf_counter()
    interrupted: BaseException | None = None

    def tell() -> None:
        done = counts[JobStatus.OK] + counts[JobStatus.FAILED] + counts[JobStatus.SKIPPED]
        minutes = (time.perf_counter() - run_started) / 60
        rate = executed / minutes if minutes > 0 else 0.0
        eta = f", ETA {_eta((total - done) / rate * 60)}" if rate > 0 and done < total else ""
        report(done / total if total else 1.0,
               f"{done}/{total} cases: {counts[JobStatus.OK]} ok, {counts[JobStatus.FAILED]} failed"
               f"{f', {counts[JobStatus.SKIPPED]} skipped' if counts[JobStatus.SKIPPED] else ''}"
               f"{f', {earlier} from earlier runs' if earlier else ''}; {rate:.1f} cases/min{eta}")

    def finish(job: dict, result: dict) -> None:
        nonlocal task_seconds, executed
        case_id = job["case_id"]
        log_rel = f"{LOG_FOLDER}/{case_id}.log"
        log_path = output_dir / log_rel
        seconds = float(result.get("seconds") or 0.0)
        executed += 1
        task_seconds += seconds
        if result.get("status") == JobStatus.OK.value:
            record = CaseRecord(case_id, JobStatus.OK, warnings=list(result.get("warnings", [])), seconds=seconds,
                                outputs=dict(result.get("outputs", {})), fields=job["_fields"], executed=True)
            log_path.unlink(missing_ok=True)
        else:
            error = one_line(result.get("error") or "failed without a message")
            with atomic_output_file(log_path) as tmp:
                tmp.write_text(f"case: {case_id}\ntask: {task_name}\nerror: {error}\n\n"
                               f"{result.get('traceback') or ''}", encoding="utf-8")
            record = CaseRecord(case_id, JobStatus.FAILED, error=error, warnings=list(result.get("warnings", [])),
                                seconds=seconds, fields=job["_fields"], executed=True, log_path=log_rel)
        records[case_id] = record
        counts[record.status] += 1
        database.record(task_name, out_key, case_id, options_hash=opts_hash, fingerprint=job["fingerprint"],
                        status=record.status, run_id=run_id, error=record.error, warnings=record.warnings,
                        seconds=record.seconds, outputs=record.outputs)
        tell()

    tell()
    if jobs:
        executor = make_executor(workers, scheduler, output_dir, len(jobs), getattr(task, "__module__", None))
        executor_text = executor.describe()
        worker_count = executor.workers
        pending = collections.deque(jobs)
        suspects: collections.deque = collections.deque()  # in flight when a worker process died
        in_flight: dict[Any, dict] = {}

        def submit(job: dict, alone: bool) -> None:
            database.record(task_name, out_key, job["case_id"], options_hash=opts_hash,
                            fingerprint=job["fingerprint"], status=JobStatus.RUNNING, run_id=run_id, new_attempt=True)
            future = executor.submit({k: v for k, v in job.items() if not k.startswith("_")})
            in_flight[future] = dict(job, _alone=alone)

        try:
            while pending or suspects or in_flight:
                if suspects:
                    # A worker process died (crash, out of memory): rerun each case that was in flight on its own,
                    # so only the case that kills its worker fails and the others still finish.
                    if not in_flight:
                        submit(suspects.popleft(), alone=True)
                else:
                    while pending and len(in_flight) < executor.max_in_flight:
                        submit(pending.popleft(), alone=False)
                done, _ = executor.wait_any(in_flight)
                broken = False
                for future in sorted(done, key=lambda f: in_flight[f]["case_id"]):
                    job = in_flight.pop(future)
                    outcome = executor.outcome(future)
                    if isinstance(outcome, str):  # the worker, not the task, failed
                        broken = True
                        if executor.lost_retries and not job["_alone"]:
                            suspects.append(job)
                            continue
                        outcome = {"status": "failed", "error": outcome, "traceback": outcome}
                    finish(job, outcome)
                if broken:
                    executor.recover()
        except BaseException as exc:  # Ctrl-C or a progress callback that cancels: still leave a manifest
            interrupted = exc
            executor.close(cancel=True)
        else:
            executor.close()
        if interrupted is not None:
            reason = f"run interrupted ({type(interrupted).__name__})"
            for job in jobs:
                if job["case_id"] not in records:
                    records[job["case_id"]] = CaseRecord(job["case_id"], JobStatus.SKIPPED, error=reason,
                                                         fields=job["_fields"])
                    counts[JobStatus.SKIPPED] += 1

    ordered = [records[case["case_id"]] for case in dicts]
    manifest_path = write_manifest(output_dir / "manifest.csv", ordered)
    wall = time.perf_counter() - started_clock
    effective = min(worker_count, executed) if executed else 0
    busy = wall * effective
    summary = {
        "task": task_name,
        "options_hash": opts_hash,
        "run_id": run_id,
        "started": started,
        "finished": _now(),
        "executor": executor_text,
        "workers": worker_count,
        "interrupted": interrupted is not None,
        "counts": {"cases": total, "ok": counts[JobStatus.OK], "failed": counts[JobStatus.FAILED],
                   "skipped": counts[JobStatus.SKIPPED], "ran": executed, "from_earlier_runs": earlier},
        "failures": [{"case": r.case_id, "error": r.error, "log": r.log_path}
                     for r in ordered if r.status is JobStatus.FAILED],
        "total_seconds": round(wall, 3),
        "task_seconds": round(task_seconds, 3),
        "cases_per_minute": round(executed / (wall / 60), 2) if executed and wall > 0 else 0.0,
        # Runner overhead: the wall time not explained by the tasks' own time spread over the workers in use.
        "runner_overhead_seconds": round(wall - task_seconds / effective, 3) if effective else round(wall, 3),
        "overhead_per_case_seconds": round((busy - task_seconds) / executed, 4) if executed else 0.0,
        "overhead_fraction": round(1 - task_seconds / busy, 4) if busy > 0 else 0.0,
        "manifest": manifest_path.name,
    }
    summary_path = write_json(output_dir / "summary.json", summary)
    index_path = write_index(output_dir / "index.html", summary, ordered)
    database.finish_run(run_id, summary)
    if interrupted is not None:
        raise interrupted
    return CohortRunResult(output_dir, manifest_path, summary_path, index_path, ordered, summary)


__all__ = [
    "CaseRecord",
    "CohortRunResult",
    "JobDatabase",
    "JobStatus",
    "LocalProcessExecutor",
    "case_id_problem",
    "clean_staging",
    "options_hash",
    "run_cohort",
    "task_identity",
]
