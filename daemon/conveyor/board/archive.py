"""Archival: finished tasks older than `archive_after_days` leave `done/` for `archive/YYYY-MM/`, a slice at a time.

The month is the month of completion (UTC), so an archive folder holds what finished that month. The
candidates come from the history table (oldest first, through its index), never from parsing `done/`, and
one slice moves at most `limit` files, so a first archival of 50,000 tasks is many short passes of the
loop rather than one long one. Files move by rename without replacing anything (an id already archived
stays where it is, with a warning); `_rejected/` is not archived: those files wait for a person.
A daemon killed between a rename and the table's update loses nothing: the start-up reconcile finds the
file in `archive/` and puts the table right.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from conveyor.board.history import ARCHIVE, History
from conveyor.board.layout import BoardLayout
from conveyor.core import yamlio
from conveyor.core.fsops import rename_noreplace

log = structlog.get_logger("conveyor.board.archive")
DAY_S = 86_400.0
SLICE = 200          # files moved per slice at most


@dataclass(frozen=True)
class Archived:
    task_id: str
    agent: str
    status: str
    source: Path
    target: Path


@dataclass
class Slice:
    moved: list[Archived] = field(default_factory=list)
    more: bool = False                                  # candidates are left: run another slice soon
    cursor: tuple[float, str] | None = None             # where the next slice starts (past files that stayed)


def archive_slice(layout: BoardLayout, history: History, now: float, after_days: int, *,
                  limit: int = SLICE, cursor: tuple[float, str] | None = None) -> Slice:
    """Move up to `limit` tasks of `done/` completed more than `after_days` before `now`, oldest first."""
    cutoff = now - after_days * DAY_S
    candidates = history.archivable(cutoff, limit + 1, after=cursor)
    result = Slice(more=len(candidates) > limit)
    moves: list[tuple[str, str, str]] = []
    folders: set[Path] = set()
    for entry in candidates[:limit]:
        result.cursor = (entry.completed_at, entry.file)
        source = layout.root / entry.file
        target = layout.archive / time.strftime("%Y-%m", time.gmtime(entry.completed_at)) / source.name
        if not _move(source, target):
            continue
        folders.add(target.parent)
        moves.append((entry.file, target.relative_to(layout.root).as_posix(), ARCHIVE))
        agent = source.parent.name if source.parent != layout.done else ""
        result.moved.append(Archived(entry.task_id, agent, entry.status, source, target))
    for folder in folders:
        yamlio.fsync_dir(folder)
    if moves:
        history.moved(moves)
        log.info("archive.moved", count=len(moves), after_days=after_days, more=result.more)
    return result


def _move(source: Path, target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        rename_noreplace(source, target)
    except FileExistsError:
        log.warning("archive.target_exists", file=str(source), target=str(target),
                    fix="two finished tasks share this id; rename one of them")
        return False
    except FileNotFoundError:
        return False
    return True
