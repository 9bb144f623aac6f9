"""The worktrees directory or the telemetry database on a full or read-only filesystem, under a running
daemon (a real process): a clear error, the task waits without spending an attempt and runs once the disk
is back, the database still opens and checks clean, and the daemon never stops.

A small tmpfs is mounted where the machine allows it (root with mount rights); elsewhere a chmod'ed
directory stands in for "read-only" (it cannot stand in for "full", so those tests are skipped).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import DAEMON_YAML, Repo, make_repo, tools_yaml
from tests.integration.daemon_process import DaemonProcess, running_daemon
from tests.support.waiting import wait_for


class SmallDisk:
    """A folder on a 4 MiB tmpfs that tests can fill up or remount read-only (or a chmod'ed stand-in)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True)
        self.mounted = _try_mount(path)
        self._filler = path / f".filler-{uuid.uuid4().hex}"

    def fill(self) -> None:
        if not self.mounted:
            pytest.skip("no tmpfs here: a full disk cannot be simulated")
        with open(self._filler, "wb") as handle:
            chunk = b"\0" * 65536
            try:
                while True:
                    handle.write(chunk)
                    handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError), open(self._filler, "ab") as handle:   # the last partial pages
            while True:
                handle.write(b"\0")
                handle.flush()

    def unfill(self) -> None:
        self._filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        if self.mounted:
            # The kernel refuses (EBUSY, exit 32) while a file on the disk is open for writing; the daemon
            # releases the database when it goes idle, a moment after the last task finished.
            deadline = time.monotonic() + 10
            while subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.path} could not be remounted read-only within 10 s")
                time.sleep(0.1)
        elif os.geteuid() == 0:
            pytest.skip("root ignores permissions and no tmpfs can be mounted here")
        else:
            for folder in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
                folder.chmod(0o555)

    def writable(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)
        else:
            for folder in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
                folder.chmod(0o755)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
        else:
            self.writable()


def _try_mount(path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(path)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "small-disk")
    try:
        yield small
    finally:
        small.close()


def configure(repo: Repo, **paths: Path) -> None:
    extra = "".join(f"{key}: {value}\n" for key, value in paths.items())
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("rescan_interval_s: 30", "rescan_interval_s: 0.5")
                      + extra)


def assigned_doc(repo: Repo, task_id: str) -> dict[str, object]:
    document = yaml.safe_load((repo.board / "assigned" / "backend-dev" / f"{task_id}.yaml").read_text())
    assert isinstance(document, dict)
    return document


def expect_wait_then_run(repo: Repo, daemon: DaemonProcess, task_id: str, words: str, recover: object) -> None:
    """The task is requeued with a sentence naming the disk problem (no attempt spent), then runs once the
    disk is back (`recover` is called in between)."""
    error = daemon.wait_event("task.environment_error", lambda e: e.get("task_id") == task_id)
    assert words in error["error"] and "disk" in error["note"]
    requeued = daemon.wait_event("task.requeued", lambda e: e.get("task_id") == task_id)
    assert words in requeued["reason"]
    document = assigned_doc(repo, task_id)
    assert (document["status"], document["attempt"]) == ("assigned", 0)
    assert daemon.alive()
    assert callable(recover)
    recover()
    wait_for(lambda: repo.done_path(task_id).exists(), timeout=60, what="the task to run once the disk is back")
    finished = repo.done_doc(task_id)
    assert (finished["status"], finished["attempt"]) == ("done", 1)


def expect_disk_trouble_handled(repo: Repo, daemon: DaemonProcess, disk: SmallDisk, task_id: str,
                                words: str) -> None:
    """On a tmpfs remounted read-only: wait, then run. On the chmod stand-in, git and SQLite see "Permission
    denied", which is a configuration problem, not a disk one: the task fails saying so, and nothing else."""
    if disk.mounted:
        expect_wait_then_run(repo, daemon, task_id, words, disk.writable)
        return
    wait_for(lambda: repo.done_path(task_id).exists(), timeout=60, what="the task to fail clearly")
    document = repo.done_doc(task_id)
    assert document["status"] == "error" and "Permission denied" in document["error"]["message"]
    disk.writable()
    assert daemon.alive()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_worktrees_on_a_full_disk(repo: Repo, disk: SmallDisk) -> None:
    configure(repo, worktrees_dir=disk.path / "worktrees")
    with running_daemon(repo.path) as daemon:
        daemon.wait_event("daemon.ready")
        disk.fill()
        repo.submit("no-room", description="FAKE write a.txt x")
        expect_wait_then_run(repo, daemon, "no-room", "No space left on device", disk.unfill)
        assert daemon.alive()
    assert repo.worktrees() == [str(repo.path)]


