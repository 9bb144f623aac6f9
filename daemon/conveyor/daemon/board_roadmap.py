"""A fleet's ROADMAP.md: items people plan on the base branch become tasks, and those tasks' progress
becomes status lines in the board branch's copy (Conveyor never pushes to the base branch).

The board's copy is rebuilt on each change from the base branch's text with the status of every roadmap
task the database knows re-applied (In Progress while it waits or runs, In Review with its pull request
or branch when done, Blocked with the reason when it failed), so a person's edits on the base branch and
Conveyor's progress never overwrite each other; an item the person marked Completed stays theirs. Items
the roadmap says run next (dependencies, `max_in_flight`) and that have no task yet become tasks, one id
per item (`roadmap-<number>-<slug>`), as in single-host mode (roadmap/sync.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from conveyor.config import Config
from conveyor.core import yamlio
from conveyor.core.errors import TaskFileError
from conveyor.core.task import Task, new_task_document, validate_document
from conveyor.roadmap.edit import set_status, status_blocked, status_in_progress, status_in_review
from conveyor.roadmap.model import RoadmapError, Status
from conveyor.roadmap.parse import parse_roadmap
from conveyor.roadmap.select import count_in_flight, next_runnable
from conveyor.roadmap.sync import CREATED_BY, ROADMAP_KEY, roadmap_task_id

log = structlog.get_logger("conveyor.daemon.board_roadmap")


@dataclass(frozen=True)
class RoadmapRow:
    """A roadmap task as the database knows it: its state, its document and (finished) its outcome."""

    task_id: str
    state: str
    document: str | None
    outcome: str | None


def plan(base_text: str, rows: list[RoadmapRow], settled: set[str], config: Config,
         now_iso: str) -> tuple[str, list[Task]]:
    """(the board's ROADMAP.md text, tasks to start now)."""
    text = base_text
    for row in rows:
        number = _number(row.document)
        if number is None:
            continue
        try:
            if parse_roadmap(text).item(number).status is Status.COMPLETED:
                continue                                   # the person's word on the base branch wins
            text = set_status(text, number, _line(row))
        except RoadmapError as exc:
            log.warning("fleet.roadmap_status_skipped", task_id=row.task_id, item=number, error=str(exc))
    settings = config.daemon.roadmap
    try:
        roadmap = parse_roadmap(text, source=settings.file)
    except RoadmapError as exc:
        log.error("fleet.roadmap_unreadable", file=settings.file, error=str(exc))
        return text, []
    selection = next_runnable(roadmap, in_flight_limit=settings.max_in_flight, in_flight=count_in_flight(roadmap))
    known = settled | {row.task_id for row in rows}
    started = []
    for item in selection.start:
        task_id = roadmap_task_id(item)
        if task_id in known:
            continue
        agent = item.agent or settings.default_agent
        document = new_task_document(
            task_id=task_id, agent=agent, title=item.title or item.label,
            description=(item.body.strip() or item.title) + "\n", artefacts=[], created_at=now_iso,
            created_by=CREATED_BY, extra={ROADMAP_KEY: {"file": settings.file, "number": item.number,
                                                        "title": item.title}})
        data = yamlio.dumps(document)
        try:
            task = validate_document(Path(f"assigned/{agent}/{task_id}.yaml"), document, data)
            text = set_status(text, item.number, status_in_progress(task_id))
        except (TaskFileError, RoadmapError) as exc:
            log.error("fleet.roadmap_item_skipped", item=item.number, task_id=task_id, error=str(exc))
            continue
        started.append(task)
        log.info("roadmap.task_created", item=item.number, task_id=task_id, agent=agent)
    return text, started


def _number(document: str | None) -> str | None:
    data = _mapping(document)
    item = data.get(ROADMAP_KEY)
    number = item.get("number") if isinstance(item, dict) else None
    return str(number) if number is not None else None


def _line(row: RoadmapRow) -> str:
    if row.state not in ("done", "error"):
        return status_in_progress(row.task_id)
    outcome = _mapping(row.outcome)
    if row.state == "done":
        result = _sub(outcome, "result")
        pr_url, branch = result.get("pr_url"), result.get("branch")
        if isinstance(pr_url, str) and pr_url:
            try:
                return status_in_review(pr_url)
            except RoadmapError:
                pass
        if isinstance(branch, str) and branch:
            return f"👀 In Review (branch {branch})"
        return status_blocked(f"task {row.task_id} finished without changes; see its result")
    error = _sub(outcome, "error")
    message = str(error.get("message") or "no reason recorded")
    return status_blocked(f"task {row.task_id} failed: {message}; run it again with a new task")


def _sub(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _mapping(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = yamlio.loads(text)
    except yamlio.YamlProblem:
        return {}
    return data if isinstance(data, dict) else {}
