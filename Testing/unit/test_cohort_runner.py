"""The cohort runner: same results with 1 or 2 workers, resumable reruns, failures recorded, a killed runner resumed
without redoing finished cases, and a Dask worker killed mid-run without losing or duplicating a case.

The toy task writes a small numpy file derived from the case and a marker file per execution (so the tests can
count executions across processes), and sleeps briefly so several cases are in flight at once.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from DicomFidelityCommonLib.cohort.executors import STAMP_NAME, read_stamp
from DicomFidelityCommonLib.cohort.runner import JobStatus, options_hash, run_cohort, task_identity
from DicomFidelityCommonLib.errors import DicomFidelityError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
N_CASES = 12


def make_cases(n: int = N_CASES) -> list[dict]:
    return [{"case_id": f"P{i:02d}-case", "fingerprint": f"fp-{i}", "patient_id": f"P{i:02d}",
             "ct_series_uid": f"1.2.3.{i}", "rtdose_sop_uids": [f"1.2.4.{i}.1", f"1.2.4.{i}.2"],
             "rtstruct_sop_uid": f"1.2.5.{i}", "ct_files": [f"/data/ct{j}.dcm" for j in range(40)]}
            for i in range(n)]


def toy_task(case: dict, case_output_dir: Path, options: dict) -> dict:
    """Marker first (counts executions, even killed ones), then fail if asked, sleep, write a derived array."""
    if options.get("marker_dir"):
        Path(options["marker_dir"], f"{case['case_id']}.{uuid.uuid4().hex}").touch()
    fail_dir = options.get("fail_dir")
    if fail_dir and Path(fail_dir, case["case_id"]).exists():
        kind = Path(fail_dir, case["case_id"]).read_text()
        if kind == "crash":
            os._exit(3)  # the worker process dies, as with a segfault or the OOM killer
        if kind == "typed":
            raise DicomFidelityError("RTDOSE has no DoseGridScaling", path=f"/data/{case['case_id']}/dose.dcm",
                                     tag="(3004,000E)")
        raise ValueError("bad value\nwith a second line")
    time.sleep(float(options.get("sleep", 0.05)))
    seed = int(hashlib.sha256(f"{case['case_id']}|{case['fingerprint']}".encode()).hexdigest()[:8], 16)
    values = np.random.default_rng(seed).normal(size=(8, 8)).astype(np.float32)
    path = case_output_dir / "values.npy"
    np.save(path, values)
    return {"values": path, "mean": round(float(values.mean()), 6),
            "warnings": ["odd case"] if int(case["case_id"][1:3]) % 5 == 0 else []}


def read_manifest(output_dir: Path, drop=("seconds",)) -> list[dict]:
    with open(output_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(handle)]


def output_files(output_dir: Path) -> dict[str, str]:
    """Every published file but the run's overview files and the stamps (they hold measured seconds)."""
    files = {}
    for path in sorted(output_dir.rglob("*")):
        rel = path.relative_to(output_dir)
        if path.is_file() and not any(p.startswith(".") for p in rel.parts) and rel.parts[0] != "_logs" \
                and rel.name not in ("manifest.csv", "summary.json", "index.html"):
            files[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def marker_counts(marker_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in marker_dir.iterdir():
        case_id = path.name.rsplit(".", 1)[0]
        counts[case_id] = counts.get(case_id, 0) + 1
    return counts


def published(output_dir: Path) -> set[str]:
    return {p.name for p in output_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}


@pytest.fixture
def dirs(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    return tmp_path / "out", tmp_path / "cohort.sqlite", markers


def test_two_workers_match_one_and_rerun_skips_everything(tmp_path):
    markers1, markers2 = tmp_path / "m1", tmp_path / "m2"
    markers1.mkdir()
    markers2.mkdir()
    messages = []
    one = run_cohort(make_cases(), toy_task, tmp_path / "w1", tmp_path / "db1.sqlite",
                     {"marker_dir": str(markers1)}, workers=1)
    two = run_cohort(make_cases(), toy_task, tmp_path / "w2", tmp_path / "db2.sqlite",
                     {"marker_dir": str(markers2)}, workers=2, progress=lambda f, m: messages.append((f, m)))
    assert one.summary["workers"] == 1 and two.summary["workers"] == 2
    rows = read_manifest(tmp_path / "w1")
    assert rows == read_manifest(tmp_path / "w2")
    assert output_files(tmp_path / "w1") == output_files(tmp_path / "w2")
    assert len(rows) == N_CASES and {r["status"] for r in rows} == {"ok"}
    assert rows[0]["case"] == "P00-case" and rows[0]["patient_id"] == "P00"
    assert rows[3]["rtdose_sop_uids"] == "1.2.4.3.1;1.2.4.3.2" and rows[3]["rtstruct_sop_uid"] == "1.2.5.3"
    assert rows[3]["values"] == "P03-case/values.npy"  # relative to output_dir, not the staging folder
    assert rows[5]["warnings"] == "odd case" and rows[4]["warnings"] == ""
    assert "ct_files" not in rows[0]  # long file lists stay out of the manifest
    expected = np.random.default_rng(int(hashlib.sha256(b"P03-case|fp-3").hexdigest()[:8], 16)).normal(size=(8, 8))
    np.testing.assert_array_equal(np.load(tmp_path / "w2" / "P03-case" / "values.npy"), expected.astype(np.float32))
    assert messages[-1][0] == 1.0 and "12/12 cases: 12 ok, 0 failed" in messages[-1][1]
    assert "cases/min" in messages[-1][1] and any("ETA" in m for _, m in messages)
    summary = json.loads((tmp_path / "w2" / "summary.json").read_text())
    assert summary["counts"]["ok"] == N_CASES and summary["counts"]["ran"] == N_CASES
    assert summary["cases_per_minute"] > 0 and "overhead_per_case_seconds" in summary
    index = (tmp_path / "w2" / "index.html").read_text()
    assert "href='P03-case/'" in index and "12" in index
    assert not [p for p in (tmp_path / "w2").iterdir() if p.name.startswith(".staging")]

    before = marker_counts(markers2)
    again = run_cohort(make_cases(), toy_task, tmp_path / "w2", tmp_path / "db2.sqlite",
                       {"marker_dir": str(markers2)}, workers=2)
    assert marker_counts(markers2) == before == {c["case_id"]: 1 for c in make_cases()}
    assert again.counts["ran"] == 0 and again.counts["from_earlier_runs"] == N_CASES
    assert read_manifest(tmp_path / "w2") == rows
    assert all(not r.executed for r in again.records)


def test_changed_fingerprint_or_options_reruns_only_what_changed(dirs, monkeypatch):
    out, db, markers = dirs
    options = {"marker_dir": str(markers)}
    run_cohort(make_cases(), toy_task, out, db, options, workers=2)
    old = np.load(out / "P07-case" / "values.npy")
    cases = make_cases()
    cases[7]["fingerprint"] = "fp-7-changed"
    result = run_cohort(cases, toy_task, out, db, options, workers=2)
    counts = marker_counts(markers)
    assert counts.pop("P07-case") == 2 and set(counts.values()) == {1}
    assert result.counts["ran"] == 1
    assert not np.array_equal(np.load(out / "P07-case" / "values.npy"), old)
    assert read_stamp(out / "P07-case")["fingerprint"] == "fp-7-changed"
    with sqlite3.connect(db) as conn:
        attempt, fingerprint = conn.execute("SELECT attempt, fingerprint FROM cohort_runner_jobs WHERE case_id=?",
                                            ("P07-case",)).fetchone()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert (attempt, fingerprint, journal) == (2, "fp-7-changed", "wal")
    # Other options redo every case.
    result = run_cohort(cases, toy_task, out, db, {**options, "sleep": 0.01}, workers=2)
    assert result.counts["ran"] == N_CASES
    # So does a new version of the task (its cohort_version), and only once.
    monkeypatch.setattr(toy_task, "cohort_version", 2, raising=False)
    assert run_cohort(cases, toy_task, out, db, {**options, "sleep": 0.01}, workers=2).counts["ran"] == N_CASES
    assert run_cohort(cases, toy_task, out, db, {**options, "sleep": 0.01}, workers=2).counts["ran"] == 0


def test_failures_are_recorded_and_retried_only_when_asked(dirs, tmp_path):
    out, db, markers = dirs
    fail_dir = tmp_path / "fail"
    fail_dir.mkdir()
    (fail_dir / "P02-case").write_text("typed")
    (fail_dir / "P09-case").write_text("other")
    options = {"marker_dir": str(markers), "fail_dir": str(fail_dir)}
    result = run_cohort(make_cases(), toy_task, out, db, options, workers=2)
    rows = {r["case"]: r for r in read_manifest(out)}
    assert rows["P02-case"]["status"] == "failed"
    assert rows["P02-case"]["error"] == "/data/P02-case/dose.dcm: (3004,000E): RTDOSE has no DoseGridScaling"
    assert rows["P09-case"]["error"] == "ValueError: bad value with a second line"
    assert "Traceback" not in (out / "manifest.csv").read_text()
    log = (out / "_logs" / "P09-case.log").read_text()
    assert "Traceback" in log and "toy_task" in log
    assert not (out / "P02-case").exists() and not (out / "P09-case").exists()
    assert result.counts == {"cases": 12, "ok": 10, "failed": 2, "skipped": 0, "ran": 12, "from_earlier_runs": 0}
    summary = json.loads((out / "summary.json").read_text())
    assert [f["case"] for f in summary["failures"]] == ["P02-case", "P09-case"]
    assert "RTDOSE has no DoseGridScaling" in (out / "index.html").read_text()

    # The cause is fixed, but without retry_failed the failures stand and nothing runs again.
    for path in fail_dir.iterdir():
        path.unlink()
    again = run_cohort(make_cases(), toy_task, out, db, options, workers=2)
    assert again.counts["ran"] == 0 and again.counts["failed"] == 2
    assert {r["case"]: r for r in read_manifest(out)} == rows
    assert sum(marker_counts(markers).values()) == N_CASES
    retried = run_cohort(make_cases(), toy_task, out, db, options, workers=2, retry_failed=True)
    assert retried.counts["ran"] == 2 and retried.counts["ok"] == N_CASES
    assert marker_counts(markers)["P02-case"] == 2 and not (out / "_logs" / "P09-case.log").exists()
    assert [r.status for r in retried.records] == [JobStatus.OK] * N_CASES


def test_skipped_and_unsafe_cases_and_stale_staging(dirs):
    out, db, markers = dirs
    out.mkdir()
    stale = out / ".staging.P00-case.deadbeef"
    stale.mkdir()
    (stale / "values.npy").write_bytes(b"half")
    cases = make_cases(3) + [{"case_id": "a/b", "fingerprint": "x"},
                             {"case_id": "P99-case", "fingerprint": "y", "skip_reason": "no RTDOSE for this CT"}]
    result = run_cohort(cases, toy_task, out, db, {"marker_dir": str(markers)}, workers=1)
    assert not stale.exists()
    statuses = [(r.case_id, r.status.value, r.error) for r in result.records]
    assert statuses[3][1] == "failed" and "path separator" in statuses[3][2]
    assert statuses[4] == ("P99-case", "skipped", "no RTDOSE for this CT")
    assert result.counts == {"cases": 5, "ok": 3, "failed": 1, "skipped": 1, "ran": 3, "from_earlier_runs": 0}
    assert sorted(marker_counts(markers)) == ["P00-case", "P01-case", "P02-case"]
    with pytest.raises(ValueError, match="twice"):
        run_cohort(make_cases(2) + make_cases(1), toy_task, out, db, {}, workers=1)


def test_published_case_without_database_row_is_adopted_not_redone(dirs):
    """The client died after a worker's rename and before its database write: the stamp decides."""
    out, db, markers = dirs
    options = {"marker_dir": str(markers)}
    run_cohort(make_cases(4), toy_task, out, db, options, workers=1)
    rows = read_manifest(out)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM cohort_runner_jobs")
    result = run_cohort(make_cases(4), toy_task, out, db, options, workers=1)
    assert result.counts["ran"] == 0 and read_manifest(out) == rows
    assert sum(marker_counts(markers).values()) == 4
    stamp = read_stamp(out / "P01-case")
    assert stamp["task"] == task_identity(toy_task) and stamp["options_hash"] == options_hash(options, toy_task)


def test_worker_process_crash_fails_only_its_case(dirs, tmp_path):
    out, db, markers = dirs
    fail_dir = tmp_path / "fail"
    fail_dir.mkdir()
    (fail_dir / "P04-case").write_text("crash")
    result = run_cohort(make_cases(), toy_task, out, db, {"marker_dir": str(markers), "fail_dir": str(fail_dir)},
                        workers=2)
    failed = {r.case_id: r.error for r in result.records if r.status is JobStatus.FAILED}
    assert list(failed) == ["P04-case"] and failed["P04-case"].startswith("worker process died"), failed
    assert result.counts["ok"] == N_CASES - 1
    counts = marker_counts(markers)
    assert counts["P04-case"] == 2  # once among others, once alone (which identifies it)
    assert json.loads(json.dumps(result.to_json()))["cases"][4]["status"] == "failed"


def test_interrupted_run_leaves_a_manifest_and_resumes(dirs):
    out, db, markers = dirs
    options = {"marker_dir": str(markers), "sleep": 0.1}

    def cancel_after_three(fraction, message):
        if message.startswith("3/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cohort(make_cases(), toy_task, out, db, options, workers=2, progress=cancel_after_three)
    rows = read_manifest(out)
    assert len(rows) == N_CASES and sum(r["status"] == "ok" for r in rows) == 3
    assert {r["error"] for r in rows if r["status"] != "ok"} == {"run interrupted (KeyboardInterrupt)"}
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    done_before = {r["case"] for r in rows if r["status"] == "ok"}
    result = run_cohort(make_cases(), toy_task, out, db, options, workers=2)
    assert result.counts["ok"] == N_CASES and result.counts["from_earlier_runs"] >= 3  # + any published unrecorded
    assert all(marker_counts(markers)[name] == 1 for name in done_before)


@dataclasses.dataclass
class PairedCase:
    """Shaped like the pairing module's Case: a dataclass with file lists, nested objects and derived UID lists."""

    case_id: str
    patient_id: str
    ct_files: list
    doses: list
    fingerprint: str = ""
    warnings: list = dataclasses.field(default_factory=list)

    @property
    def dose_sop_uids(self) -> list:
        return [d["sop"] for d in self.doses]


def dataclass_task(case: PairedCase, case_output_dir: Path, options: dict) -> dict:
    (case_output_dir / "n.txt").write_text(str(len(case.ct_files)))
    return {"outputs": {"count": case_output_dir / "n.txt"}, "warnings": case.warnings}


def test_dataclass_cases_and_unpicklable_tasks(dirs):
    out, db, _ = dirs
    cases = [PairedCase(f"c{i}", "PAT", [f"/d/{j}.dcm" for j in range(3)], [{"sop": f"1.2.{i}.1"}, {"sop": "1.9"}],
                        fingerprint=f"f{i}", warnings=["no RTSTRUCT"] if i else []) for i in range(2)]
    result = run_cohort(cases, dataclass_task, out, db, {}, workers=1)
    rows = read_manifest(out)
    assert [r["status"] for r in rows] == ["ok", "ok"] and "ct_files" not in rows[0] and "doses" not in rows[0]
    assert rows[1]["dose_sop_uids"] == "1.2.1.1;1.9" and rows[1]["case_warnings"] == "no RTSTRUCT"
    assert rows[1]["warnings"] == "no RTSTRUCT" and rows[1]["count"] == "c1/n.txt"
    assert (out / "c1" / "n.txt").read_text() == "3" and result.counts["ok"] == 2
    with pytest.raises(TypeError, match="top-level function"):
        run_cohort(cases, lambda case, folder, options: {}, out, db, {}, workers=1)
    with pytest.raises(DicomFidelityError, match="one output folder per task"):
        run_cohort([{"case_id": "c0", "fingerprint": "f0"}], toy_task, out, db, {}, workers=1)
    assert (out / "c0" / "n.txt").is_file()  # the other task's results are left alone


def _subprocess_run(output_dir: str, db_path: str, marker_dir: str) -> None:
    """Entry point of the runner subprocess the SIGKILL test kills."""
    run_cohort(make_cases(), toy_task, output_dir, db_path, {"marker_dir": marker_dir, "sleep": 0.25}, workers=2)


def test_sigkill_of_runner_then_rerun_matches_uninterrupted_run(tmp_path):
    reference_markers = tmp_path / "ref_markers"
    reference_markers.mkdir()
    _subprocess_run(str(tmp_path / "ref"), str(tmp_path / "ref.sqlite"), str(reference_markers))
    out, db, markers = tmp_path / "out", tmp_path / "out.sqlite", tmp_path / "markers"
    markers.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO / "DicomFidelityCommon"), env.get("PYTHONPATH", "")])
    code = f"import test_cohort_runner as t; t._subprocess_run({str(out)!r}, {str(db)!r}, {str(markers)!r})"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(tmp_path))
    deadline = time.monotonic() + 60
    while not (out.is_dir() and published(out)):
        assert process.poll() is None and time.monotonic() < deadline, "runner ended before any case finished"
        time.sleep(0.02)
    delay = random.uniform(0.0, 0.8)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL, f"runner finished before the kill (delay {delay:.2f} s)"
    before_rerun = published(out)
    for name in before_rerun:  # nothing half-written under a final name
        assert (out / name / STAMP_NAME).is_file() and (out / name / "values.npy").is_file()

    result = run_cohort(make_cases(), toy_task, out, db, {"marker_dir": str(markers), "sleep": 0.25}, workers=2)
    assert read_manifest(out) == read_manifest(tmp_path / "ref"), f"kill delay {delay:.2f} s"
    assert output_files(out) == output_files(tmp_path / "ref")
    assert not [p for p in out.iterdir() if p.name.startswith((".staging", ".trash"))]
    counts = marker_counts(markers)
    assert set(counts) == {c["case_id"] for c in make_cases()}
    assert all(counts[name] == 1 for name in before_rerun), (counts, before_rerun)
    redone = {name: n for name, n in counts.items() if n > 1}
    print(f"kill {delay:.2f} s after the first case; published before rerun: {len(before_rerun)}; "
          f"rerun ran {result.counts['ran']}; executed twice: {sorted(redone)}")
    assert sum(n - 1 for n in redone.values()) <= 4, redone  # at most the runner's in-flight window (2 x workers)
    assert result.counts["ran"] <= N_CASES - len(before_rerun)
    assert result.counts["ok"] == N_CASES


