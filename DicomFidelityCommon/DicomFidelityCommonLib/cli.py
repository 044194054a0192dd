"""The one command-line contract of every DicomFidelity command (segqa, dosealign, and those to come).

- Exit codes: 0 done; 1 bad input, a failed read or write, or refused by a gate the user set (e.g. --fail-on);
  2 usage (argparse); 130 interrupted.
- A failure is one line on stderr, ``error: <input file>: <problem>``, and no traceback unless ``--debug``.
- ``--json FILE`` always has the keys ``command``, ``ok``, ``outputs`` (role -> path or list of paths),
  ``warnings`` (all of them), ``timings_seconds`` and ``errors``, next to the command's own keys; it is written on
  failure too. Its folder is checked before any work, so a run never ends with its outputs written but no JSON.
- Warnings: many alike are summarised on stderr ("61 warnings like: ..."), every one is in the JSON.
- Progress: ``ProgressBar`` on stderr (a line per 10 % when stderr is not a terminal); ``--quiet`` silences it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from DicomFidelityCommonLib.errors import DicomFidelityError, GateRefusedError, InvalidInputFileError
from DicomFidelityCommonLib.safe_write import atomic_output_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
WARNINGS_SHOWN_PER_KIND = 3


class ProgressBar:
    """A one-line progress bar on stderr (a line per 10 % when stderr is not a terminal): a ProgressCallback."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_decile = -1

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        fraction = min(1.0, max(0.0, fraction))
        if self.tty:
            filled = int(fraction * 30)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:3.0f}% {message[:50]:<50}")
            if fraction >= 1.0:
                self.stream.write("\n")
            self.stream.flush()
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            self.stream.write(f"{fraction * 100:3.0f}% {message}\n")


@dataclass
class CommandResult:
    """What a command did: printed as one summary line, written as the --json document."""

    message: str
    outputs: dict[str, str | list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings_seconds: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # the command's own keys (a result's to_json())
    refused: GateRefusedError | None = None  # valid input, but a gate the user set refused it: exit 1

    def to_json(self, command: str) -> dict:
        document = dict(self.details)
        document.update({
            "command": command,
            "ok": self.refused is None,
            "outputs": self.outputs,
            "warnings": list(self.warnings),
            "timings_seconds": {k: round(float(v), 4) for k, v in self.timings_seconds.items()},
            "errors": [str(self.refused)] if self.refused is not None else [],
        })
        return document


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the result (outputs, warnings, timings, details) here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected failure")


def _warning_kind(text: str) -> str:
    """Warnings that differ only in names and numbers are of one kind."""
    return re.sub(r"\d+(\.\d+)?", "#", re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text))


def summarise_warnings(warnings: list[str], shown: int = WARNINGS_SHOWN_PER_KIND) -> list[str]:
    """Stderr lines for ``warnings``: each kind's first ``shown``, then how many more of that kind there are."""
    kinds: dict[str, list[str]] = {}
    for warning in warnings:
        kinds.setdefault(_warning_kind(warning), []).append(warning)
    lines = []
    for members in kinds.values():
        lines.extend(members[:shown])
        if len(members) > shown:
            lines.append(f"... and {len(members) - shown} more like the above ({len(members)} in all; every one is "
                         "in the --json output)")
    return lines


def check_json_destination(path: str | None) -> None:
    """Refuse before any work a --json path that cannot be written (a folder, a missing or read-only folder)."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise InvalidInputFileError("--json names a folder, not a file", target)
    folder = target.parent if str(target.parent) else Path(".")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputFileError("cannot write the --json file there (folder missing or not writable)", target)


def write_json(path: str | None, document: dict) -> None:
    if not path:
        return
    with atomic_output_file(path) as tmp:
        Path(tmp).write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")


def _failure_line(exc: BaseException) -> str:
    if isinstance(exc, DicomFidelityError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else ""
        return f"{where}: {exc.strerror or exc}" if where else str(exc.strerror or exc)
    if isinstance(exc, MemoryError):
        return "not enough memory for this input"
    return f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); " \
           "rerun with --debug for the traceback"


PRIMARY_INPUT_OPTIONS = ("seg", "segmentation", "rtstruct", "dose", "files", "input", "root", "reference", "db")


def primary_input(args: argparse.Namespace) -> str | None:
    """The input a command is mainly about, named in an error that carries no file of its own (memory, internal)."""
    for name in PRIMARY_INPUT_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, (str, Path)) and str(value):
            return str(value)
    return None


def run_command(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None = None,
                release: Callable[[], None] | None = None) -> int:
    """Parse ``argv`` and run the chosen command (``args.func(args) -> CommandResult``) under the contract.

    ``release`` runs last in every case (e.g. freeing the MRML nodes a command made).
    """
    args = parser.parse_args(argv)  # exits 2 with argparse's usage message
    command = getattr(args, "command", None) or prog
    debug = getattr(args, "debug", False)
    json_path = getattr(args, "json", None)
    try:
        check_json_destination(json_path)
        result: CommandResult = args.func(args)
        for line in summarise_warnings(result.warnings):
            print(f"warning: {line}", file=sys.stderr)
        write_json(json_path, result.to_json(command))
        print(result.message)
        if result.refused is not None:
            print(f"error: {_failure_line(result.refused)}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the one error boundary: typed errors, OSError, MemoryError and the unexpected
        if debug:
            traceback.print_exc()
        line = _failure_line(exc)
        named = isinstance(exc, DicomFidelityError) or (isinstance(exc, OSError) and exc.filename is not None)
        where = None if named else primary_input(args)
        if where:
            line = f"{where}: {line}"
        print(f"error: {line}", file=sys.stderr)
        try:
            write_json(json_path, {"command": command, "ok": False, "outputs": {}, "warnings": [],
                                   "timings_seconds": {}, "errors": [line]})
        except (OSError, DicomFidelityError):  # the --json file itself cannot be written: the line above says why
            pass
        return EXIT_FAILED
    finally:
        if release is not None:
            release()


def exit_from_app(code: int) -> None:
    """Inside Slicer (--no-main-window --python-script) the interpreter belongs to the app: exit through it."""
    slicer = sys.modules.get("slicer")
    if slicer is not None and hasattr(slicer, "app") and hasattr(getattr(slicer, "util", None), "exit"):
        slicer.util.exit(code)
    else:
        sys.exit(code)
