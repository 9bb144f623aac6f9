"""The rules the file-based workflow's own task validator applies (sddevelopment-be/quickstart_agent-augmented-
development, `tools/validators/validate-task-schema.py` → `src/domain/collaboration/task_validator.py` at
141d273c), restated here from its documentation and behaviour so tests can check Conveyor's files against
them without copying that project's code.

Each rule returns a sentence when broken; an empty list means the upstream validator would accept the file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

STATUSES = {"new", "inbox", "assigned", "in_progress", "blocked", "done", "error"}
PRIORITIES = {"critical", "high", "medium", "normal", "low"}
TIMESTAMPS = ("created_at", "assigned_at", "started_at", "completed_at")


def utc_z(value: Any) -> bool:
    """ISO 8601 with a `T` and a `Z` suffix, as the workflow requires."""
    if not isinstance(value, str) or not value.endswith("Z") or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


def violations(task: dict[str, Any], stem: str | None = None) -> list[str]:
    return _fields(task, stem) + _blocks(task)


def _fields(task: dict[str, Any], stem: str | None) -> list[str]:
    found: list[str] = []
    if not task.get("id"):
        found.append("missing id")
    elif stem is not None and task["id"] != stem:
        found.append(f"id {task['id']!r} is not the file name {stem!r}")
    if not task.get("agent"):
        found.append("missing agent")
    status = task.get("status")
    if status not in STATUSES:
        found.append(f"status {status!r} is not one of {sorted(STATUSES)}")
    artefacts = task.get("artefacts", task.get("artifacts"))
    if not isinstance(artefacts, list) or not all(isinstance(a, str) for a in artefacts):
        found.append("artefacts must be a list of strings")
    if task.get("priority") is not None and task["priority"] not in PRIORITIES:
        found.append(f"priority {task['priority']!r} unknown")
    if task.get("context") is not None and not isinstance(task["context"], dict):
        found.append("context must be a mapping")
    for key in TIMESTAMPS:
        if task.get(key) is not None and not utc_z(str(task[key])):
            found.append(f"{key} is not ISO 8601 with Z")
    return found


def _blocks(task: dict[str, Any]) -> list[str]:
    """The result block belongs to `done` only, the error block to `error` only."""
    found: list[str] = []
    status = task.get("status")
    result, error = task.get("result"), task.get("error")
    if status == "done":
        found += _result_block(result)
    elif result is not None:
        found.append("a result block on a task that is not done")
    if status == "error":
        if not isinstance(error, dict) or not error.get("message"):
            found.append("error without an error block with a message")
        elif "timestamp" in error and not utc_z(str(error["timestamp"])):
            found.append("error.timestamp is not ISO 8601 with Z")
    elif error is not None:
        found.append("an error block on a task that is not in error")
    return found


def _result_block(result: Any) -> list[str]:
    if not isinstance(result, dict):
        return ["done without a result block"]
    found = [] if result.get("summary") else ["result.summary missing"]
    arts = result.get("artefacts", result.get("artifacts"))
    if not isinstance(arts, list) or not all(isinstance(a, str) for a in arts):
        found.append("result.artefacts must be a list of strings")
    if "completed_at" in result and not utc_z(str(result["completed_at"])):
        found.append("result.completed_at is not ISO 8601 with Z")
    return found