def test_dask_worker_killed_mid_run_loses_and_duplicates_nothing(dirs):
    distributed = pytest.importorskip("distributed")
    out, db, markers = dirs
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        pids = client.run(os.getpid)
        assert len(pids) == 2
        outcome = {}

        def run():
            try:
                outcome["result"] = run_cohort(make_cases(), toy_task, out, db,
                                               {"marker_dir": str(markers), "sleep": 0.3},
                                               scheduler=cluster.scheduler_address)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while not (out.is_dir() and published(out)):
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=120)
        assert not thread.is_alive()
        if "error" in outcome:
            raise outcome["error"]
        result = outcome["result"]
        rows = read_manifest(out)
        assert [r["case"] for r in rows] == [c["case_id"] for c in make_cases()]
        assert {r["status"] for r in rows} == {"ok"}, rows
        assert published(out) == {c["case_id"] for c in make_cases()}
        assert result.counts["ok"] == N_CASES and "Dask" in result.summary["executor"]
        assert victim not in client.run(os.getpid).values()  # the worker really died (the nanny started anew)
        counts = marker_counts(markers)
        assert set(counts) == {c["case_id"] for c in make_cases()}
        assert sum(counts.values()) - N_CASES <= 2, counts  # only what the dead worker had started ran again
    finally:
        client.close()
        cluster.close()
