"""Memory budget: refuse, from a header alone, an input whose arrays would not fit.

A 15 KB header can claim a 65535 x 65535 x 1000 volume, and a few MB of deflated zeros can inflate to gigabytes.
Checking the declared sizes against the bytes a file holds catches the first; only an estimate of what loading
would allocate, compared with what the machine (or its container) can give, catches the second. The limit is a
fraction of the memory available now (``MemAvailable``, capped by a cgroup v2/v1 limit and by ``ulimit -v``), or
the value of ``DICOMFIDELITY_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix) when set: a cohort run with several
workers, or a shared machine, sets it lower.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from DicomFidelityCommonLib.dependencies import is_importable
from DicomFidelityCommonLib.errors import DicomFidelityError

LIMIT_VARIABLE = "DICOMFIDELITY_MEMORY_LIMIT"
AVAILABLE_FRACTION = 0.8  # leave room for the interpreter, Slicer's scene and the page cache
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class InputTooLargeError(DicomFidelityError):
    """The header describes arrays larger than the memory this process may use."""


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # where the number came from, for the error message


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912; plain numbers are bytes. Raises ValueError on anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text.strip(), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size (e.g. 8G, 512M, 1073741824)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[tuple[Path, str, str]]:
    """(folder, limit file, usage file) of every cgroup whose memory limit applies to this process: its own cgroup
    and each parent (a job's limit is often set on a parent: Slurm, systemd-run), for v2 and v1. The mount root
    itself is included: inside a container with its own cgroup namespace the process's path is "/"."""
    paths = {"v2": "/", "v1": "/"}
    try:
        for line in proc_cgroup.read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and controllers == "":
                paths["v2"] = path
            elif "memory" in controllers.split(","):
                paths["v1"] = path
    except (OSError, ValueError):
        pass
    found = []
    for version, base, limit_file, usage_file in (("v2", root, "memory.max", "memory.current"),
                                                  ("v1", root / "memory", "memory.limit_in_bytes",
                                                   "memory.usage_in_bytes")):
        folder = base / paths[version].strip("/")
        while True:
            found.append((folder, limit_file, usage_file))
            if folder == base:
                break
            folder = folder.parent
    return found


def _cgroup_room(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes left under the tightest cgroup memory limit on this process, or None when there is no limit."""
    rooms = []
    for folder, limit_file, usage_file in _cgroup_dirs(root, proc_cgroup):
        try:
            text = (folder / limit_file).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:  # v1 writes a huge number for "no limit"
                continue
            rooms.append(max(0, int(text) - int((folder / usage_file).read_text().strip())))
        except (OSError, ValueError):
            continue
    return min(rooms) if rooms else None


def _address_space_room(status: Path = Path("/proc/self/status")) -> int | None:
    """Bytes left under this process's address-space limit (``ulimit -v``), or None when there is none."""
    if not is_importable("resource"):  # not on Windows (the project's rule: no ImportError handlers)
        return None
    import resource

    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmSize:"):
                used = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - used)


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def memory_limit() -> MemoryLimit:
    """The most this process should allocate for one input's arrays, and why."""
    configured = os.environ.get(LIMIT_VARIABLE)
    if configured:
        try:
            return MemoryLimit(parse_size(configured), f"{LIMIT_VARIABLE}={configured}")
        except ValueError as exc:
            raise DicomFidelityError(f"{LIMIT_VARIABLE}: {exc}") from None
    candidates = [(value, name) for value, name in ((_meminfo_available(), "available memory"),
                                                    (_cgroup_room(), "the container's memory limit"),
                                                    (_address_space_room(), "the address-space limit"),
                                                    ) if value is not None]
    if not candidates:
        candidates = [(_sysconf_available() or 0, "available memory")]
    available, name = min(candidates)
    if available <= 0:  # nothing could be read: do not refuse on a guess
        return MemoryLimit(1 << 62, "unknown available memory")
    return MemoryLimit(int(available * AVAILABLE_FRACTION), f"{int(AVAILABLE_FRACTION * 100)}% of {name}")


def _human(count: float) -> str:
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024:
            return f"{count:.1f} {unit}"
    return f"{count / 1024:.1f} PiB"


def require_memory(estimate_bytes: int, what: str, path: str | Path | None = None) -> None:
    """Refuse ``what`` (e.g. "a 512x512x40000 uint8 label volume") when its estimate exceeds the limit."""
    limit = memory_limit()
    if estimate_bytes > limit.bytes:
        raise InputTooLargeError(f"{what} needs about {_human(estimate_bytes)}, more than the {_human(limit.bytes)} "
                                 f"allowed ({limit.source}; set {LIMIT_VARIABLE} to change)", path)


def voxel_bytes(shape, itemsize: int, copies: float = 1.0) -> int:
    """Bytes of ``copies`` arrays of ``shape`` (Python ints: no overflow however large the header's numbers)."""
    count = 1
    for size in shape:
        count *= max(0, int(size))
    return int(count * itemsize * copies)
