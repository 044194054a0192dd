"""Where cohort cases run: long-lived local worker processes, or an existing Dask distributed cluster.

Workers only compute and write their case's outputs; the runner process alone writes the job database. A case is
computed in a staging folder (``output_dir/.staging.<case>.<token>``) and renamed to ``output_dir/<case>`` with a
stamp file only when it succeeded, so a killed worker or client never leaves half a case under its final name and a
retried case (Dask reruns the tasks of a dead worker) is written once: an attempt that finds a matching stamp reuses it.

Pure Python: ``distributed`` is imported only when a scheduler address is given.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from DicomFidelityCommonLib.errors import DicomFidelityError

STAMP_NAME = ".cohort_job.json"
STAGING_PREFIX = ".staging."
TRASH_PREFIX = ".trash."
WORKERS_LOCK_NAME = ".cohort_workers.lock"
ERROR_LIMIT = 500  # characters of a one-line error kept in the manifest


def one_line(text: str, limit: int = ERROR_LIMIT) -> str:
    """Collapse whitespace so a message fits one CSV cell and one HTML row."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_message(exc: BaseException) -> str:
    """Our typed errors already name the file and tag; anything else gets its type so the user can search it."""
    if isinstance(exc, DicomFidelityError):
        return one_line(str(exc)) or type(exc).__name__
    message = one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def read_stamp(case_dir: Path) -> dict | None:
    """The stamp of a published case folder, or None when there is none (or it is unreadable)."""
    try:
        with open(Path(case_dir) / STAMP_NAME, encoding="utf-8") as handle:
            stamp = json.load(handle)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def stamp_matches(stamp: dict | None, task_name: str, fingerprint: str, options_hash: str) -> bool:
    """A final folder counts as done only for the same task, inputs and options."""
    return (
        stamp is not None
        and stamp.get("status") == "ok"
        and stamp.get("task") == task_name
        and stamp.get("fingerprint") == fingerprint
        and stamp.get("options_hash") == options_hash
    )


