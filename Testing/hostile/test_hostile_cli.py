"""Hostile inputs through the installed CLIs: the contract holds for every one (DicomFidelityCommonLib.cli).

Exit 1, exactly one ``error:`` line naming the user's file, no traceback, nothing left under output names, and a
peak resident memory below 1 GB (a header claiming 65535x65535 slices must be refused before allocating). The
cases run as subprocesses, two at a time, when the first of them is asked for; each test then checks its own.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from hostile.builders import CASES, CT3, LIVER_LABEL, TOTALSEG, Run

from DicomFidelityCommonLib.safe_write import STAGING_PREFIX

BIN = Path(sys.executable).parent
MEMORY_CEILING_BYTES = 1 << 30
ADDRESS_SPACE_LIMIT = 4 << 30  # so a runaway allocation fails (MemoryError) instead of taking the machine
TIMEOUT_SECONDS = 120
WORKERS = 2


@dataclass
class Outcome:
    run: Run
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int
    seconds: float
    leftovers: list[str]
    timed_out: bool = False


def _limits(file_size_limit: int | None = None):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
        if file_size_limit is not None:  # Python ignores SIGXFSZ: the write fails with EFBIG, as on a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return apply


def _command(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is not installed (pip install -e . in the venv)"
    return str(path)


def run_cli(run: Run, work: Path) -> Outcome:
    """Run one case; the peak RSS is the child's own (wait4), not the maximum over all children so far."""
    out_file, err_file = work / "stdout.txt", work / "stderr.txt"
    start = time.perf_counter()
    with open(out_file, "wb") as stdout, open(err_file, "wb") as stderr:
        process = subprocess.Popen([_command(run.command), *run.args], stdout=stdout, stderr=stderr,
                                   stdin=subprocess.DEVNULL, preexec_fn=_limits(run.file_size_limit),
                                   cwd=work)
        timer = threading.Timer(TIMEOUT_SECONDS, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    leftovers = sorted(p.name for p in run.output_dir.iterdir()) if run.output_dir.is_dir() else []
    if run.json_path is not None:
        leftovers = [name for name in leftovers if name != run.json_path.name or run.json_path.parent != run.output_dir]
    return Outcome(run, process.returncode, out_file.read_text(errors="replace"), err_file.read_text(errors="replace"),
                   usage.ru_maxrss * 1024, seconds, leftovers, timed_out=seconds >= TIMEOUT_SECONDS)


def verdict(outcome: Outcome) -> str:
    """The worst thing that happened: crash, memory, traceback, exit-0-on-bad-input, leftover, wrong-file-named."""
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    if outcome.timed_out or outcome.returncode < 0 or outcome.returncode not in (0, 1, 2):
        return "crash"
    if outcome.peak_rss_bytes > MEMORY_CEILING_BYTES or "not enough memory" in outcome.stderr:
        return "memory"
    if "Traceback" in outcome.stderr or any("internal error (" in line for line in errors):
        return "traceback"
    if outcome.returncode == 0 and outcome.run.expected_exit != 0:
        return "exit-0-on-bad-input"
    if outcome.run.expected_exit == 0:  # a legal oddity: loaded, with no traceback
        return "clean" if outcome.returncode == 0 else "wrong-exit"
    if outcome.leftovers:
        return "leftover"
    if outcome.returncode != outcome.run.expected_exit:
        return "wrong-exit"
    if len(errors) != 1 or not any(name in errors[0] for name in outcome.run.names):
        return "wrong-file-named"
    if STAGING_PREFIX in errors[0] or ".partial" in errors[0]:  # a hidden temporary name means nothing to a user
        return "wrong-file-named"
    return "clean"


_RESULTS: dict[str, Outcome] = {}


def _selected_cases(request) -> list[str]:
    names = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and item.originalname == "test_hostile_input" and "case" in callspec.params:
            names.append(callspec.params["case"])
    return names


@pytest.fixture(scope="session")
def hostile_outcomes(request, shared_data, tmp_path_factory) -> dict[str, Outcome]:
    """Build and run every selected case, two at a time (each run is mostly interpreter start-up)."""
    cases = [name for name in _selected_cases(request) if name not in _RESULTS]

    builds = {}
    for name in cases:  # pydicom's validation settings are global: build in this thread, run in parallel
        work = tmp_path_factory.mktemp(name)
        builds[name] = (CASES[name](work, shared_data), work)
    with ThreadPoolExecutor(WORKERS) as pool:
        for name, outcome in zip(builds, pool.map(lambda item: run_cli(*item), builds.values())):
            _RESULTS[name] = outcome
    _write_table(tmp_path_factory.getbasetemp() / "hostile_verdicts.json")
    return _RESULTS


def _write_table(path: Path) -> None:
    table = {name: {"verdict": verdict(o), "exit": o.returncode, "peak_rss_mb": round(o.peak_rss_bytes / 2**20),
                    "seconds": round(o.seconds, 2), "stderr_tail": o.stderr.strip().splitlines()[-1:]}
             for name, o in sorted(_RESULTS.items())}
    path.write_text(json.dumps(table, indent=1))
    if os.environ.get("HOSTILE_VERDICTS"):
        Path(os.environ["HOSTILE_VERDICTS"]).write_text(json.dumps(table, indent=1))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input(hostile_outcomes, case):
    outcome = hostile_outcomes[case]
    assert verdict(outcome) == "clean", (
        f"{case}: {verdict(outcome)}; exit {outcome.returncode}, peak {outcome.peak_rss_bytes / 2**20:.0f} MB, "
        f"left {outcome.leftovers}, expected a name in {sorted(outcome.run.names)}\nstderr:\n{outcome.stderr[-3000:]}")
    if outcome.run.expected_exit != 0 and outcome.run.json_path is not None and outcome.run.json_path.exists():
        failure = json.loads(outcome.run.json_path.read_text())
        assert failure["ok"] is False and failure["errors"], failure


# ---------------------------------------------------------------- races and kills
def _export_args(data: Path, out: Path, json_path: Path) -> list[str]:
    return [_command("segqa"), "export-seg", "--segmentation", str(data / LIVER_LABEL), "--reference",
            str(data / CT3), "--output-dir", str(out), "--quiet", "--json", str(json_path)]


def test_concurrent_exports_never_claim_one_file(shared_data, tmp_path):
    """Two exports into one folder: two distinct files, or one clear 'exists' failure; never one file for both."""
    out = tmp_path / "out"
    runs = [subprocess.Popen(_export_args(shared_data, out, tmp_path / f"run{k}.json"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=_limits) for k in range(2)]
    results = [(p, *p.communicate(timeout=TIMEOUT_SECONDS)) for p in runs]
    claimed = []
    for k, (process, _, stderr) in enumerate(results):
        document = json.loads((tmp_path / f"run{k}.json").read_text())
        if process.returncode == 0:
            claimed.append(document["outputs"]["seg"])
        else:
            assert process.returncode == 1 and "exists" in stderr, stderr
    assert claimed and len(set(claimed)) == len(claimed), claimed
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(Path(c).name for c in claimed)


@pytest.mark.parametrize("window", [(0.0, 0.25), (0.25, 0.5), (0.5, 0.8)])
def test_sigkill_during_export_leaves_nothing_under_final_names(shared_data, tmp_path, window):
    """A kill at a random moment of an export (a 112-slice reference series is written too) leaves no final name.

    The export runs ~0.5 s after its staging folder appears; the three windows cover it (and the exit after it).
    """
    out = tmp_path / "out"
    args = [_command("segqa"), "export-seg", "--segmentation", str(shared_data / TOTALSEG / "example_seg.nii.gz"),
            "--reference", str(shared_data / TOTALSEG / "example_ct.nii.gz"), "--export-reference",
            "--output-dir", str(out), "--quiet"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_limits)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while process.poll() is None and time.monotonic() < deadline and not (out.is_dir() and any(out.iterdir())):
        time.sleep(0.005)  # the export has started writing (its staging folder exists)
    time.sleep(random.uniform(*window))
    process.send_signal(signal.SIGKILL)
    process.wait()
    final = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    if final:  # killed after the outputs were in place (or it finished): then they are all there, and complete
        assert final == ["example_seg.seg.dcm", "reference"], final
        assert len(list((out / "reference").iterdir())) == 112
        assert pydicom.dcmread(out / "example_seg.seg.dcm", stop_before_pixels=True).Modality == "SEG"
    else:
        assert process.returncode == -signal.SIGKILL
