"""Finish publishing work that is done: retry a push or a pull request that failed after the commit.

Publishing never fails finished work: when the push or the API fails after the commit (a 5xx, a timeout, a
refusal, an answer the client cannot read), the task still ends `done` with its branch, and its result
says `publish_pending: push | pull_request`. This periodic job publishes those again. It is idempotent: the
push of the same commit is a no-op and the pull request is looked up by head branch before one is opened.
A person stops the retries by setting `publish_stop: true` in the task's result; `conveyor status` lists
what is pending.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from conveyor.board import layout as board
from conveyor.board.history import DONE, History
from conveyor.config import Config
from conveyor.core.errors import ConveyorError, TaskFileError
from conveyor.core.follow_up import FollowUp
from conveyor.core.state_files import HISTORY_FILE
from conveyor.core.task import Task, parse_task
from conveyor.pipeline.size_gate import TOO_LARGE_LABEL
from conveyor.publish.follow_up import publish_follow_up
from conveyor.publish.github_types import CHANGES_LABEL, UNREVIEWED_LABEL
from conveyor.publish.task_branch import publish_commit
from conveyor.runner.types import Tokens
from conveyor.workspace import git

log = structlog.get_logger("conveyor.pipeline.republish")
PENDING_KEY = "publish_pending"
STOP_KEY = "publish_stop"


@dataclass(frozen=True)
class _Totals:
    tokens: Tokens
    cost: float
    duration_s: float = 0.0
    turns: int | None = None


def _candidates(config: Config) -> list[Path]:
    """Done files that may owe a publication: those the history table marks (no file read), or, with no
    complete table (a daemon that has not built it yet), every file of done/ whose text names the key."""
    path = config.state_dir / HISTORY_FILE
    history = History(path, readonly=True)
    try:
        if path.is_file() and history.complete:
            return [config.board_root / entry.file for entry in history.in_area(DONE)
                    if _mapping(entry.facts.get("result")).get(PENDING_KEY)]
    except sqlite3.Error:
        pass
    finally:
        history.close()
    found = []
    for candidate in sorted((config.board_root / "done").glob("*/*.yaml")):
        with contextlib.suppress(OSError):
            if PENDING_KEY in candidate.read_text(encoding="utf-8", errors="replace"):
                found.append(candidate)   # cheap filter: most done tasks never had trouble publishing
    return found


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def pending_tasks(config: Config) -> list[Task]:
    """Done tasks whose publishing is still owed (and not stopped by a person); each candidate is read
    again, so a publication settled or stopped since the table was written is skipped."""
    found = []
    for path in _candidates(config):
        try:
            task = parse_task(path)
        except (OSError, TaskFileError):
            continue
        result = task.data.get("result")
        if isinstance(result, dict) and result.get(PENDING_KEY) and not result.get(STOP_KEY):
            found.append(task)
    return found


def retry_publications(config: Config, env: Mapping[str, str]) -> list[str]:
    """Publish every pending task again; returns the ids whose pull request (or push) now succeeded."""
    settled = []
    for task in pending_tasks(config):
        try:
            if _retry(config, env, task):
                settled.append(task.id)
        except (ConveyorError, OSError) as exc:
            log.error("publish.retry_failed", task_id=task.id, error=str(exc))
    return settled


def _retry(config: Config, env: Mapping[str, str], task: Task) -> bool:
    result: dict[str, Any] = dict(task.data["result"])
    branch, sha = result.get("branch"), result.get("commit")
    if not isinstance(branch, str) or not isinstance(sha, str):
        return False
    if task.follow_up is not None:   # onto the PR's own branch with an answer, never a pull request of its own
        return _retry_follow_up(config, env, task, task.follow_up, result, sha)
    given = result.get("tokens")
    tokens: dict[str, Any] = given if isinstance(given, dict) else {}
    totals = _Totals(Tokens(**{key: int(tokens.get(key) or 0) for key in ("input", "output", "cache_read",
                                                                          "cache_write")}),
                     float(result.get("cost_usd") or 0.0))
    labels, draft = _held(result)
    checks = [check for check in result.get("checks") or [] if isinstance(check, dict)]
    published = publish_commit(
        config, env, task, branch, sha=sha, summary=str(result.get("agent_summary") or result.get("summary") or ""),
        files=[str(path) for path in result.get("artefacts") or []], checks=checks, totals=totals,
        tool=result.get("tool"), model=result.get("model"),
        partial_reason=result.get("partial_reason") if result.get("partial") else None,
        notes=["_Published by a retry after publishing failed when the task finished._"],
        extra_labels=labels, draft=draft)
    result.update({"publish": published.message, "pr_url": published.pr_url or result.get("pr_url")})
    if published.pending:
        result[PENDING_KEY] = published.pending
        log.info("publish.still_pending", task_id=task.id, pending=published.pending)
    else:
        result.pop(PENDING_KEY, None)
        log.info("publish.retried", task_id=task.id, pr_url=published.pr_url)
    board.rewrite(task, {"result": result})
    return published.pending is None


def _retry_follow_up(config: Config, env: Mapping[str, str], task: Task, follow_up: FollowUp,
                     result: dict[str, Any], sha: str) -> bool:
    review = result.get("review")
    published = publish_follow_up(
        config, env, task.id, follow_up, sha=sha, summary=str(result.get("agent_summary") or result.get("summary")
                                                              or ""),
        files=[str(path) for path in result.get("artefacts") or []],
        review=str(review.get("status")) if isinstance(review, dict) and review.get("status") else None,
        labels=_held(result)[0])
    record = dict(result.get("follow_up") or {})
    record.update({"status": published.outcome, "reply_url": published.reply_url or record.get("reply_url"),
                   "pushed": published.outcome == "pushed" or published.pending == "reply"})
    result.update({"publish": published.message, "follow_up": record})
    if published.pending:
        result[PENDING_KEY] = published.pending
        log.info("publish.still_pending", task_id=task.id, pending=published.pending)
    else:   # pushed and answered, or nothing more can be pushed (the PR closed, its branch moved): settled
        result.pop(PENDING_KEY, None)
        work = result.pop("work_branch", None)
        if isinstance(work, str) and work.startswith("conveyor/"):
            git.delete_branch(config.repo, work)
        log.info("publish.retried", task_id=task.id, outcome=published.outcome)
    board.rewrite(task, {"result": result})
    return published.pending is None and published.outcome == "pushed"


def _held(result: Mapping[str, Any]) -> tuple[list[str], bool]:
    """The labels and draft flag the first try would have used (review outcome, size gate)."""
    labels = [str(label) for label in result.get("labels") or []]
    review = result.get("review")
    status = review.get("status") if isinstance(review, dict) else None
    if status == "unreviewed":
        labels.append(UNREVIEWED_LABEL)
    elif status == "changes_requested":
        labels.append(CHANGES_LABEL)
    labels = list(dict.fromkeys(labels))
    return labels, bool({UNREVIEWED_LABEL, CHANGES_LABEL, TOO_LARGE_LABEL} & set(labels))
