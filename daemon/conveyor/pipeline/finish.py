"""The one way a task leaves a run: done (result block), error (error block) or back to wait in assigned/.

Both the pipeline and start-up recovery end tasks here, so a finished file looks the same whichever path
wrote it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.coordination.base import Fence
from conveyor.core.errors import GitError
from conveyor.core.printable import printable_data
from conveyor.core.task import Task, TaskStatus
from conveyor.core.timeutil import utc_iso

log = structlog.get_logger("conveyor.pipeline")
FINISH_RETRY_S = 60.0   # a task whose file could not be finished (full disk) is tried again this much later


class Disposition(StrEnum):
    DONE = "done"          # finished: result block written, file in done/<agent>/
    FAILED = "failed"      # finished with status error, file in done/<agent>/
    REQUEUED = "requeued"  # stays in assigned/; run again later (provider limit, retryable failure, shutdown)
    PARKED = "parked"      # stays in assigned/ as needs_input until a person answers (pipeline.questions)
    LOST = "lost"          # a fleet gave the task's lease to another node: nothing written, this node forgets it
    CANCELLED = "cancelled"  # its file was deleted while it ran: stopped, nothing committed or written back


@dataclass
class Report:
    disposition: Disposition
    task: Task
    not_before: float = 0.0           # for REQUEUED: earliest time to try again
    reason: str = ""
    paused_tools: dict[str, float] = field(default_factory=dict)   # tool → resume time (provider limits)


def finish(task: Task, layout: BoardLayout, now: float, result: dict[str, Any]) -> Report:
    """`status: done` with its result block (and `result.completed_at`, which ADR-009 tooling reads), moved to
    done/<agent>/. An `error` block of an earlier failure (a person set the task back to `assigned`) is
    kept as `previous_errors`: the workflow's validator allows an error block only on `status: error`."""
    updates: dict[str, Any] = {"status": TaskStatus.DONE.value, "completed_at": utc_iso(now),
                               "result": printable_data({**result, "completed_at": utc_iso(now)})}
    _settle_blocks(task, "error")
    board.rewrite(task, updates)
    board.move(task, layout.done_dir(task.agent))
    return Report(Disposition.DONE, task)


def _settle_blocks(task: Task, stale: str) -> None:
    """Move a block the new status does not allow (`error` on done, `result` on error) into a history list."""
    block = task.data.pop(stale, None)
    if block is None:
        return
    key = "previous_errors" if stale == "error" else "previous_results"
    history = task.data.get(key)
    task.data[key] = [*(history if isinstance(history, list) else []), block]


def fail(task: Task, layout: BoardLayout, now: float, message: str, *, kind: str, log_path: str | None = None,
         extra: Mapping[str, Any] | None = None) -> Report:
    """`status: error` with an error block (message, kind, timestamp, log) moved to done/<agent>/; a board
    that cannot be written (full disk) leaves the task to be finished again later."""
    error: dict[str, Any] = {"message": message, "kind": kind, "timestamp": utc_iso(now)}
    if log_path:
        error["log"] = log_path
    error.update(extra or {})
    error = printable_data(error)   # agents' and verify commands' words are data (core.printable)
    try:
        _settle_blocks(task, "result")
        board.rewrite(task, {"status": TaskStatus.ERROR.value, "completed_at": utc_iso(now), "error": error})
        board.move(task, layout.done_dir(task.agent))
    except board.TaskGone:
        raise
    except (OSError, GitError) as exc:
        log.error("task.finish_failed", task_id=task.id, error=str(exc))
        return Report(Disposition.REQUEUED, task, not_before=now + FINISH_RETRY_S, reason=f"cannot finish: {exc}")
    return Report(Disposition.FAILED, task, reason=message)


def cancelled(task: Task, reason: str) -> Report:
    """The task's file is gone: the run ends without writing anything back."""
    return Report(Disposition.CANCELLED, task, reason=reason)


def requeue(task: Task, reason: str, *, spent: bool, not_before: float = 0.0) -> Report:
    """Put the task back to wait in `assigned/`; an attempt is spent only for the task's own failures."""
    attempt = task.attempt if spent else max(task.attempt - 1, 0)
    board.rewrite(task, {"status": TaskStatus.ASSIGNED.value, "attempt": attempt})
    return Report(Disposition.REQUEUED, task, not_before=not_before, reason=reason)


def recorded(report: Report, fence: Fence, status: str) -> Report:
    """A finished file counts once the fence takes it as the task's outcome (in a fleet the node's board is
    its own clone's, and the leader writes the outcome to the board branch). A stale node's file is
    removed again: its result never lands anywhere."""
    if report.disposition not in (Disposition.DONE, Disposition.FAILED):
        return report
    if fence.commit(report.task.id, status, report.task.path):
        return report
    return lost(report.task)


def lost(task: Task) -> Report:
    """Another node holds the task now (its lease expired here): this node's copy of the task file (in its
    own clone: the board is the leader's) is forgotten, and nothing else is written."""
    with contextlib.suppress(OSError):
        task.path.unlink()
    return Report(Disposition.LOST, task, reason="the lease passed to another node")


def park(task: Task, question: str, now: float, *, session_id: str | None, tool: str) -> Report:
    """`status: needs_input` with the agent's question; the attempt is not spent (the answer continues it)."""
    board.rewrite(task, {"status": "needs_input", "question": question, "asked_at": utc_iso(now),
                         "session_id": session_id, "asked_tool": tool, "attempt": max(task.attempt - 1, 0)})
    return Report(Disposition.PARKED, task, reason=question)
