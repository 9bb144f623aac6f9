"""Keeping ROADMAP.md and the board in step: planned items become tasks, task events become status lines.

Every item gets at most one task: its id is derived from the item (`roadmap-<number>-<slug>`) and the
whole board is searched before one is written, so a restart, a rescan racing a file event, or a crash
between writing the task and writing its status line never makes a second one. A Planned item whose
task already ran is left alone (and said so): to run it again, its old task must leave the board.

Status lines are written only for the item whose status still names the task (its id, branch or pull
request); an item whose status the author changed is theirs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.core import yamlio
from conveyor.core.logs import get_logger
from conveyor.core.task import Task, new_task_document, slugify
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.roadmap.edit import status_blocked, status_completed, status_in_progress, status_in_review
from conveyor.roadmap.file import Locate, StatusWrite, WriteOutcome, read_roadmap, update_status
from conveyor.roadmap.model import Roadmap, RoadmapError, RoadmapItem, Status
from conveyor.roadmap.select import count_in_flight, next_runnable

log = get_logger("conveyor.roadmap")
ROADMAP_KEY = "roadmap_item"      # in a task made from the roadmap: {file, number, title}
ID_PREFIX = "roadmap-"
CREATED_BY = "conveyor-roadmap"
_BRANCH_IN_STATUS = re.compile(r"conveyor/([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
Record = Callable[[str, str, str, str], None]   # (event, task id, agent, detail) → WORKFLOW_LOG
Merged = Callable[[str, Mapping[str, Any]], bool]   # (task id, its document) → merged into its base?


def roadmap_task_id(item: RoadmapItem) -> str:
    """The one id an item's task can have: `roadmap-<number>-<slug of title>` ("roadmap-3.5-board-hygiene")."""
    return f"{ID_PREFIX}{item.number}-{slugify(item.title or 'item')}"


def is_roadmap_task(task: Task) -> bool:
    return isinstance(task.data.get(ROADMAP_KEY), dict) or task.id.startswith(ID_PREFIX)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _names_task(item: RoadmapItem, task_id: str, pr_url: str | None) -> bool:
    """Whether an item's status line is about this task (its id, its branch, or its pull request)."""
    if item.task_id == task_id or (pr_url and item.pr_url == pr_url):
        return True
    return any(match == task_id for match in _BRANCH_IN_STATUS.findall(item.status_text))


def _locate_task(task_id: str, pr_url: str | None) -> Locate:
    return lambda roadmap: next((i for i in roadmap if _names_task(i, task_id, pr_url)), None)


def _locate_unchanged(item: RoadmapItem) -> Locate:
    """The same item with the same status text as when it was chosen (else the author changed it)."""
    def locate(roadmap: Roadmap) -> RoadmapItem | None:
        found = roadmap.get(item.number)
        return found if found is not None and found.status_text == item.status_text else None
    return locate


