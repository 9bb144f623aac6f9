"""Start-up recovery (design section 6): nothing left in `assigned/` by a crash is lost or done twice.

- A task whose branch already holds its commit (trailer `Conveyor-Task: <id>`) is finished from that
  commit instead of running the agent again.
- A task that was running (`in_progress`) spent an attempt; it runs again as attempt n+1, or is marked
  `error` once `attempts` are used up.
- A task that was claimed but never started simply waits its turn again.
- Telemetry rows left `running` become `interrupted`; worktrees left behind are removed.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from conveyor import board, git
from conveyor.board import BoardLayout
from conveyor.config import Config
from conveyor.errors import GitError, TaskFileError
from conveyor.pipeline import Disposition, Report
from conveyor.task import Task, parse_task
from conveyor.telemetry import Telemetry
from conveyor.timeutil import Clock, utc_iso

log = structlog.get_logger("conveyor.recovery")


@dataclass
class RecoveryOutcome:
    ready: list[Task] = field(default_factory=list)
    finished: list[Report] = field(default_factory=list)


def recover(config: Config, layout: BoardLayout, telemetry: Telemetry, clock: Clock) -> RecoveryOutcome:
    outcome = RecoveryOutcome()
    interrupted = telemetry.mark_interrupted(clock())
    if interrupted:
        log.warning("recovery.telemetry_interrupted", rows=interrupted)
    reap_worktrees(config, keep=set())
    for path in list(board.task_files(layout.assigned)):
        try:
            task = parse_task(path)
        except TaskFileError as exc:
            board.reject(layout, path, exc.problems, utc_iso(clock()))
            log.error("recovery.rejected", file=str(path), problems=[p.render() for p in exc.problems])
            continue
        report = _recover_one(task, config, layout, telemetry, clock)
        if report is None:
            outcome.ready.append(task)
        else:
            outcome.finished.append(report)
    if outcome.ready or outcome.finished:
        log.info("recovery.done", requeued=len(outcome.ready), finished=len(outcome.finished))
    return outcome


def _recover_one(task: Task, config: Config, layout: BoardLayout, telemetry: Telemetry,
                 clock: Clock) -> Report | None:
    bound = log.bind(task_id=task.id)
    branch = f"conveyor/{task.id}"
    try:
        sha = git.find_task_commit(config.repo, branch, task.id)
    except GitError:
        sha = None
    if sha is not None:
        bound.info("recovery.resume_from_commit", commit=sha)
        return _finish_from_commit(task, config, layout, telemetry, clock, branch, sha)
    status = str(task.data.get("status") or "")
    if status != "in_progress":
        return None
    if task.attempt >= config.daemon.attempts:
        error = {"message": f"interrupted during attempt {task.attempt} of {config.daemon.attempts} "
                            "(the daemon stopped or crashed); no attempts left",
                 "kind": "interrupted", "timestamp": utc_iso(clock())}
        board.rewrite(task, {"status": "error", "completed_at": utc_iso(clock()), "error": error})
        board.move(task, layout.done_dir(task.agent))
        bound.error("recovery.attempts_exhausted", attempts=task.attempt)
        return Report(Disposition.FAILED, task, reason=error["message"])
    git.delete_branch(config.repo, branch)
    board.rewrite(task, {"status": "assigned"})
    bound.info("recovery.requeued", next_attempt=task.attempt + 1)
    return None


def _finish_from_commit(task: Task, config: Config, layout: BoardLayout, telemetry: Telemetry, clock: Clock,
                        branch: str, sha: str) -> Report:
    rows = [row for row in telemetry.rows_for_task(task.id) if row["outcome"] == "ok"]
    last: dict[str, Any] = rows[-1] if rows else {}
    result: dict[str, Any] = {
        "summary": "committed before a restart; finished by start-up recovery",
        "branch": branch, "commit": sha, "pr_url": None,
        "tool": last.get("tool"), "model": last.get("model"),
        "tokens": {"input": last.get("input_tokens", 0), "output": last.get("output_tokens", 0),
                   "cache_read": last.get("cache_read_tokens", 0), "cache_write": last.get("cache_write_tokens", 0)},
        "cost_usd": last.get("cost_usd", 0.0),
    }
    if last:
        telemetry.record_result(int(last["id"]), commit_sha=sha, pr_url=None, branch=branch)
    board.rewrite(task, {"status": "done", "completed_at": utc_iso(clock()), "result": result})
    board.move(task, layout.done_dir(task.agent))
    return Report(Disposition.DONE, task)


def reap_worktrees(config: Config, keep: set[str]) -> int:
    """Remove worktrees under the worktrees folder whose task is not running; returns how many."""
    root = config.worktrees_dir
    removed = 0
    with contextlib.suppress(GitError):
        for entry in git.list_worktrees(config.repo):
            if entry.path.parent == root and entry.path.name not in keep:
                git.remove_worktree(config.repo, entry.path)
                removed += 1
    if root.is_dir():
        for leftover in root.iterdir():
            if leftover.name not in keep and leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
                removed += 1
    if removed:
        log.info("worktrees.reaped", removed=removed)
    return removed


def leftover_paths(config: Config) -> list[Path]:
    """Worktree folders that exist right now (for status and tests)."""
    root = config.worktrees_dir
    return sorted(root.iterdir()) if root.is_dir() else []
