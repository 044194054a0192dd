"""Write outputs atomically: a failure never leaves a half-written file or folder behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep every suffix (".nii.gz", ".seg.nrrd") so writers that pick a format by extension still work.
    suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_output_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` only if the block succeeds.

    ``path`` must not exist yet or be an empty folder, so a series is never mixed with an older one.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: output folder exists and is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def safe_file_name(name: str, fallback: str = "segmentation") -> str:
    """A node or structure name made safe as a file name (letters, digits, '-' and '_')."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or fallback


def free_name(folder: str | Path, name: str) -> str:
    """``name``, or ``name`` with a counter (``a_2.seg.dcm``), so an output never overwrites an earlier one."""
    folder = Path(folder)
    if not (folder / name).exists():
        return name
    stem, dot, rest = name.partition(".")
    counter = 2
    while (folder / f"{stem}_{counter}{dot}{rest}").exists():
        counter += 1
    return f"{stem}_{counter}{dot}{rest}"
