"""Keeping the finished-task table in step with `done/` and `archive/`, in slices that never hold the loop.

Two kinds of work, both bounded per call (`step`):
- a rebuild, when the table is missing, corrupt or was never finished: every folder of `done/` (first) and
  `archive/` (newest month first) is listed once and its files parsed, a slice at a time;
- a reconcile of `done/` (at start and on each rescan, only for folders whose mtime changed): file names
  compared with the table, so a file a person added, removed or moved, or one the daemon finished or
  archived just before a crash, is parsed or put right. `archive/` is never listed outside a rebuild.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.board.history import ARCHIVE, DONE, VERSION, Entry, History, read_entries, signature
from conveyor.board.layout import REJECTED, BoardLayout
from conveyor.core.logs import get_logger
from conveyor.core.task import is_task_name, task_id_from_path

log = get_logger("conveyor.board.history")
SLICE_FILES = 400        # files parsed per step at most ...
SLICE_S = 0.05           # ... and no longer than this


@dataclass
class HistorySync:
    layout: BoardLayout
    history: History
    rebuilding: bool = False
    _folders: deque[tuple[Path, str]] = field(default_factory=deque)     # (folder, area) still to list
    _parse: deque[tuple[Path, str, str]] = field(default_factory=deque)  # (file, area, agent) still to parse
    _done_mtimes: dict[Path, int] = field(default_factory=dict)
    parsed: int = 0          # files parsed since start (tests count them)

    def start(self) -> None:
        """Begin a rebuild if the table cannot be trusted, else reconcile `done/` with it."""
        try:
            trusted = self.history.complete and not self.history.reset
        except sqlite3.DatabaseError:
            trusted = False
        if trusted:
            self.reconcile()
            return
        if self.history.reset:
            self.history.start_over()
            self.history.set_meta("version", VERSION)
        # else a rebuild a stop cut short: it resumes, skipping the files already in the table unchanged
        self.rebuilding = True
        self._parse.clear()
        self._folders.clear()
        self._folders.extend((folder, DONE) for folder in subfolders(self.layout.done))
        self._folders.extend((folder, ARCHIVE) for folder in reversed(subfolders(self.layout.archive)))
        log.info("history.rebuild_started", folders=len(self._folders),
                 note="finished tasks are indexed in the background; lookups read the board meanwhile")

    @property
    def busy(self) -> bool:
        return self.rebuilding or bool(self._parse)

    def reconcile(self) -> None:
        """Compare `done/`'s file names with the table, for folders whose mtime changed since last time."""
        known: dict[str, str] | None = None
        seen: set[Path] = set()
        relisted: set[Path] = set()
        for folder in subfolders(self.layout.done):
            seen.add(folder)
            try:
                mtime = folder.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if self._done_mtimes.get(folder) == mtime:
                continue
            self._done_mtimes[folder] = mtime
            if known is None:
                known = self.history.files_in(DONE)
            self._reconcile_folder(folder, known)
            relisted.add(folder)
        for gone in set(self._done_mtimes) - seen:
            del self._done_mtimes[gone]
            relisted.add(gone)            # a done/ folder removed: its rows are settled below
            if known is None:
                known = self.history.files_in(DONE)
        if known is not None:
            self._settle_vanished(known, relisted)

    def _reconcile_folder(self, folder: Path, known: dict[str, str]) -> None:
        agent = folder.name if folder != self.layout.done else ""
        for path in task_files_in(folder):
            relative = path.relative_to(self.layout.root).as_posix()
            sig = known.pop(relative, None)     # what remains in `known` afterwards has left its folder
            if sig is None or sig != signature(path)[1]:
                self._parse.append((path, DONE, agent))

    def _settle_vanished(self, remaining: dict[str, str], listed: set[Path]) -> None:
        """Rows whose file left a listed done/ folder: archived (maybe by a daemon killed mid-archive), or
        moved off the board (back to inbox/ to run again, or deleted)."""
        moves: list[tuple[str, str, str]] = []
        gone: list[str] = []
        for relative in remaining:
            path = self.layout.root / relative
            if path.parent not in listed or path.exists():
                continue
            archived = find_archived(self.layout, path.name)
            if archived is not None:
                moves.append((relative, archived.relative_to(self.layout.root).as_posix(), ARCHIVE))
            else:
                gone.append(relative)
        if moves:
            self.history.moved(moves)
            log.info("history.found_archived", count=len(moves))
        if gone:
            self.history.forget_files(gone)

    def step(self, *, limit: int = SLICE_FILES, budget_s: float = SLICE_S) -> list[Entry]:
        """One bounded slice of the pending work; returns the rows it wrote."""
        deadline = time.monotonic() + budget_s
        written: list[Entry] = []
        parsed = 0
        while parsed < limit and time.monotonic() < deadline:
            if not self._parse:
                if not self._folders:
                    break
                folder, area = self._folders.popleft()
                agent = folder.name if area == DONE and folder != self.layout.done else ""
                known = self.history.signatures_in(folder.relative_to(self.layout.root).as_posix())
                self._parse.extend((path, area, agent) for path in task_files_in(folder)
                                   if known.get(path.relative_to(self.layout.root).as_posix()) != signature(path)[1])
                continue
            path, area, agent = self._parse.popleft()
            written.extend(read_entries(self.layout.root, path, area, agent))
            parsed += 1
        self.parsed += parsed
        self.history.record(written)
        if self.rebuilding and not self._folders and not self._parse:
            self.rebuilding = False
            self.history.reset = False
            self.history.set_meta("complete", VERSION)
            log.info("history.rebuilt", parsed=self.parsed)
            self._done_mtimes.clear()
            self.reconcile()            # rows of a rebuild that resumed may name files gone since
        return written


def subfolders(parent: Path) -> list[Path]:
    """`done/<agent>/` or `archive/YYYY-MM/` folders (and the parent itself for flat layouts), sorted,
    skipping `_rejected`."""
    if not parent.is_dir():
        return []
    with os.scandir(parent) as entries:
        inner = sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.name != REJECTED)
    return [parent, *inner]


def task_files_in(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if is_task_name(e.name) and e.is_file(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def find_archived(layout: BoardLayout, name: str) -> Path | None:
    """Where a file of this name sits in `archive/` (one `stat` per month folder, no listing of files)."""
    for folder in reversed(subfolders(layout.archive)):
        candidate = folder / name
        with contextlib.suppress(OSError):
            if candidate.is_file():
                return candidate
    return None


def locate(layout: BoardLayout, task_id: str) -> tuple[Path, str] | None:
    """Where a file named after `task_id` sits among claimed and finished tasks, and its area
    (`assigned`, `done` or `archive`): a few `stat` calls per folder, no listing of files."""
    names = [task_id + suffix for suffix in (".yaml", ".yml")]
    for parent, area in ((layout.assigned, "assigned"), (layout.done, DONE), (layout.archive, ARCHIVE)):
        folders = subfolders(parent)
        for folder in reversed(folders) if area == ARCHIVE else folders:
            for name in names:
                candidate = folder / name
                if candidate.is_file() and task_id_from_path(candidate) == task_id:
                    return candidate, area
    return None
