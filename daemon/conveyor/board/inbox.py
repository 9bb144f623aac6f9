"""Reading inbox/: which files are tasks, which are rejected and why, and which are not ready to judge.

A file is parsed once per version (its inode, size and mtime); a file still open for writing, or too fresh
to call broken, is left alone and looked at again, never rejected half-written. Rejections go through the
callback the daemon passes in, so moving files and logging stay in one place.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from conveyor.board import layout as board
from conveyor.board.handoff_tasks import existing_followup
from conveyor.board.index import BoardIndex
from conveyor.board.layout import BoardLayout
from conveyor.core import openfiles
from conveyor.core.errors import Problem, TaskFileError
from conveyor.core.fsops import is_interrupted_claim
from conveyor.core.task import Task, parse_task, task_id_from_path
from conveyor.core.timeutil import Clock
from conveyor.core.yamlio import StillBeingWritten

log = structlog.get_logger("conveyor.board.inbox")
SETTLE_S = 2.0          # an unreadable file this recent may still be being written: look again later
Signature = tuple[int, int, int]


@dataclass
class Seen:
    signature: tuple[int, int, int]
    task: Task | None
    first_seen: float
    writing: bool = False      # another process holds it open for writing: neither parsed nor claimed yet


class InboxReader:
    """The daemon's view of inbox/, with what it learned about each file since the last pass."""

    def __init__(self, layout: BoardLayout, index: BoardIndex, clock: Clock, serves: Callable[[str], bool],
                 reject: Callable[[Path, list[Problem]], None]) -> None:
        self._layout = layout
        self._index = index
        self._clock = clock
        self._serves = serves      # whether agents.yaml serves an agent name (the config may be reloaded)
        self._reject = reject
        self._seen: dict[Path, Seen] = {}

    def forget(self, path: Path) -> None:
        """The file left inbox/ (claimed or rejected)."""
        self._seen.pop(path, None)

    def signature_of(self, path: Path) -> Signature | None:
        """The version of the file that was parsed, to notice later rewrites."""
        seen = self._seen.get(path)
        return seen.signature if seen is not None else None

    def first_seen(self) -> dict[str, float]:
        """When each task was first seen: its age when it gives no created_at."""
        return {seen.task.id: seen.first_seen for seen in self._seen.values() if seen.task}

    def settling(self) -> bool:
        """Whether a file is waiting to be judged (being written, or too fresh to reject)."""
        return any(seen.task is None for seen in self._seen.values())

    def read(self) -> list[Task]:
        """The valid tasks in inbox/ now; everything else is rejected (or left to settle) on the way."""
        tasks: list[Task] = []
        ids: dict[str, Path] = {}
        present: set[Path] = set()
        now = self._clock()
        for path in board.inbox_entries(self._layout):
            present.add(path)
            task = self._read_one(path, now)
            if task is None:
                continue
            if task.id in ids:
                self._reject(path, [Problem(str(path), f"duplicates the id of {ids[task.id].name} in inbox/",
                                            "give each task a unique id (and file name)", field="id")])
                continue
            known = self._index.get(task.id)
            if known is not None and not os.path.lexists(known.path):
                # moved away since the index last looked (a retry: done/ → inbox/): look again now
                self._index.refresh()
                known = self._index.get(task.id)
            if known is not None and is_interrupted_claim(path, known.path):
                with contextlib.suppress(FileNotFoundError):   # a claim cut short by a crash: finish it
                    os.unlink(path)
                self._seen.pop(path, None)
                continue
            if known is not None:
                self._reject(path, [Problem(str(path), f"{task.id!r} is already on the board at {known.path}",
                                            "a task runs once: give the new task a new id", field="id")])
                continue
            if not self._serves(task.agent):
                self._reject(path, [Problem(str(path), f"no agents.yaml entry serves agent {task.agent!r}",
                                            "add the agent (or a `default` entry) to config/agents.yaml",
                                            field="agent")])
                continue
            ids[task.id] = path
            tasks.append(task)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return tasks

    def _twin_followup(self, task: Task) -> tuple[str, Path] | None:
        """A hand-off (context.previous_task) whose twin, made by the other hand-off maker, is on the board."""
        parent = task.context.get("previous_task")
        if not isinstance(parent, str) or not parent:
            return None
        found = existing_followup(self._layout, parent, task.agent, besides=task.path)
        if found is None or (found.parent == task.path.parent and found.name > task.path.name):
            return None   # two in inbox/ at once: the first by name stays, the other is the duplicate
        return parent, found

    def _read_one(self, path: Path, now: float) -> Task | None:
        """Parse (or reuse) one inbox file; unreadable files are rejected once they have settled."""
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        seen = self._seen.get(path)
        if seen is not None and seen.signature == signature and seen.task is not None:
            return seen.task
        first_seen = seen.first_seen if seen else now
        if not stat.S_ISREG(info.st_mode):
            kind = "symbolic link" if stat.S_ISLNK(info.st_mode) else "directory" if stat.S_ISDIR(
                info.st_mode) else "special file (FIFO, socket or device)"
            self._reject(path, [Problem(str(path), f"is a {kind}, not a regular file",
                                        "put the task file itself into inbox/")])
            return None
        try:
            task = parse_task(path, busy=openfiles.fd_open_for_writing)
        except StillBeingWritten:
            self.still_being_written(path, signature, first_seen)
            return None
        except TaskFileError as exc:
            # the injected clock (tests advance it instead of sleeping); abs(): a far-future mtime must not
            # keep a file unsettled (and `--once` running) for ever
            if abs(now - info.st_mtime_ns / 1e9) < SETTLE_S:
                self._seen[path] = Seen(signature, None, first_seen)  # may still be being written
                return None
            self._reject(path, exc.problems)
            return None
        twin = self._twin_followup(task)   # once per version of the file, not on every pass
        if twin is not None:
            self._reject(path, [Problem(str(path), f"is a follow-up of {twin[0]!r} for {task.agent!r}, which the "
                                        f"board already holds at {twin[1]}",
                                        "one follow-up per parent and agent: delete this one, or the other",
                                        field="context.previous_task")])
            return None
        for warning in task.warnings:
            log.warning("task.warning", task_id=task.id, problem=warning.render())
        self._seen[path] = Seen(signature, task, first_seen)
        return task

    def still_being_written(self, path: Path, signature: tuple[int, int, int], first_seen: float) -> None:
        """Leave a file that is still open for writing alone (no parse, no claim, no rejection) until it closes."""
        seen = self._seen.get(path)
        if seen is None or not seen.writing:
            log.info("task.still_being_written", task_id=task_id_from_path(path), file=path.name,
                     note="another process has it open for writing; it is read once closed")
        self._seen[path] = Seen(signature, None, first_seen, writing=True)
