"""`disk_problem`: a full or read-only disk told apart from a task's own failure, in whatever words it came."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from conveyor.core.disk_trouble import disk_problem, disk_state
from conveyor.core.errors import ConveyorError, GitError


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device", "/data/x"),
    OSError(errno.EROFS, "Read-only file system"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    GitError("git worktree failed in /r: fatal: could not create directory: No space left on device"),
    GitError("git worktree failed in /r: fatal: could not create leading directories: Read-only file system"),
    ConveyorError("telemetry database /d/t.db: database or disk is full"),
    ConveyorError("telemetry database /d/t.db: attempt to write a readonly database"),
])
def test_disk_trouble_is_recognised(exc: BaseException) -> None:
    problem = disk_problem(exc)
    assert problem is not None and problem.strip()


def test_the_cause_chain_is_followed() -> None:
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise ConveyorError("telemetry write failed") from inner
    except ConveyorError as outer:
        assert disk_problem(outer) == "database or disk is full"


def test_the_errno_message_names_the_path() -> None:
    assert disk_problem(OSError(errno.ENOSPC, "No space left on device", "/data/x")) == \
        "No space left on device: /data/x"


@pytest.mark.parametrize("exc", [
    OSError(errno.EACCES, "Permission denied"),
    FileNotFoundError(errno.ENOENT, "No such file or directory"),
    GitError("git worktree failed: fatal: invalid reference: main"),
    ConveyorError("the agent exited with code 3"),
])
def test_other_failures_are_not_disk_trouble(exc: BaseException) -> None:
    assert disk_problem(exc) is None


def test_disk_state_of_an_ordinary_folder_is_silent(tmp_path: Path) -> None:
    assert disk_state(tmp_path) == ""
    assert disk_state(tmp_path / "missing") == ""

