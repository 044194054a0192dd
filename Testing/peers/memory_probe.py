"""Time a step and its peak resident memory (C allocations included): shared by the benchmark's children in both
environments (.venv and .venv-peers), so it uses the standard library only."""

from __future__ import annotations

import gc
import resource
import time


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(step):
    """Seconds of ``step``, its peak resident bytes above the resident set before it, and what it returned.

    An external tool run by ``step`` (dcmqi) counts with its own whole peak.
    """
    gc.collect()
    baseline = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    detail = step() or {}
    seconds = time.perf_counter() - start
    peak = max(0, status_kb("VmHWM") - baseline) * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if children > children_before:
        peak = max(peak, children * 1024)
    return seconds, peak, detail
