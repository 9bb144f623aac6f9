"""A note of every agent process the daemon has running, so the next daemon can stop what a crash orphaned.

Agents run in sessions of their own (so a whole agent can be stopped as one process group), which also
means a daemon killed with SIGKILL outside a cgroup (launchd, a terminal, the OOM killer) leaves them
running. Start-up recovery then runs the task again, and two agents would edit the same worktree path.
So each agent's pid, with the kernel's start time of that process, is written under the state folder
while it runs; recovery stops each process group still alive whose start time matches (a reused pid
never does) before it touches any worktree. Where the start time cannot be read (no /proc), it says so
rather than signal a process it cannot identify.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import structlog

from conveyor.core.private import open_private, private_dir
from conveyor.runner.process import live_members

log = structlog.get_logger("conveyor.runner.pids")
_POLL_S = 0.05


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22), None if unknown."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


class AgentRecords:
    """`<folder>/<task_id>.pid` holds "<pid> <start time>" while that task's agent runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, task_id: str, pid: int) -> None:
        private_dir(self.folder)
        fd = open_private(self.folder / f"{task_id}.pid", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with open(fd, "w", encoding="utf-8") as note:
            note.write(f"{pid} {process_start_time(pid) or '-'}\n")

    def remove(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{task_id}.pid").unlink()

    def stop_orphans(self, grace_s: float) -> list[str]:
        """Stop the process group of every recorded agent still running; returns the task ids stopped."""
        stopped = []
        for record in sorted(self.folder.glob("*.pid")) if self.folder.is_dir() else []:
            task_id = record.stem
            pid, started = _read(record)
            if pid is not None and _is_recorded_process(pid, started, task_id):
                _stop_group(pid, grace_s)
                log.warning("recovery.orphan_agent_stopped", task_id=task_id, pid=pid,
                            note="left running by a daemon that was killed; its task runs again")
                stopped.append(task_id)
            record.unlink(missing_ok=True)
        return stopped


def _read(record: Path) -> tuple[int | None, str]:
    try:
        pid_text, _, started = record.read_text().strip().partition(" ")
        return int(pid_text), started
    except (OSError, ValueError):
        return None, "-"


def _is_recorded_process(pid: int, started: str, task_id: str) -> bool:
    now = process_start_time(pid)
    if now is None:
        if started == "-" and _alive(pid):
            log.warning("recovery.agent_may_still_run", task_id=task_id, pid=pid,
                        note="this system cannot tell whether that pid is still the agent; stop it if it is")
        return False
    try:
        return now == started and os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int, grace_s: float) -> None:
    """SIGTERM to the agent's group, `grace_s` to go, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not live_members(pgid):
                return
            time.sleep(_POLL_S)

