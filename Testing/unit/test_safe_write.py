"""Transactional outputs: staged in a hidden folder, published together under names that are never overwritten,
removed when the command fails; usual permissions on what is published."""

from __future__ import annotations

import os
import threading

import pytest

from DicomFidelityCommonLib.safe_write import STAGING_PREFIX, OutputTransaction, atomic_output_dir


def _stage(transaction: OutputTransaction, text: str) -> None:
    transaction.path("result.seg.dcm").write_text(text)
    folder = transaction.path("reference")
    folder.mkdir()
    (folder / "IMG0001.dcm").write_text(text)


def test_publish_never_overwrites_and_names_the_next_free_name(tmp_path):
    with OutputTransaction(tmp_path) as first:
        _stage(first, "first")
        published_first = first.publish()
    with OutputTransaction(tmp_path) as second:
        _stage(second, "second")
        published_second = second.publish()
    assert published_first["result.seg.dcm"].read_text() == "first"
    assert published_second["result.seg.dcm"].name == "result_2.seg.dcm"
    assert published_second["reference"].name == "reference_2"
    assert (published_second["reference"] / "IMG0001.dcm").read_text() == "second"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
    mode = 0o777 & ~_umask()
    assert os.stat(published_second["reference"]).st_mode & 0o777 == mode
    assert os.stat(published_second["result.seg.dcm"]).st_mode & 0o777 == 0o666 & ~_umask()


def test_concurrent_publishers_keep_every_output(tmp_path):
    barrier = threading.Barrier(8)
    results = []

    def run(number: int) -> None:
        with OutputTransaction(tmp_path) as transaction:
            _stage(transaction, str(number))
            barrier.wait()
            results.append(transaction.publish())

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = {r["result.seg.dcm"] for r in results}
    assert len(files) == 8 and {f.read_text() for f in files} == {str(n) for n in range(8)}
    folders = {r["reference"] for r in results}
    assert len(folders) == 8 and {(f / "IMG0001.dcm").read_text() for f in folders} == {str(n) for n in range(8)}


def test_a_failure_removes_what_was_published_and_the_staging(tmp_path):
    (tmp_path / "keep.txt").write_text("an earlier output")
    with pytest.raises(RuntimeError), OutputTransaction(tmp_path) as transaction:
        _stage(transaction, "x")
        transaction.publish()
        raise RuntimeError("the JSON could not be written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_atomic_output_dir_gets_the_usual_permissions(tmp_path):
    with atomic_output_dir(tmp_path / "report") as folder:
        (folder / "a.txt").write_text("a")
    assert os.stat(tmp_path / "report").st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
