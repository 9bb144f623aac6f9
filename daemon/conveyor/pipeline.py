"""Run one claimed task: worktree → agent (with fallbacks) → commit → finish; the worktree always goes.

The pipeline returns a `Disposition` instead of deciding what happens next, so the daemon stays the
only place that knows about queues, pauses and shutdown.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from conveyor import board, git
from conveyor.agent_run import Invocation, InvocationRequest, invoke
from conveyor.board import BoardLayout
from conveyor.config import Config
from conveyor.errors import ConveyorError, GitError, ToolUnavailable
from conveyor.pricing import invocation_cost
from conveyor.prompt import build_prompt
from conveyor.router import Route, agent_settings, routes_for
from conveyor.runner.types import Outcome, Tokens
from conveyor.task import Task
from conveyor.telemetry import InvocationEnd, InvocationStart, Telemetry
from conveyor.timeutil import Clock, utc_iso

log = structlog.get_logger("conveyor.pipeline")
SUMMARY_LIMIT = 4000


class Disposition(StrEnum):
    DONE = "done"          # finished: result block written, file in done/<agent>/
    FAILED = "failed"      # finished with status error, file in done/<agent>/
    REQUEUED = "requeued"  # stays in assigned/; run again later (provider limit, retryable failure, shutdown)


@dataclass
class Report:
    disposition: Disposition
    task: Task
    not_before: float = 0.0           # for REQUEUED: earliest time to try again
    reason: str = ""
    paused_tools: dict[str, float] = field(default_factory=dict)   # tool → resume time (provider limits)


@dataclass(frozen=True)
class Collaborators:
    """What a pipeline run needs; built once by the daemon and passed in (no globals)."""

    config: Config
    layout: BoardLayout
    telemetry: Telemetry
    clock: Clock
    env: Mapping[str, str]
    is_paused: Callable[[str], float | None] = lambda tool: None   # tool → resume time if paused


@dataclass
class _Attempt:
    route: Route
    invocation: Invocation
    cost: float
    cost_source: str
    row_id: int
    duration_s: float


def claimer_id() -> str:
    return f"conveyor@{socket.gethostname()}:{os.getpid()}"


def run_task(task: Task, deps: Collaborators, cancel: threading.Event) -> Report:
    """Run a task that sits in `assigned/<agent>/`; never raises for the task's own failures."""
    bound = log.bind(task_id=task.id, agent=task.agent)
    try:
        return _run(task, deps, cancel, bound)
    except ConveyorError as exc:
        bound.error("task.failed", error=str(exc))
        return _fail(task, deps, str(exc), kind=type(exc).__name__, log_path=None)


def _run(task: Task, deps: Collaborators, cancel: threading.Event, bound: Any) -> Report:
    config, now = deps.config, deps.clock()
    attempt = task.attempt + 1
    started = {"status": "in_progress", "assigned_at": task.data.get("assigned_at") or utc_iso(now),
               "started_at": utc_iso(now), "claimed_by": claimer_id(), "attempt": attempt}
    board.rewrite(task, started)
    bound.info("task.started", attempt=attempt)
    base = task.base_branch or config.daemon.base_branch
    branch = f"conveyor/{task.id}"
    worktree = config.worktrees_dir / task.id
    git.add_worktree(config.repo, worktree, branch, base)
    try:
        return _run_in_worktree(task, deps, cancel, bound, worktree, branch, attempt)
    finally:
        git.remove_worktree(config.repo, worktree)
        bound.debug("worktree.removed", path=str(worktree))


def _run_in_worktree(task: Task, deps: Collaborators, cancel: threading.Event, bound: Any,
                     worktree: Path, branch: str, attempt: int) -> Report:
    config = deps.config
    settings = agent_settings(task, config)
    instructions = _read_instructions(config.repo, settings.instructions)
    prompt = build_prompt(task, instructions=instructions, board_dir=config.daemon.board_dir,
                          roadmap_file=config.daemon.roadmap.file)
    skipped: list[str] = []
    paused: dict[str, float] = {}
    last: _Attempt | None = None
    for route in routes_for(task, config):
        resume_at = deps.is_paused(route.tool_name)
        if resume_at is not None:
            skipped.append(f"{route.tool_name}: paused until {utc_iso(resume_at)}")
            continue
        try:
            last = _invoke(task, deps, cancel, route, prompt, worktree, branch, attempt)
        except ToolUnavailable as exc:
            skipped.append(f"{route.tool_name}: {exc}")
            bound.warning("tool.unavailable", tool=route.tool_name, error=str(exc))
            continue
        parsed = last.invocation.parsed
        if cancel.is_set():
            return _requeue(task, deps, "stopped by daemon shutdown", spent=False)
        if not parsed.outcome.is_provider_limit:
            break
        until = parsed.reset_at or (deps.clock() + config.policies.backoff.initial_s)
        paused[route.tool_name] = until
        skipped.append(f"{route.tool_name}: {parsed.outcome.value} ({parsed.error_message or 'no detail'})")
        bound.warning("tool.limited", tool=route.tool_name, outcome=parsed.outcome.value, until=utc_iso(until))
        last = None
    if last is None:
        if paused:
            report = _requeue(task, deps, "; ".join(skipped), spent=False, not_before=min(paused.values()))
            report.paused_tools = paused
            return report
        return _fail(task, deps, "no tool could run this task: " + "; ".join(skipped), kind="no_tool",
                     log_path=None)
    report = _conclude(task, deps, bound, last, worktree, branch, attempt, skipped)
    report.paused_tools = paused
    return report


