"""Write outputs atomically: a failure never leaves a half-written file or folder behind."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from DicomFidelityCommonLib.errors import OutputWriteError

STAGING_PREFIX = ".dicomfidelity-staging-"  # hidden: never read back as input (series listing, cohort index)
# errno values that only a write gives: the output, not an input, is at fault
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}


def output_write_error(exc: BaseException | None, final_path: str | Path, staging: str | Path) -> Exception | None:
    """The error to report for ``exc`` raised while writing ``final_path``: a full disk or a staging file's name
    becomes one line naming the output the user asked for (never a hidden temporary name); None: keep ``exc``."""
    if not isinstance(exc, OSError) or isinstance(exc, (FileExistsError, FileNotFoundError)):
        return None
    in_staging = exc.filename is not None and str(exc.filename).startswith(str(staging))
    if exc.errno in WRITE_ERRNOS or in_staging:
        shown = Path(*(part for part in Path(final_path).parts if not part.startswith(STAGING_PREFIX)))
        return OutputWriteError(f"cannot write the output ({exc.strerror or exc})", shown)
    return None


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
    except OSError as exc:
        replacement = output_write_error(exc, path, tmp)
        if replacement is None:
            raise
        raise replacement from exc
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
        os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700; outputs get the usual permissions
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except OSError as exc:
        replacement = output_write_error(exc, path, tmp)
        if replacement is None:
            raise
        raise replacement from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def safe_file_name(name: str, fallback: str = "segmentation") -> str:
    """A node or structure name made safe as a file name (letters, digits, '-' and '_')."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or fallback


def _candidates(name: str) -> Iterator[str]:
    """``name``, then ``name`` with a counter (``a_2.seg.dcm``, ``a_3.seg.dcm``, ...)."""
    yield name
    stem, dot, rest = name.partition(".")
    counter = 2
    while True:
        yield f"{stem}_{counter}{dot}{rest}"
        counter += 1


class OutputTransaction:
    """All the outputs of one command, staged in a hidden folder inside the output folder and published together.

    ``path(name)`` is where to write an output; ``publish()`` moves every staged file and folder to its name, or to
    the next free name (``_2``, ``_3``...) when another run took it meanwhile: claiming a name cannot overwrite
    (a hard link for files, an exclusive mkdir for folders), so two runs into one folder never lose each other's
    outputs. Leaving the block by an exception removes what was published and the staging folder; a killed run
    leaves only the hidden staging folder, never a file under a final name.
    """

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.output_dir, os.stat(self.output_dir).st_mode | 0o700)
        self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.output_dir))
        self.published: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        return self.staging / name

    def publish(self) -> dict[str, Path]:
        """Staged name -> the final path it was published under."""
        mode = 0o777 & ~_current_umask()
        for item in sorted(self.staging.iterdir()):
            for candidate in _candidates(item.name):
                target = self.output_dir / candidate
                try:
                    if item.is_dir():
                        os.mkdir(target)  # the claim: fails if the name is taken
                        os.chmod(item, mode)
                        os.replace(item, target)  # onto the empty folder just claimed
                    else:
                        os.link(item, target)  # fails if the name is taken; never replaces
                        item.unlink()
                except FileExistsError:
                    continue
                self.published[item.name] = target
                break
        return dict(self.published)

    def rollback(self) -> None:
        for target in self.published.values():
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        self.published.clear()

    def __enter__(self) -> OutputTransaction:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.rollback()
        shutil.rmtree(self.staging, ignore_errors=True)
        replacement = output_write_error(value, self.output_dir, self.staging)
        if replacement is not None:
            raise replacement from value