@dataclass
class RoadmapSync:
    """Owned by the daemon's loop; every method runs on the loop thread."""

    config: Config
    layout: BoardLayout
    clock: Clock
    record: Record
    before_swap: Callable[[], None] | None = None      # tests: an author's save racing the write
    _synced: tuple[int, int, int] | None = None
    _warned: set[str] = field(default_factory=set)

    @property
    def path(self) -> Path:
        return self.config.repo / self.config.daemon.roadmap.file

    @property
    def enabled(self) -> bool:
        # a fleet's ROADMAP.md is the board leader's, on the board branch (daemon/board_roadmap.py)
        return self.config.daemon.roadmap.enabled and self.config.daemon.coordination is None

    # ------------------------------------------------------------------ roadmap → tasks
    def sync(self, *, force: bool = False) -> list[str]:
        """Start what the roadmap says runs next; returns the ids of tasks created. Skips an unchanged file."""
        if not self.enabled:
            return []
        signature = _signature(self.path)
        if signature is None or (signature == self._synced and not force):
            return []
        self._synced = signature
        read = read_roadmap(self.path)
        if read is None:
            return []
        _, roadmap = read
        if self._settle_finished(roadmap):
            read = read_roadmap(self.path)
            if read is None:
                return []
            _, roadmap = read
        settings = self.config.daemon.roadmap
        selection = next_runnable(roadmap, in_flight_limit=settings.max_in_flight, in_flight=count_in_flight(roadmap))
        created = []
        for item in selection.start:
            task_id = self._start(item)
            if task_id is not None:
                created.append(task_id)
        return created

    def _settle_finished(self, roadmap: Roadmap) -> bool:
        """Write the status line a finish would have written for In Progress items whose task is already in
        done/: a daemon stopped between done/ and the write-back leaves them, holding a `max_in_flight`
        slot for ever. Returns whether any line was written."""
        settled = False
        for item in roadmap:
            if item.status is not Status.IN_PROGRESS or not item.task_id:
                continue
            path = board.find_task(self.layout, item.task_id)
            if path is None or path.is_relative_to(self.layout.rejected) or not (
                    path.is_relative_to(self.layout.done) or path.is_relative_to(self.layout.archive)):
                continue
            document = yamlio.read_mapping(path)
            status = str(document.get("status") or "").lower() if document is not None else ""
            if document is None or status not in ("done", "error"):
                continue
            log.warning("roadmap.status_owed", item=item.number, task_id=item.task_id, status=status)
            self.task_finished(Task(path, document), status)
            settled = True
        return settled

    def _start(self, item: RoadmapItem) -> str | None:
        agent = item.agent or self.config.daemon.roadmap.default_agent
        task_id = roadmap_task_id(item)
        existing = board.find_task(self.layout, task_id)
        if existing is not None and not existing.is_relative_to(self.layout.inbox) \
                and not existing.is_relative_to(self.layout.assigned):
            self._warn_already_ran(item, task_id, existing)
            return None
        created = None
        if existing is None and board.create_task(self.layout, self._document(item, task_id, agent)) is not None:
            created = task_id
            self.record("created", task_id, agent, f"from {self.config.daemon.roadmap.file} item {item.number}")
            log.info("roadmap.task_created", item=item.number, task_id=task_id, agent=agent)
        self._write(_locate_unchanged(item), status_in_progress(task_id), agent, task_id)
        return created

    def _warn_already_ran(self, item: RoadmapItem, task_id: str, existing: Path) -> None:
        if task_id in self._warned:
            return
        self._warned.add(task_id)
        log.warning("roadmap.item_already_ran", item=item.number, task_id=task_id, file=str(existing),
                    fix=f"to run item {item.number} again, move {existing} off the board; to skip it, "
                        "mark it Completed")

    def _document(self, item: RoadmapItem, task_id: str, agent: str) -> dict[str, Any]:
        body = item.body.strip() or item.title
        return new_task_document(
            task_id=task_id, agent=agent, title=item.title or item.label, description=body + "\n",
            artefacts=[], created_at=utc_iso(self.clock()), created_by=CREATED_BY,
            extra={ROADMAP_KEY: {"file": self.config.daemon.roadmap.file, "number": item.number,
                                 "title": item.title}})

    # ------------------------------------------------------------------ task events → status lines
    def task_finished(self, task: Task, status: str) -> None:
        """Done → In Review (pull request, or branch); error → Blocked (reason)."""
        if not self.enabled or not is_roadmap_task(task):
            return
        result = _mapping(task.data.get("result"))
        if status == "done":
            line = self._review_status(task, result)
        else:
            error = _mapping(task.data.get("error"))
            message = str(error.get("message") or "no reason recorded")
            if error.get("kind") == "no_changes":   # `expect_changes` is task-file advice; an item has no place for it
                message = "the agent changed no file; say in the item what should change"
            line = status_blocked(f"task {task.id} failed: {message}; run it again with "
                                  f"`conveyor task retry {task.id}`")
        self._write(_locate_task(task.id, None), line, task.agent, task.id)

    def _review_status(self, task: Task, result: Mapping[str, Any]) -> str:
        pr_url, branch = result.get("pr_url"), result.get("branch")
        if isinstance(pr_url, str) and pr_url:
            try:
                return status_in_review(pr_url)
            except RoadmapError:
                log.warning("roadmap.odd_pr_url", task_id=task.id, pr_url=pr_url)
        if isinstance(branch, str) and branch:
            return f"👀 In Review (branch {branch})"
        return status_blocked(f"task {task.id} finished without changes; see its result")

    def task_rejected(self, task_id: str, agent: str, reason: str) -> None:
        if self.enabled and task_id.startswith(ID_PREFIX):
            self._write(_locate_task(task_id, None), status_blocked(f"task {task_id} rejected: {reason}"),
                        agent, task_id)

    def check_merged(self, merged: Merged) -> int:
        """In Review items whose task's work reached its base branch become Completed; returns how many."""
        if not self.enabled:
            return 0
        read = read_roadmap(self.path)
        if read is None:
            return 0
        completed = 0
        for item in read[1]:
            if item.status is not Status.IN_REVIEW or not item.is_leaf:
                continue
            found = self._task_of(item)
            if found is None:
                continue
            task_id, document = found
            if merged(task_id, document):
                agent = str(document.get("agent") or "")
                written = self._write(_locate_unchanged(item), status_completed(), agent, task_id)
                completed += written.outcome is WriteOutcome.WRITTEN
        return completed

    def _task_of(self, item: RoadmapItem) -> tuple[str, dict[str, Any]] | None:
        """The finished task an In Review line is about: named by branch, else the item's own task id."""
        named = _BRANCH_IN_STATUS.findall(item.status_text)
        candidates = [*named, roadmap_task_id(item)] if named else [roadmap_task_id(item)]
        for task_id in candidates:
            path = board.find_task(self.layout, task_id)
            document = yamlio.read_mapping(path) if path is not None else None
            if document is None:
                continue
            result = _mapping(document.get("result"))
            if named or (item.pr_url and result.get("pr_url") == item.pr_url):
                return task_id, document
        return None

    # ------------------------------------------------------------------ writing
    def _write(self, locate: Locate, line: str, agent: str, task_id: str) -> StatusWrite:
        written = update_status(self.path, locate, line, before_swap=self.before_swap)
        if written.outcome is WriteOutcome.WRITTEN:
            self.record("roadmap", task_id or "-", agent, f"item {written.number}: {line}")
            log.info("roadmap.status_written", item=written.number, status=line, task_id=task_id or None)
        elif written.outcome is not WriteOutcome.UNCHANGED:
            log.warning("roadmap.status_not_written", outcome=written.outcome.value, status=line,
                        task_id=task_id or None, item=written.number, detail=written.detail or None)
        return written


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}