def _jsonable(value: Any, staging: Path, case_id: str) -> Any:
    """Output values for the manifest: paths into the staging folder become ``<case>/<file>`` (relative to
    output_dir), so the manifest is the same whichever staging folder or output folder a run used."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.isabs(value)):
        text = os.fspath(value)
        if not os.path.isabs(text):
            return (Path(case_id) / text).as_posix()
        for root in (staging, staging.resolve()):
            try:
                return (Path(case_id) / Path(text).relative_to(root)).as_posix()
            except ValueError:
                continue
        return text
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, staging, case_id) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, staging, case_id) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return str(value)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _move_aside(final: Path, output_dir: Path, case_id: str) -> None:
    """Remove an outdated final folder by renaming it out of the way first, so the final name is never half-deleted."""
    trash = output_dir / f"{TRASH_PREFIX}{case_id}.{uuid.uuid4().hex[:12]}"
    try:
        os.rename(final, trash)
    except FileNotFoundError:
        return
    _remove(trash)


def _publish(staging: Path, final: Path, job: dict) -> dict | None:
    """Rename staging to final; return the existing stamp instead when another attempt already published this job."""
    output_dir = Path(job["output_dir"])
    for _ in range(5):
        if os.path.lexists(final):
            existing = read_stamp(final)
            if stamp_matches(existing, job["task_name"], job["fingerprint"], job["options_hash"]):
                shutil.rmtree(staging, ignore_errors=True)
                return existing
            _move_aside(final, output_dir, job["case_id"])
        try:
            os.rename(staging, final)
            return None
        except OSError:
            if not os.path.lexists(final):
                raise
    raise RuntimeError(f"{final}: could not publish the case folder (another writer keeps replacing it)")


_worker_guard = None  # the open lock file a local worker holds (shared) while it lives
_worker_parent: tuple[int, int] | None = None  # (runner pid, parent pid at start) in a local worker


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def execute_case(job: dict) -> dict:
    """Run one case in a worker: compute into staging, stamp, publish. Never raises for a task failure.

    ``job`` holds task, task_name, case, case_id, fingerprint, options, options_hash, output_dir. The result is a
    plain dict (status, error, traceback, warnings, outputs, seconds, reused, pid) so any executor can carry it.
    """
    if _worker_parent is not None and (os.getppid() != _worker_parent[1] or not _pid_alive(_worker_parent[0])):
        os._exit(70)  # a local worker whose runner was killed takes no further case (the watchdog may be late)
    started = time.perf_counter()
    output_dir = Path(job["output_dir"])
    case_id = job["case_id"]
    final = output_dir / case_id
    result = {"case_id": case_id, "status": "failed", "error": "", "traceback": "", "warnings": [], "outputs": {},
              "seconds": 0.0, "reused": False, "pid": os.getpid()}
    existing = read_stamp(final)
    if stamp_matches(existing, job["task_name"], job["fingerprint"], job["options_hash"]):
        # A retried attempt (Dask rescheduling a lost worker's task) whose first attempt already published.
        result.update(status="ok", outputs=existing.get("outputs", {}), warnings=existing.get("warnings", []),
                      seconds=float(existing.get("seconds", 0.0)), reused=True)
        result["worker_seconds"] = time.perf_counter() - started
        return result
    staging = output_dir / f"{STAGING_PREFIX}{case_id}.{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    task_started = time.perf_counter()
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            returned = job["task"](job["case"], staging, job["options"])
        if returned is None:
            returned = {}
        if not isinstance(returned, dict):
            raise TypeError(f"task returned {type(returned).__name__}, expected a dict of outputs")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - every task failure becomes a failed case
        result["seconds"] = time.perf_counter() - task_started
        result["error"] = error_message(exc)
        result["traceback"] = traceback.format_exc()
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.lexists(final):  # outputs of older inputs or options would contradict the manifest
            _move_aside(final, output_dir, case_id)
        result["worker_seconds"] = time.perf_counter() - started
        return result
    seconds = time.perf_counter() - task_started
    returned = dict(returned)
    task_warnings = returned.pop("warnings", None) or []
    if isinstance(task_warnings, str):
        task_warnings = [task_warnings]
    messages = [one_line(str(w)) for w in task_warnings]
    messages += [one_line(f"{w.category.__name__}: {w.message}") for w in caught]
    messages = list(dict.fromkeys(m for m in messages if m))
    outputs = _jsonable(returned.pop("outputs", returned), staging, case_id)
    stamp = {"status": "ok", "task": job["task_name"], "case_id": case_id, "fingerprint": job["fingerprint"],
             "options_hash": job["options_hash"], "outputs": outputs, "warnings": messages, "seconds": seconds}
    try:
        tmp = staging / (STAMP_NAME + ".tmp")
        tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, staging / STAMP_NAME)
        published = _publish(staging, final, job)
    except Exception as exc:  # noqa: BLE001 - e.g. disk full: the case fails, the run goes on
        shutil.rmtree(staging, ignore_errors=True)
        result.update(seconds=seconds, error=error_message(exc), traceback=traceback.format_exc())
        result["worker_seconds"] = time.perf_counter() - started
        return result
    if published is not None:
        stamp, seconds = published, float(published.get("seconds", seconds))
        result["reused"] = True
    result.update(status="ok", outputs=stamp["outputs"], warnings=stamp["warnings"], seconds=seconds)
    result["worker_seconds"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------------------------------------------
# Local worker processes


def _watch_parent(client_pid: int, parent_pid: int) -> None:
    # A worker whose runner was killed must not go on writing into output_dir behind the back of the next run.
    while True:
        time.sleep(0.2)
        if os.getppid() != parent_pid or not _pid_alive(client_pid):
            os._exit(70)


def _share_cores(threads: int) -> None:
    """Give this worker its share of the cores: ITK (resampling, image I/O) would otherwise start a thread per core
    in every worker, and N workers x N threads contend instead of adding up."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    sitk = sys.modules.get("SimpleITK")  # preloaded by the fork server: set it directly too
    if sitk is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _init_local_worker(client_pid: int, guard_path: str | None, threads: int = 0) -> None:
    """Worker start-up: its share of the cores, hold the workers lock (shared) and die with the runner."""
    global _worker_guard, _worker_parent
    if threads:
        _share_cores(threads)
    if os.name != "posix":
        return
    _worker_parent = (client_pid, os.getppid())
    import fcntl
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    if guard_path:
        _worker_guard = open(guard_path, "a+")  # noqa: SIM115 - held for the life of the worker
        fcntl.flock(_worker_guard.fileno(), fcntl.LOCK_SH)
    threading.Thread(target=_watch_parent, args=(client_pid, os.getppid()), daemon=True,
                     name="cohort-parent-watch").start()


