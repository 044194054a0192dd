"""The memory budget: limits read from the machine (meminfo, cgroup, ulimit -v) or the environment, estimates
refused with one line naming the file, and the CLIs refusing real inputs above a configured limit."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from DicomFidelityCommonLib import memory
from DicomFidelityCommonLib.cli import CommandResult, run_command
from DicomFidelityCommonLib.memory import (
    LIMIT_VARIABLE,
    InputTooLargeError,
    memory_limit,
    parse_size,
    require_memory,
    voxel_bytes,
)

BIN = Path(sys.executable).parent
LIVER_SEG = "dcmqi/segmentations/liver.dcm"
TOTALSEG_LABELS = "totalsegmentator/reference_files/example_seg_fast_force_split.nii.gz"
TOTALSEG_CT = "totalsegmentator/reference_files/example_ct_sm.nii.gz"


@pytest.mark.parametrize("text, expected", [("1073741824", 1 << 30), ("512M", 512 << 20), ("8G", 8 << 30),
                                            ("1.5g", int(1.5 * (1 << 30))), ("2GiB", 2 << 30), (" 64k ", 64 << 10)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "8X", "G"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_voxel_bytes_does_not_overflow_on_hostile_sizes():
    assert voxel_bytes((65535, 65535, 2_000_000_000), 2) == 65535 * 65535 * 2_000_000_000 * 2
    assert voxel_bytes((512, 512, 200), 4, copies=1.5) == 512 * 512 * 200 * 6
    assert voxel_bytes((10, -3, 4), 1) == 0


def test_limit_from_environment_wins(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, "256M")
    limit = memory_limit()
    assert limit.bytes == 256 << 20 and LIMIT_VARIABLE in limit.source


def test_bad_environment_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, "a lot")
    with pytest.raises(memory.DicomFidelityError, match=LIMIT_VARIABLE):
        memory_limit()


def test_limit_is_a_fraction_of_the_smallest_room(monkeypatch):
    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 10 << 30)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 4 << 30)
    monkeypatch.setattr(memory, "_address_space_room", lambda: None)
    limit = memory_limit()
    assert limit.bytes == int((4 << 30) * memory.AVAILABLE_FRACTION)
    assert "container" in limit.source


def test_meminfo_and_cgroup_files_are_read(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2000000 kB\n")
    assert memory._meminfo_available(meminfo) == 2_000_000 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("3000\n")
    (v2 / "memory.current").write_text("1000\n")
    assert memory._cgroup_room(v2) == 2000
    (v2 / "memory.max").write_text("max\n")
    assert memory._cgroup_room(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(1 << 62))  # v1's "no limit"
    (v1 / "memory" / "memory.usage_in_bytes").write_text("5")
    assert memory._cgroup_room(v1) is None


def test_the_cgroup_limit_of_this_process_and_its_parents_is_found(tmp_path):
    """Without a cgroup namespace (a Slurm job, systemd-run -p MemoryMax) the limit is on the process's own cgroup
    or a parent of it, not at the mount root; the tightest applies."""
    root, proc = tmp_path / "cgroup", tmp_path / "proc_self_cgroup"
    job = root / "system.slice" / "job.scope"
    job.mkdir(parents=True)
    (root / "system.slice" / "memory.max").write_text("10000\n")
    (root / "system.slice" / "memory.current").write_text("1000\n")
    (job / "memory.max").write_text("max\n")
    (job / "memory.current").write_text("500\n")
    proc.write_text("0::/system.slice/job.scope\n")
    assert memory._cgroup_room(root, proc) == 9000  # the parent's limit
    (job / "memory.max").write_text("3000\n")
    assert memory._cgroup_room(root, proc) == 2500  # the tighter own limit
    v1 = tmp_path / "v1"
    (v1 / "memory" / "batch" / "job").mkdir(parents=True)
    (v1 / "memory" / "batch" / "job" / "memory.limit_in_bytes").write_text("8000")
    (v1 / "memory" / "batch" / "job" / "memory.usage_in_bytes").write_text("3000")
    proc.write_text("12:cpu,cpuacct:/batch/job\n11:memory:/batch/job\n")
    assert memory._cgroup_room(v1, proc) == 5000
    assert memory._cgroup_room(v1, tmp_path / "absent") is None  # the mount root only: no limit there


def test_address_space_limit_is_taken_into_account():
    """Under ``ulimit -v 3G`` the limit is below 3 GiB and comes from that limit (the machine's other limits are
    hidden, so the answer cannot come from them)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from DicomFidelityCommonLib import memory; "
            "memory._meminfo_available = memory._cgroup_room = lambda *a: None; "
            "l = memory.memory_limit(); print(l.bytes, l.source)")
    env = {**os.environ, "PYTHONPATH": str(Path(memory.__file__).parents[1])}
    env.pop(LIMIT_VARIABLE, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    value, source = out.split(" ", 1)
    assert int(value) < 3 << 30
    assert source.strip() == "80% of the address-space limit"


def test_require_memory_names_the_file_and_the_sizes(monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, "1M")
    require_memory(1 << 20, "exactly the limit", "fits.dcm")
    with pytest.raises(InputTooLargeError) as caught:
        require_memory(voxel_bytes((512, 512, 40000), 1), "40000 frames of 512x512", "/data/big.dcm")
    text = str(caught.value)
    assert text.startswith("/data/big.dcm: 40000 frames of 512x512 needs about 9.8 GiB")
    assert "1.0 MiB" in text and LIMIT_VARIABLE in text


def _cli(args: list[str], limit: str) -> subprocess.CompletedProcess:
    env = {**os.environ, LIMIT_VARIABLE: limit}
    return subprocess.run([str(BIN / "segqa"), *args], env=env, capture_output=True, text=True, timeout=300)


def test_load_seg_refuses_a_real_seg_above_the_limit(shared_data, tmp_path):
    seg = shared_data / LIVER_SEG
    out = tmp_path / "out" / "liver.seg.nrrd"
    refused = _cli(["load-seg", str(seg), "--output", str(out), "--quiet"], "100K")
    assert refused.returncode == 1, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(seg) in lines[0] and "needs about" in lines[0]
    assert "Traceback" not in refused.stderr and not out.exists()
    accepted = _cli(["load-seg", str(seg), "--output", str(out), "--quiet"], "2G")
    assert accepted.returncode == 0, accepted.stderr
    assert out.exists()


def test_export_seg_refuses_a_label_volume_above_the_limit(shared_data, tmp_path):
    labels = shared_data / TOTALSEG_LABELS
    refused = _cli(["export-seg", "--segmentation", str(labels), "--reference", str(shared_data / TOTALSEG_CT),
                    "--output-dir", str(tmp_path / "out"), "--quiet"], "1M")
    assert refused.returncode == 1, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "needs about" in lines[0]
    assert "example_" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_errors_without_a_file_name_the_command_input(tmp_path, capsys):
    """A MemoryError (or an internal error) carries no file: the boundary names the command's main input."""
    parser = argparse.ArgumentParser()
    parser.add_argument("seg")

    def explode(args) -> CommandResult:
        raise MemoryError

    parser.set_defaults(func=explode)
    assert run_command("load", parser, [str(tmp_path / "huge.dcm")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'huge.dcm'}: not enough memory for this input"]
