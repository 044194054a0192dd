"""The one progress-callback type of every long operation: a progress dialog in the GUI, a bar on the CLI.

A callback gets the fraction done (0..1) and a short message, always on the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """The callback used when the caller gives none."""


def scaled(progress: ProgressCallback | None, start: float, end: float) -> ProgressCallback:
    """A callback for one stage that reports into the [start, end] part of ``progress``."""
    target = progress or no_progress
    return lambda fraction, message: target(start + (end - start) * fraction, message)