def wait_for_orphan_workers(output_dir: Path, timeout: float = 60.0) -> bool:
    """Wait until no local worker of an earlier (killed) run still holds the workers lock of ``output_dir``."""
    if os.name != "posix":
        return True
    import fcntl

    path = Path(output_dir) / WORKERS_LOCK_NAME
    deadline = time.monotonic() + timeout
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
                continue
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return True


def _worker_python() -> str | None:
    """Inside the Slicer application sys.executable is Slicer itself; workers need its PythonSlicer."""
    executable = Path(sys.executable)
    if not executable.name.lower().startswith("slicer"):
        return None
    for folder in (executable.parent, executable.parent / "bin", executable.parent.parent / "bin"):
        for name in ("PythonSlicer", "PythonSlicer.exe"):
            if (folder / name).is_file():
                return str(folder / name)
    return None


_SYS_PATH_ENV = "DICOMFIDELITY_COHORT_SYS_PATH"


def _adopt_client_sys_path() -> None:
    """In a fork server started by the runner: search the runner's sys.path too, so the task's module can be
    preloaded (Python 3.11's fork server is handed the client's sys.path but never applies it)."""
    extra = os.environ.get(_SYS_PATH_ENV)
    if extra:
        try:
            entries = json.loads(extra)
        except ValueError:
            return
        sys.path.extend(e for e in entries if isinstance(e, str) and e not in sys.path)


_adopt_client_sys_path()


def _preload_modules(task_module: str | None) -> list[str]:
    """Modules the fork server imports once so each worker forks with them loaded: this module (first: it adopts
    the client's sys.path), the ``-m`` main module and the task's module. Python 3.11's fork server never preloads
    ``__main__`` itself (it looks for a ``main_path`` key the preparation data does not have)."""
    names = [__name__]
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name and not main_spec.name.endswith("__main__"):
        names.append(main_spec.name)  # ``python -m pkg.mod``; a package's __main__.py may run unguarded, as spawn knows
    if task_module and task_module not in ("__main__", "__mp_main__"):
        names.append(task_module)
    return list(dict.fromkeys(names))


def _mp_context(task_module: str | None = None):
    python = _worker_python()
    if python is not None:
        context = multiprocessing.get_context("spawn")
        context.set_executable(python)
        return context
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    # forkserver: workers fork from a clean server (no inherited threads or locks), so start-up is cheap and safe.
    # The preload list only takes effect when this process starts its fork server (once).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_preload_modules(task_module))
    from multiprocessing import forkserver

    previous = os.environ.get(_SYS_PATH_ENV)
    os.environ[_SYS_PATH_ENV] = json.dumps(sys.path)
    try:
        forkserver.ensure_running()  # a no-op once this process has its fork server
    finally:
        if previous is None:
            os.environ.pop(_SYS_PATH_ENV, None)
        else:
            os.environ[_SYS_PATH_ENV] = previous
    return context


