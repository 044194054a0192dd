"""Process-level helpers for the long, allocation-heavy operations (SEG export and load)."""

from __future__ import annotations

import functools
import gc
from contextlib import contextmanager


@contextmanager
def paused_gc():
    """Pause Python's cyclic garbage collector for the duration.

    Reading 200 CT headers and describing 1000 segments creates hundreds of thousands of short-lived pydicom
    objects; the collector's repeated full passes over them cost 0.1-0.15 s at random points of an export that
    otherwise takes 0.3-0.5 s (measured on the seg_speed cases). Reference counting still frees everything; any
    cycles are collected when the collector resumes. Nested use keeps it paused until the outermost exit.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def with_paused_gc(function):
    """Decorator form of paused_gc."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with paused_gc():
            return function(*args, **kwargs)

    return wrapper