def _read_instructions(repo: Path, relative: str | None) -> str | None:
    if not relative:
        return None
    path = repo / relative
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConveyorError(f"instructions file {path} cannot be read ({exc.strerror}); fix `instructions` "
                            "in config/agents.yaml") from exc


def _invoke(task: Task, deps: Collaborators, cancel: threading.Event, route: Route, prompt: str,
            worktree: Path, branch: str, attempt: int) -> _Attempt:
    config = deps.config
    settings = agent_settings(task, config)
    log_path = config.logs_dir / task.id / f"attempt-{attempt}-{route.tool_name}.log"
    request = InvocationRequest(
        tool_name=route.tool_name, tool=route.tool, model=route.model, prompt=prompt, workdir=worktree,
        task_id=task.id, log_path=log_path,
        timeout_s=task.get_number("timeout_s") or settings.timeout_s or config.daemon.task_timeout_s,
        idle_timeout_s=settings.idle_timeout_s or config.daemon.idle_timeout_s,
        kill_grace_s=config.daemon.kill_grace_s, log_cap_bytes=config.daemon.log_cap_bytes,
        max_turns=int(task.get_number("max_turns") or 0) or settings.max_turns,
        max_cost_usd=task.get_number("max_cost_usd") or settings.max_cost_usd)
    started = deps.clock()
    row_id = deps.telemetry.start(InvocationStart(task.id, task.agent, route.tool_name, route.model, attempt,
                                                  started, branch, prompt))
    try:
        invocation = invoke(request, deps.env, cancel=cancel, now=deps.clock)
    except ToolUnavailable as exc:
        deps.telemetry.finish(row_id, InvocationEnd(deps.clock(), 0.0, "skipped", error=str(exc)))
        raise
    except ConveyorError as exc:
        deps.telemetry.finish(row_id, InvocationEnd(deps.clock(), deps.clock() - started, Outcome.CRASHED.value,
                                                    error=str(exc)))
        raise
    parsed = invocation.parsed
    model = parsed.model or route.model
    cost, source = invocation_cost(parsed.cost_usd, model, parsed.tokens, config.models)
    duration = deps.clock() - started
    deps.telemetry.finish(row_id, InvocationEnd(
        finished_at=started + duration, duration_s=duration, outcome=parsed.outcome.value,
        exit_code=invocation.process.exit_code, tokens=parsed.tokens, cost_usd=cost, cost_source=source,
        session_id=parsed.session_id, turns=parsed.turns, model=model, error=_metadata_error(parsed.outcome,
                                                                                              parsed.error_message),
        final_text=parsed.final_text))
    return _Attempt(route, invocation, cost, source, row_id, duration)


def _metadata_error(outcome: Outcome, message: str | None) -> str | None:
    """The error sentence for telemetry; our own classification only, never the agent's own text."""
    if outcome is Outcome.OK:
        return None
    return (message or outcome.value)[:500]


