"""`open_for_writing`: the kernel's answer (a read lease) to "is another process still writing this file?"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.core.openfiles import fd_open_for_writing, open_for_writing
from conveyor.core.yamlio import StillBeingWritten, read_limited

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="leases are a Linux feature")


def hold_open(path: Path, mode: str) -> subprocess.Popen[bytes]:
    """Another process that opens `path` with `mode`, says so, and keeps it open until killed."""
    code = f"import sys, time; f = open({str(path)!r}, {mode!r}); print('open', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
    return proc


@linux_only
@pytest.mark.parametrize("mode", ["a", "r+", "w"])
def test_a_file_another_process_writes_is_reported_until_it_is_closed(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "task.yaml"
    path.write_text("id: task\n")
    writer = hold_open(path, mode)
    try:
        assert open_for_writing(path) is True
    finally:
        writer.kill()
        writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()
    assert open_for_writing(path) is False


@linux_only
def test_readers_do_not_count(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text("id: task\n")
    reader = hold_open(path, "r")
    try:
        assert open_for_writing(path) is False
    finally:
        reader.kill()
        reader.wait()
        assert reader.stdout is not None
        reader.stdout.close()


@linux_only
def test_asking_does_not_disturb_a_writer(tmp_path: Path) -> None:
    """The lease is dropped at once: a writer opening the file right after is not kept waiting."""
    path = tmp_path / "task.yaml"
    path.write_text("id: task\n")
    for _ in range(50):
        assert open_for_writing(path) is False
    started = time.monotonic()
    with open(path, "a") as handle:
        handle.write("agent: dev\n")
    assert time.monotonic() - started < 5     # a lease left behind would block this open for 45 s


def test_what_cannot_be_asked_is_unknown(tmp_path: Path) -> None:
    assert open_for_writing(tmp_path / "missing.yaml") is None
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "missing.yaml")
    assert open_for_writing(link) is None
    assert open_for_writing(tmp_path) in (None, False)      # a directory: no lease, never a writer


@linux_only
def test_the_reader_asks_on_its_own_descriptor_and_refuses_a_file_being_written(tmp_path: Path) -> None:
    """The inbox reads a task with `read_limited(busy=fd_open_for_writing)`: one open serves the check and
    the read, and a file another process is still writing is refused, not half-read."""
    path = tmp_path / "task.yaml"
    path.write_text("id: task\nagent: a\n")
    writer = hold_open(path, "a")
    try:
        with pytest.raises(StillBeingWritten):
            read_limited(path, busy=fd_open_for_writing)
    finally:
        writer.kill()
        writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()
    assert read_limited(path, busy=fd_open_for_writing) == b"id: task\nagent: a\n"