def test_worktrees_on_a_read_only_disk(repo: Repo, disk: SmallDisk) -> None:
    configure(repo, worktrees_dir=disk.path / "worktrees")
    (disk.path / "worktrees").mkdir()
    with running_daemon(repo.path) as daemon:
        daemon.wait_event("daemon.ready")
        disk.read_only()
        repo.submit("read-only-trees", description="FAKE write a.txt x")
        expect_disk_trouble_handled(repo, daemon, disk, "read-only-trees", "Read-only file system")


def test_the_database_on_a_read_only_disk(repo: Repo, disk: SmallDisk) -> None:
    db = disk.path / "telemetry.db"
    configure(repo, telemetry_db=db)
    repo.submit("before", description="FAKE write a.txt x")
    with running_daemon(repo.path) as daemon:
        wait_for(lambda: repo.done_path("before").exists(), what="a first task")
        disk.read_only()
        repo.submit("read-only-db", description="FAKE write b.txt x")
        expect_disk_trouble_handled(repo, daemon, disk, "read-only-db", "Read-only file system")
    assert integrity(db) == "ok"
    outcomes = {row["task_id"]: row["outcome"] for row in _rows(db)}
    assert outcomes == ({"before": "ok", "read-only-db": "ok"} if disk.mounted else {"before": "ok"})


def test_the_database_on_a_full_disk(repo: Repo, disk: SmallDisk) -> None:
    db = disk.path / "telemetry.db"
    configure(repo, telemetry_db=db)
    repo.submit("first", description="FAKE write a.txt x")
    with running_daemon(repo.path) as daemon:
        wait_for(lambda: repo.done_path("first").exists(), what="a first task")
        disk.fill()
        for index in range(40):   # enough rows that SQLite must grow its files, not reuse a page
            repo.submit(f"crowd-{index:02d}", description="FAKE write a.txt x")
        daemon.wait_event("task.environment_error", timeout=60)
        assert daemon.alive()
        disk.unfill()
        wait_for(lambda: all(repo.done_path(f"crowd-{i:02d}").exists() for i in range(40)), timeout=120,
                 what="every task once there is room again")
    assert integrity(db) == "ok"
    rows = _rows(db)
    expected = {"first", *(f"crowd-{i:02d}" for i in range(40))}
    assert {row["task_id"] for row in rows if row["outcome"] == "ok"} == expected
    assert [row for row in rows if row["outcome"] == "running"] == []


def _rows(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM invocations ORDER BY id"))
    finally:
        conn.close()


def test_the_whole_repository_on_a_full_disk(disk: SmallDisk, tmp_path: Path) -> None:
    """Board, state, worktrees and database all on the full disk: task files cannot be rewritten, worktrees
    not made, rejections not written. The daemon says so, keeps serving, and catches up once there is room."""
    if not disk.mounted:
        pytest.skip("no tmpfs here: a full disk cannot be simulated")
    repo = make_repo(disk.path)
    repo.out = tmp_path / "agent-out"                     # the fake agent's own notes stay off the small disk
    repo.write_config("tools.yaml", tools_yaml(repo.agent_bin, repo.out))
    configure(repo, worktrees_dir=disk.path / "worktrees")
    staging = repo.path.parent / "staging"
    staging.mkdir()
    (staging / "squeezed.yaml").write_text(repo.task_text("squeezed", description="FAKE write a.txt x"))
    (staging / "broken.yaml").write_text("id: broken\nagent: [\n")
    with running_daemon(repo.path) as daemon:
        daemon.wait_event("daemon.ready")
        disk.fill()
        for name in ("squeezed.yaml", "broken.yaml"):
            os.rename(staging / name, repo.inbox / name)   # a rename needs no room
        daemon.wait_event("task.environment_error", lambda e: e.get("task_id") == "squeezed")
        daemon.wait_event("task.reject_failed", lambda e: e.get("task_id") == "broken")
        daemon.wait_event("task.reject_failed", lambda e: e.get("task_id") == "broken", after=2)  # two more scans
        assert daemon.alive()
        assert daemon.events("daemon.loop_error") == []
        disk.unfill()
        wait_for(lambda: repo.done_path("squeezed").exists(), timeout=60, what="the task once there is room")
        wait_for(lambda: (repo.rejected / "broken.yaml.error.yaml").exists(), what="the rejection once there is room")
    document = repo.done_doc("squeezed")
    assert (document["status"], document["attempt"]) == ("done", 1)
    assert integrity(repo.telemetry_db) == "ok"
