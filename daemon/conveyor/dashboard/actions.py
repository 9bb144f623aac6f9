"""The only two things the dashboard changes, each exactly as a person editing the board would.

Answering writes `answer:` into a parked (`needs_input`) task's file; the daemon sees it and resumes the
agent. Retrying moves a failed task from `done/<agent>/` back into `inbox/` as new, as `conveyor task retry`
does. Nothing else (no command, no path, no config) can be reached from a request.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout, find_task
from conveyor.board.retry import retry_task
from conveyor.config import Config
from conveyor.core.errors import ConveyorError, TaskFileError
from conveyor.core.task import Task, parse_task
from conveyor.core.timeutil import utc_iso
from conveyor.dashboard.readers import valid_task_id

MAX_ANSWER = 8000
NEEDS_INPUT = "needs_input"


class ActionRefused(Exception):
    """Why a request cannot be carried out (shown to the person, HTTP 409/400)."""


def _task(config: Config, task_id: str) -> tuple[BoardLayout, Task]:
    if not valid_task_id(task_id):
        raise ActionRefused(f"{task_id!r} is not a task id")
    layout = BoardLayout(config.board_root)
    path = find_task(layout, task_id)
    if path is None:
        raise ActionRefused(f"no task {task_id!r} on the board")
    try:
        return layout, parse_task(path)
    except TaskFileError as exc:
        raise ActionRefused(f"{path.name} cannot be read: {exc.problems[0].render()}") from exc


def answer(config: Config, task_id: str, text: str, now: float) -> Path:
    """Write the answer into a task that waits for one."""
    text = text.strip()
    if not text:
        raise ActionRefused("the answer is empty; write what the agent should know")
    if len(text) > MAX_ANSWER:
        raise ActionRefused(f"the answer is {len(text)} characters; keep it under {MAX_ANSWER}")
    layout, task = _task(config, task_id)
    if task.data.get("status") != NEEDS_INPUT or task.path.parent.parent != layout.assigned:
        raise ActionRefused(f"task {task_id} is not waiting for an answer (status {task.data.get('status')})")
    if task.data.get("answer"):
        raise ActionRefused(f"task {task_id} already has an answer; the daemon will resume it")
    board.rewrite(task, {"answer": text, "answered_at": utc_iso(now)})
    return task.path


def retry(config: Config, task_id: str, now: float) -> Path:
    """Move a failed task back into inbox/ as new (board.retry: its last outcome kept in `retries:`)."""
    layout, task = _task(config, task_id)
    if task.data.get("status") != "error" or not task.path.is_relative_to(layout.done):
        raise ActionRefused(f"task {task_id} has not failed (status {task.data.get('status')}); only failed "
                            "tasks can be retried here")
    try:
        return retry_task(layout, task_id, utc_iso(now))
    except ConveyorError as exc:
        raise ActionRefused(str(exc)) from exc
