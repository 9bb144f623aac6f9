"""What the board already holds: ids of finished and claimed tasks, for dependencies and duplicate checks.

Finished tasks are read once and re-read only when a folder's modification time changes, so an idle
daemon with a thousand finished tasks does one `stat` per folder per rescan, not a thousand parses.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.board.layout import BoardLayout
from conveyor.core import yamlio
from conveyor.core.task import CLAIMER_PREFIX, is_task_name, task_id_from_path


@dataclass(frozen=True)
class Known:
    """A task the board already holds outside `inbox/`."""

    task_id: str
    status: str          # done | error | assigned | ... (the file's `status`, or the folder's state)
    path: Path
    pending_handoff: bool = False   # done by Conveyor, names `result.next_agent`, no `result.handoff_task` yet


Signature = tuple[int, int]   # (mtime_ns, size) of one task file


@dataclass
class BoardIndex:
    layout: BoardLayout
    _folders: dict[Path, tuple[float, dict[str, Known]]] = field(default_factory=dict)
    _files: dict[Path, dict[Path, tuple[Signature, list[Known]]]] = field(default_factory=dict)  # per folder

    def refresh(self) -> None:
        """Re-read the folders that changed since the last refresh, and in them only the changed files.

        A busy `done/<agent>/` changes after every task; parsing only new or rewritten files keeps a
        1,000-task flood linear instead of re-reading the whole folder each time.
        """
        seen: set[Path] = set()
        for parent in (self.layout.done, self.layout.archive, self.layout.assigned):
            for folder in _subfolders(parent):
                seen.add(folder)
                try:
                    mtime = folder.stat().st_mtime_ns
                except FileNotFoundError:
                    continue
                cached = self._folders.get(folder)
                if cached is None or cached[0] != mtime:
                    self._folders[folder] = (mtime, self._read_folder(folder, parent == self.layout.assigned))
        for gone in set(self._folders) - seen:
            del self._folders[gone]
            self._files.pop(gone, None)

    def _read_folder(self, folder: Path, claimed: bool) -> dict[str, Known]:
        tasks: dict[str, Known] = {}
        previous = self._files.get(folder, {})
        current: dict[Path, tuple[Signature, list[Known]]] = {}
        for path, signature in _task_files_with_signatures(folder):
            cached = previous.get(path)
            entries = cached[1] if cached is not None and cached[0] == signature else _read_entries(path, claimed)
            current[path] = (signature, entries)
            for known in entries:
                tasks.setdefault(known.task_id, known)
        self._files[folder] = current   # files that left the folder are forgotten with the old map
        return tasks

    def note(self, known: Known) -> None:
        """Record a transition the daemon made itself, without waiting for the next refresh."""
        folder = known.path.parent
        entry = self._folders.setdefault(folder, (0.0, {}))
        entry[1][known.task_id] = known
        for other_folder, (_, tasks) in self._folders.items():
            if other_folder != folder:
                tasks.pop(known.task_id, None)

    def get(self, task_id: str) -> Known | None:
        for _, tasks in self._folders.values():
            if task_id in tasks:
                return tasks[task_id]
        return None

    def all(self) -> list[Known]:
        return [known for _, tasks in self._folders.values() for known in tasks.values()]


def _subfolders(parent: Path) -> list[Path]:
    """`done/<agent>/` style folders (and the parent itself for flat layouts), skipping `_rejected`."""
    if not parent.is_dir():
        return []
    folders = [parent]
    with os.scandir(parent) as entries:
        folders.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.name != "_rejected")
    return folders


def _task_files_with_signatures(folder: Path) -> list[tuple[Path, Signature]]:
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_task_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.append((Path(entry.path), (info.st_mtime_ns, info.st_size)))
    return sorted(found)


def _read_entries(path: Path, claimed: bool) -> list[Known]:
    """The ids one file answers to: its file name, and its declared `id` when that differs (seed quirk)."""
    stem = task_id_from_path(path)
    status, doc_id, pending = (_claimed_status(path), None, False) if claimed else _status_and_id(path)
    entries = [Known(stem, status, path, pending)]
    if doc_id and doc_id != stem:
        entries.append(Known(doc_id, status, path))
    return entries


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


def _status_and_id(path: Path) -> tuple[str, str | None, bool]:
    """Status, declared id and whether a hand-off is still owed, of a finished task; unreadable files
    count as finished with an error."""
    try:
        document = yamlio.loads(yamlio.read_limited(path))
    except yamlio.YamlProblem:
        return "error", None, False
    if not isinstance(document, dict):
        return "error", None, False
    status = str(document.get("status") or "done").lower()
    doc_id = document.get("id")
    result = document.get("result")
    # Only tasks Conveyor itself ran: a board adopted from the seed workflow holds done tasks whose
    # `next_agent` its own orchestrator handled long ago.
    ours = str(document.get("claimed_by") or "").startswith(CLAIMER_PREFIX)
    pending = (ours and status == "done" and isinstance(result, dict) and bool(result.get("next_agent"))
               and "handoff_task" not in result)
    return status, doc_id if isinstance(doc_id, str) else None, pending
