"""Parked tasks (`needs_input`, pipeline.questions): which have an answer now, and which waited too long.

Looked at by a periodic job on the loop's thread: an answered task goes back to `assigned` status and into
the ready queue; one unanswered past `question_timeout_s` fails with `kind: unanswered`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.core.errors import TaskFileError
from conveyor.core.task import Task, parse_task
from conveyor.core.timeutil import parse_iso
from conveyor.pipeline.finish import Report, fail
from conveyor.pipeline.questions import is_parked

log = structlog.get_logger("conveyor.daemon")
CHECK_EVERY_S = 2.0


@dataclass
class Due:
    answered: list[Task] = field(default_factory=list)
    expired: list[Report] = field(default_factory=list)


class Parked:
    """The parked tasks' files (only these are read again: a flood in assigned/ costs nothing here)."""

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}

    def add(self, task: Task) -> None:
        self.paths[task.id] = task.path

    def check(self, config: Config, layout: BoardLayout, now: float) -> Due:
        due = check(config, layout, now, list(self.paths.values()))
        for task in due.answered:
            self.paths.pop(task.id, None)
        for report in due.expired:
            self.paths.pop(report.task.id, None)
        for task_id, path in list(self.paths.items()):
            if not path.exists():          # moved or deleted by a person: not ours to watch any more
                self.paths.pop(task_id)
        return due


def check(config: Config, layout: BoardLayout, now: float, paths: list[Path]) -> Due:
    due = Due()
    for path in paths:
        try:
            task = parse_task(path)
        except (TaskFileError, OSError):
            continue
        if not is_parked(task):
            continue
        answer = task.data.get("answer")
        if isinstance(answer, str) and answer.strip():
            board.rewrite(task, {"status": "assigned"})
            log.info("task.answered", task_id=task.id)
            due.answered.append(task)
            continue
        asked = parse_iso(str(task.data.get("asked_at") or "")) or now
        timeout = config.daemon.question_timeout_s
        if now - asked >= timeout:
            log.warning("task.unanswered", task_id=task.id, waited_s=round(now - asked))
            due.expired.append(fail(task, layout, now, f"no answer to the agent's question within {timeout:.0f} s "
                                    f"(question_timeout_s): {task.data.get('question')}", kind="unanswered"))
    return due
