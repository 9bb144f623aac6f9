"""Task transitions as notification events: the one place that reads a finished task file for them."""

from __future__ import annotations

from typing import Any

from conveyor.core.task import Task
from conveyor.notify.events import Event, cut


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def finished_event(task: Task, status: str, at: str) -> Event:
    """`task_done` (with the pull request or branch) or `task_failed` (with the error's kind and message)."""
    title = str(task.data.get("title") or "")
    if status == "done":
        result = _mapping(task.data.get("result"))
        pr_url = result.get("pr_url") if isinstance(result.get("pr_url"), str) else None
        branch = result.get("branch") if isinstance(result.get("branch"), str) else None
        text = f"done, pull request {pr_url}" if pr_url else f"done on branch {branch}" if branch else "done"
        return Event("task_done", task.id, task.agent, title, text, at, pr_url=pr_url, branch=branch)
    error = _mapping(task.data.get("error"))
    kind = str(error.get("kind") or "error")
    return Event("task_failed", task.id, task.agent, title, f"failed ({kind}): {cut(str(error.get('message') or ''))}",
                 at)


def needs_input_event(task: Task, question: str, at: str) -> Event:
    return Event("needs_input", task.id, task.agent, str(task.data.get("title") or ""),
                 f"needs an answer: {cut(question)}", at)
