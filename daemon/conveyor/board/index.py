"""What the board already holds outside `inbox/`: claimed tasks in memory, finished ones in the history table.

Only `assigned/` (active work) is listed, and only when a folder's mtime changed. Finished tasks come from
the history table (`history.py`), kept by the daemon's own transitions and reconciled with `done/` on each
rescan; `archive/` is never listed. An id the table does not know is looked up on the board by file name
(a few `stat` calls), so a dependency on a task finished long ago, or a file a person put on the board,
still resolves while the table is being rebuilt.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.board.history import ARCHIVE, DONE, Entry, History, entries_of, read_entries
from conveyor.board.history_sync import HistorySync, locate, subfolders
from conveyor.board.layout import BoardLayout
from conveyor.core.task import Task, is_task_name, task_id_from_path


@dataclass(frozen=True)
class Known:
    """A task the board already holds outside `inbox/`."""

    task_id: str
    status: str          # done | error | assigned | ... (the file's `status`, or the folder's state)
    path: Path
    pending_handoff: bool = False   # done by Conveyor, names `result.next_agent`, no `result.handoff_task` yet


@dataclass
class BoardIndex:
    layout: BoardLayout
    history: History = field(default_factory=History.in_memory)
    _assigned: dict[Path, tuple[int, dict[str, Known]]] = field(default_factory=dict)   # folder → (mtime, tasks)
    _noted: dict[str, Known] = field(default_factory=dict)   # claims made since the folder was last listed
    sync: HistorySync = field(init=False)

    def __post_init__(self) -> None:
        self.sync = HistorySync(self.layout, self.history)

    def start(self) -> None:
        """Start-up: trust the history table (reconcile `done/` with it) or begin rebuilding it in slices."""
        self.sync.start()
        self.refresh()

    def refresh(self) -> None:
        """Re-list the `assigned/` folders that changed, and reconcile changed `done/` folders with the table."""
        seen: set[Path] = set()
        for folder in subfolders(self.layout.assigned):
            seen.add(folder)
            try:
                mtime = folder.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            cached = self._assigned.get(folder)
            if cached is None or cached[0] != mtime:
                self._assigned[folder] = (mtime, _claimed_in(folder))
        for gone in set(self._assigned) - seen:
            del self._assigned[gone]
        self._noted.clear()
        self.sync.reconcile()

    def note(self, known: Known) -> None:
        """Record a claim the daemon made itself, without waiting for the next refresh."""
        self._noted[known.task_id] = known

    def finished(self, task: Task, status: str) -> None:
        """A task the daemon moved to `done/` (its document is in memory: nothing is read back)."""
        self._forget_claim(task.id)
        data = {**task.data, "status": task.data.get("status") or status}
        self.history.record(entries_of(self.layout.root, task.path, DONE, task.agent, data))

    def _forget_claim(self, task_id: str) -> None:
        self._noted.pop(task_id, None)
        for _, tasks in self._assigned.values():
            tasks.pop(task_id, None)

    def get(self, task_id: str) -> Known | None:
        """The task of this id on the board (claimed, done, failed or archived), or None."""
        claimed = self._claimed(task_id)
        if claimed is not None:
            return claimed
        entry = self.history.get(task_id)
        if entry is not None:
            path = self.layout.root / entry.file
            if path.is_file():
                return _known(entry, path)
            self.history.forget_files([entry.file])   # it moved or left the board: look for it by name
        return self._look_up(task_id)

    def _claimed(self, task_id: str) -> Known | None:
        noted = self._noted.get(task_id)
        if noted is not None and noted.path.is_file():
            return noted
        for _, tasks in self._assigned.values():
            if task_id in tasks:
                known = tasks[task_id]
                if known.path.is_file():
                    return known
        return None

    def _look_up(self, task_id: str) -> Known | None:
        found = locate(self.layout, task_id)
        if found is None:
            return None
        path, area = found
        if area == "assigned":
            return Known(task_id, _claimed_status(path), path)
        agent = path.parent.name if area == DONE and path.parent != self.layout.done else ""
        entries = read_entries(self.layout.root, path, area, agent)
        self.history.record(entries)
        return next((_known(entry, path) for entry in entries if entry.task_id == task_id), None)

    def claimed(self) -> list[Known]:
        """Every claimed task (what `assigned/` held when last listed, plus the claims noted since)."""
        tasks = {known.task_id: known for _, folder in self._assigned.values() for known in folder.values()}
        tasks.update(self._noted)
        return list(tasks.values())

    def pending_handoffs(self) -> list[Known]:
        return [_known(entry, self.layout.root / entry.file) for entry in self.history.pending_handoffs()
                if entry.area == DONE]


def _known(entry: Entry, path: Path) -> Known:
    return Known(entry.task_id, entry.status, path, entry.pending_handoff and entry.area != ARCHIVE)


def _claimed_in(folder: Path) -> dict[str, Known]:
    tasks: dict[str, Known] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_task_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                path = Path(entry.path)
                tasks[task_id_from_path(path)] = Known(task_id_from_path(path), _claimed_status(path), path)
    return tasks


_STATUS_LINE = re.compile(rb"^status:[ \t]*['\"]?([A-Za-z_]+)", re.MULTILINE)


def _claimed_status(path: Path) -> str:
    """The status a file in assigned/ declares (the workflow leaves `done` and `error` files there, which
    count for dependencies as what they say), read from its top-level `status:` line without a YAML parse:
    the folder holds every claimed task of a flood."""
    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except OSError:
        return "assigned"
    match = _STATUS_LINE.search(head)
    return match[1].decode().lower() if match else "assigned"