class LocalProcessExecutor:
    """A pool of long-lived worker processes (no interpreter start-up per case)."""

    lost_retries = 1  # a case in flight when a worker process died is tried once more, alone, in a fresh pool

    def __init__(self, workers: int, output_dir: Path | None = None, task_module: str | None = None):
        self.workers = max(1, int(workers))
        self._guard = str(Path(output_dir) / WORKERS_LOCK_NAME) if output_dir is not None else None
        self._task_module = task_module
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=_mp_context(self._task_module), initializer=_init_local_worker,
            initargs=(os.getpid(), self._guard, max(1, (os.cpu_count() or 1) // self.workers)))

    @property
    def max_in_flight(self) -> int:
        return 2 * self.workers  # keep every worker busy without queueing the whole cohort in a dying pool

    def describe(self) -> str:
        return f"{self.workers} local worker process{'es' if self.workers != 1 else ''}"

    def submit(self, job: dict):
        return self._pool.submit(execute_case, job)

    def wait_any(self, futures: Iterable) -> tuple[set, set]:
        done, pending = concurrent.futures.wait(list(futures), return_when=concurrent.futures.FIRST_COMPLETED)
        return set(done), set(pending)

    def outcome(self, future) -> dict | str:
        """The worker's result dict, or a one-line reason when the worker itself was lost."""
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool as exc:
            return f"worker process died: {one_line(str(exc)) or 'BrokenProcessPool'}"
        except concurrent.futures.CancelledError:
            return "cancelled"
        except Exception as exc:  # noqa: BLE001 - e.g. a case that cannot be pickled: that case fails, the run goes on
            return f"could not hand the case to a worker: {error_message(exc)}"

    def recover(self) -> None:
        """Replace a broken pool so the remaining cases can still run."""
        if getattr(self._pool, "_broken", False):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join(timeout=5)
        else:
            self._pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------------------------
# Dask distributed


class DaskExecutor:
    """Run the same jobs on an existing Dask distributed cluster (``tcp://HOST:PORT``).

    Workers must be able to import the task's module and see ``output_dir`` at the same path. When a worker dies,
    Dask reruns its tasks elsewhere; ``execute_case`` makes that rerun write the case once.
    """

    lost_retries = 0  # Dask already retried (distributed.scheduler.allowed-failures)

    def __init__(self, address: str, timeout: float = 30.0):
        from distributed import Client, as_completed

        self.address = address
        self._client = Client(address, set_as_default=False, timeout=timeout)
        # Tied to this client's loop: distributed.wait() would use the process's default client, whose event loop
        # may be another one (e.g. a caller's own Client), and fail with "bound to a different event loop".
        self._completed = as_completed(loop=self._client.loop)
        self.workers = max(1, sum(w.get("nthreads", 1) for w in self._client.scheduler_info()["workers"].values()))

    @property
    def max_in_flight(self) -> int:
        return 1 << 30  # the scheduler queues and balances

    def describe(self) -> str:
        return f"Dask cluster {self.address} ({self.workers} threads)"

    def submit(self, job: dict):
        key = f"cohort-{job['case_id']}-{uuid.uuid4().hex[:12]}"
        future = self._client.submit(execute_case, job, key=key, pure=False)
        self._completed.add(future)
        return future

    def wait_any(self, futures: Iterable) -> tuple[set, set]:
        futures = set(futures)
        if not futures:
            return set(), set()
        done = set(self._completed.next_batch(block=True)) & futures
        return done, futures - done

    def outcome(self, future) -> dict | str:
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - KilledWorker, CancelledError, comm errors: the case is lost
            return f"Dask task lost: {error_message(exc)}"

    def recover(self) -> None:
        pass

    def close(self, cancel: bool = False) -> None:
        self._client.close()


def make_executor(workers: int | None, scheduler: str | None, output_dir: Path, cases: int,
                  task_module: str | None = None):
    """Local processes by default (one per core, never more than cases); Dask when a scheduler address is given."""
    if scheduler:
        return DaskExecutor(scheduler)
    count = workers if workers else (os.cpu_count() or 1)
    return LocalProcessExecutor(max(1, min(count, max(cases, 1))), output_dir=output_dir, task_module=task_module)
