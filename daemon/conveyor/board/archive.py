"""Archival: finished tasks older than `archive_after_days` leave `done/` for `archive/YYYY-MM/`.

The month is the month of completion (UTC), so an archive folder holds what finished that month. Files
move by rename without replacing anything (an id already archived stays where it is, with a warning);
`_rejected/` is not archived: those files wait for a person to fix them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from conveyor.board.layout import BoardLayout, task_files
from conveyor.core import yamlio
from conveyor.core.fsops import rename_noreplace
from conveyor.core.task import task_id_from_path
from conveyor.core.timeutil import parse_iso

log = structlog.get_logger("conveyor.board.archive")
DAY_S = 86_400.0


@dataclass(frozen=True)
class Archived:
    task_id: str
    agent: str
    source: Path
    target: Path


def completed_at(path: Path) -> float | None:
    """When a finished task completed: its `completed_at` (or `completed`), else the file's mtime."""
    try:
        document = yamlio.loads(yamlio.read_limited(path))
    except yamlio.YamlProblem:
        document = None
    if isinstance(document, dict):
        for key in ("completed_at", "completed"):
            value = document.get(key)
            moment = parse_iso(str(value)) if value else None
            if moment is not None:
                return moment
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def archive_finished(layout: BoardLayout, now: float, after_days: int) -> list[Archived]:
    """Move every task in `done/` completed more than `after_days` before `now`; returns what moved."""
    cutoff = now - after_days * DAY_S
    moved: list[Archived] = []
    for path in list(task_files(layout.done)):
        finished = completed_at(path)
        if finished is None or finished > cutoff:
            continue
        target = layout.archive / time.strftime("%Y-%m", time.gmtime(finished)) / path.name
        if _move(path, target):
            moved.append(Archived(task_id_from_path(path), _agent_of(layout, path), path, target))
    if moved:
        log.info("archive.moved", count=len(moved), after_days=after_days)
    return moved


def _agent_of(layout: BoardLayout, path: Path) -> str:
    return path.parent.name if path.parent != layout.done else ""


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
    yamlio.fsync_dir(target.parent)
    return True