def _conclude(task: Task, deps: Collaborators, bound: Any, last: _Attempt, worktree: Path, branch: str,
              attempt: int, skipped: list[str]) -> Report:
    parsed, config = last.invocation.parsed, deps.config
    log_path = str(config.logs_dir / task.id / f"attempt-{attempt}-{last.route.tool_name}.log")
    if parsed.outcome in (Outcome.TIMEOUT, Outcome.CRASHED):
        message = parsed.error_message or parsed.outcome.value
        if attempt < config.daemon.attempts:
            bound.warning("task.retry", outcome=parsed.outcome.value, error=message)
            return _requeue(task, deps, f"attempt {attempt} {parsed.outcome.value}: {message}", spent=True)
        return _fail(task, deps, message, kind=parsed.outcome.value, log_path=log_path)
    if parsed.outcome is not Outcome.OK:
        return _fail(task, deps, parsed.error_message or parsed.outcome.value, kind=parsed.outcome.value,
                     log_path=log_path)
    changed = git.stage_all(worktree)
    result = _result_block(task, last, branch, changed, skipped)
    if not changed:
        git.remove_worktree(config.repo, worktree)
        git.delete_branch(config.repo, branch)
        result.update({"summary": "no changes", "branch": None, "commit": None})
        if parsed.final_text:
            result["agent_summary"] = parsed.final_text.strip()[:SUMMARY_LIMIT]
        bound.info("task.no_changes")
        return _finish(task, deps, result)
    sha = git.commit(worktree, commit_message(task, last, settings_type(task, deps)),
                     config.daemon.commit.author_name, config.daemon.commit.author_email)
    result["commit"] = sha
    deps.telemetry.record_result(last.row_id, commit_sha=sha, pr_url=None, branch=branch)
    bound.info("task.committed", commit=sha, files=len(changed))
    return _finish(task, deps, result)


def settings_type(task: Task, deps: Collaborators) -> str:
    value = task.get_str("type")
    return value if value else agent_settings(task, deps.config).commit_type


def _result_block(task: Task, last: _Attempt, branch: str, changed: list[str], skipped: list[str]) -> dict[str, Any]:
    parsed = last.invocation.parsed
    tokens: Tokens = parsed.tokens
    result: dict[str, Any] = {
        "summary": (parsed.final_text or "").strip()[:SUMMARY_LIMIT] or "(the agent gave no summary)",
        "artefacts": changed,
        "branch": branch,
        "commit": None,
        "pr_url": None,
        "tool": last.route.tool_name,
        "model": parsed.model or last.route.model,
        "tokens": tokens.as_dict(),
        "cost_usd": last.cost,
        "cost_source": last.cost_source,
        "duration_s": round(last.duration_s, 3),
        "session_id": parsed.session_id,
        "turns": parsed.turns,
    }
    if skipped:
        result["skipped_tools"] = skipped
    if parsed.permission_denials:
        result["permission_denials"] = parsed.permission_denials
    return result


def commit_message(task: Task, last: _Attempt, kind: str) -> str:
    """`<type>(<agent>): <title>` then the agent's summary, then Conveyor's trailers."""
    title = " ".join(task.title.split())
    subject = f"{kind}({task.agent}): {title}"
    if len(subject) > 100:
        subject = subject[:97] + "..."
    summary = (last.invocation.parsed.final_text or "").strip()[:1500]
    model = last.invocation.parsed.model or last.route.model or "default"
    trailers = "\n".join([f"Conveyor-Task: {task.id}", f"Agent: {task.agent}", f"Tool: {last.route.tool_name}",
                          f"Model: {model}", f"Cost-USD: {last.cost:.4f}"])
    body = f"{summary}\n\n" if summary else ""
    return f"{subject}\n\n{body}{trailers}\n"


def _finish(task: Task, deps: Collaborators, result: dict[str, Any]) -> Report:
    board.rewrite(task, {"status": "done", "completed_at": utc_iso(deps.clock()), "result": result})
    board.move(task, deps.layout.done_dir(task.agent))
    return Report(Disposition.DONE, task)


def _fail(task: Task, deps: Collaborators, message: str, *, kind: str, log_path: str | None) -> Report:
    error: dict[str, Any] = {"message": message, "kind": kind, "timestamp": utc_iso(deps.clock())}
    if log_path:
        error["log"] = log_path
    try:
        board.rewrite(task, {"status": "error", "completed_at": utc_iso(deps.clock()), "error": error})
        board.move(task, deps.layout.done_dir(task.agent))
    except (OSError, GitError) as exc:
        log.error("task.finish_failed", task_id=task.id, error=str(exc))
        return Report(Disposition.REQUEUED, task, not_before=deps.clock() + 60, reason=f"cannot finish: {exc}")
    return Report(Disposition.FAILED, task, reason=message)


def _requeue(task: Task, deps: Collaborators, reason: str, *, spent: bool, not_before: float = 0.0) -> Report:
    """Put the task back to wait in `assigned/`; an attempt is spent only for the task's own failures."""
    attempt = task.attempt if spent else max(task.attempt - 1, 0)
    board.rewrite(task, {"status": "assigned", "attempt": attempt})
    return Report(Disposition.REQUEUED, task, not_before=not_before, reason=reason)
