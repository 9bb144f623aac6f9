"""Run one claimed task: workspace → agent (with fallbacks) → commit → finish; the workspace always goes.

The pipeline returns a `Disposition` instead of deciding what happens next, so the daemon stays the
only place that knows about queues, pauses and shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.checks.verify_setup import verify_problems
from conveyor.config import Config
from conveyor.coordination.base import Fence, Unfenced
from conveyor.coordination.spend import NoReservations, SpendLedger
from conveyor.core import disk_trouble
from conveyor.core.disk_trouble import disk_problem
from conveyor.core.errors import ConveyorError, GitError, ToolUnavailable
from conveyor.core.follow_up import FollowUp
from conveyor.core.state_files import task_branch
from conveyor.core.task import CLAIMER_PREFIX, Task
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.pipeline import conclude as completion
from conveyor.pipeline import follow_up as followups
from conveyor.pipeline import questions, reserve
from conveyor.pipeline.finish import Disposition, Report, cancelled, fail, finish, lost, park, recorded, requeue
from conveyor.runner import pids as agent_pids
from conveyor.runner.bwrap import BwrapProbe
from conveyor.runner.env import build_env
from conveyor.runner.invoke import Invocation, InvocationRequest, invoke
from conveyor.runner.prompt import build_prompt
from conveyor.runner.sandbox import SandboxContext
from conveyor.runner.types import Outcome
from conveyor.scheduling.availability import RouteCheck
from conveyor.scheduling.budgets import BudgetGuard, soft_warnings, task_block, tool_block
from conveyor.scheduling.concurrency import ToolGate
from conveyor.scheduling.pricing import invocation_cost
from conveyor.scheduling.router import Route, Routing, agent_settings
from conveyor.scheduling.tool_health import ToolHealth
from conveyor.telemetry.base import TelemetryStore
from conveyor.telemetry.records import InvocationEnd, InvocationStart, TelemetryUnreachable
from conveyor.workspace import git, task_workspace
from conveyor.workspace.base_branch import task_base
from conveyor.workspace.task_workspace import Workspace, WorkspaceGone

log = structlog.get_logger("conveyor.pipeline.run")
AGENT_PIDS_DIR = "agents"   # <state_dir>/agents/<task_id>.pid while an agent runs (see agent_pids)


class Resumable(Protocol):
    """How a run continues a session: an answered question (pipeline.questions) or a follow-up."""

    @property
    def session_id(self) -> str | None: ...
    @property
    def tool(self) -> str | None: ...
    def resume_prompt(self) -> str: ...
    def fresh_prompt(self, prompt: str) -> str: ...


@dataclass(frozen=True)
class Collaborators:
    """What a pipeline run needs; built once by the daemon and passed in (no globals)."""

    config: Config
    layout: BoardLayout
    telemetry: TelemetryStore
    clock: Clock
    env: Mapping[str, str]
    health: ToolHealth      # provider-limit pauses (shared with the daemon, thread-safe)
    gate: ToolGate          # per-tool concurrency and start rate
    budgets: BudgetGuard    # spend against policies.yaml budgets
    fence: Fence = field(default_factory=Unfenced)   # a fleet's lease check before each write (single host: yes)
    ledger: SpendLedger = field(default_factory=NoReservations)   # a fleet's spend reserved before a run
    sandbox_probe: BwrapProbe = field(default_factory=BwrapProbe)   # does bubblewrap work here (asked once)


@dataclass
class RunPlan:
    """What the daemon decided at dispatch: the routing, and whether it already holds the chosen tool's slot."""

    routing: Routing | None                # None: routing failed; the run fails with `error`
    slot_held: bool = False
    error: str = ""
    error_kind: str = "ConveyorError"


CAPACITY_RETRY_S = 5.0     # a fallback whose tool is at capacity: try the task again this much later


class _Slots:
    """The per-tool slots this run holds; a slot is given back when its route is left, or at the end."""

    def __init__(self, gate: ToolGate) -> None:
        self._gate = gate
        self._held: list[str] = []

    def adopt(self, tool: str) -> None:
        self._held.append(tool)

    def take(self, tool: str) -> str | None:
        if tool in self._held:
            return None
        reason = self._gate.try_start(tool)
        if reason is None:
            self._held.append(tool)
        return reason

    def release(self, tool: str) -> None:
        if tool in self._held:
            self._held.remove(tool)
            self._gate.finish(tool)

    def release_all(self) -> None:
        for tool in list(self._held):
            self.release(tool)


@dataclass
class _Attempt:
    route: Route
    invocation: Invocation
    cost: float
    cost_source: str
    row_id: int
    duration_s: float


def claimer_id() -> str:
    return f"{CLAIMER_PREFIX}{socket.gethostname()}:{os.getpid()}"


def run_task(task: Task, deps: Collaborators, cancel: threading.Event, plan: RunPlan) -> Report:
    """Run a task that sits in `assigned/<agent>/`; never raises for the task's own failures.

    `plan` is the daemon's routing decision (and the tool slot it took): routing is decided once, at dispatch.
    """
    bound = log.bind(task_id=task.id, agent=task.agent)
    slots = _Slots(deps.gate)
    if plan.slot_held and plan.routing is not None and plan.routing.route is not None:
        slots.adopt(plan.routing.route.tool_name)
    try:
        # every line logged on this thread names the task, the runner's and git's included
        with structlog.contextvars.bound_contextvars(task_id=task.id, agent=task.agent):
            return _run(task, deps, cancel, bound, plan, slots)
    except board.TaskGone:
        bound.warning("task.cancelled", reason="its file was deleted while it ran",
                      note="the agent was stopped; nothing was committed or written back")
        return cancelled(task, "its file was deleted while it ran")
    except TelemetryUnreachable as exc:   # the fleet's database is away: wait for it, keep the attempt
        return _wait_for_database(task, deps, bound, str(exc))
    except (ConveyorError, OSError) as exc:
        problem = disk_problem(exc)
        if problem is not None:   # the machine's trouble, not the task's: wait, keep the attempt
            return _wait_for_disk(task, deps, bound, problem)
        if not isinstance(exc, ConveyorError):
            raise
        bound.error("task.failed", error=str(exc))
        kind = "workspace_gone" if isinstance(exc, WorkspaceGone) else type(exc).__name__
        return _fail(task, deps, str(exc), kind=kind, log_path=None)
    finally:
        slots.release_all()
        deps.ledger.release(task.id)   # settled: only the runs' real costs count from now on


def _wait_for_disk(task: Task, deps: Collaborators, bound: Any, problem: str) -> Report:
    bound.error("task.environment_error", error=problem, note=disk_trouble.NOTE)
    with contextlib.suppress(ConveyorError):   # best effort: the database may be the full disk
        deps.telemetry.mark_interrupted(deps.clock(), [task.id])
    not_before = deps.clock() + deps.config.daemon.rescan_interval_s
    try:
        return _requeue(task, deps, problem, spent=False, not_before=not_before)
    except OSError:   # the board is on that disk: its file keeps the last state written, which is as good
        return Report(Disposition.REQUEUED, task, not_before=not_before, reason=problem)


def _wait_for_database(task: Task, deps: Collaborators, bound: Any, problem: str) -> Report:
    """A run whose telemetry could not be written goes back to wait (its row, if any, is closed once the
    database answers again: here, or by the node that takes the task over)."""
    bound.error("task.environment_error", error=problem, note="the task runs again once the database is back")
    with contextlib.suppress(ConveyorError):
        deps.telemetry.mark_interrupted(deps.clock(), [task.id])
    return _requeue(task, deps, problem, spent=False, not_before=deps.clock() + deps.config.daemon.rescan_interval_s)


def route_check(deps: Collaborators) -> RouteCheck:
    """Availability of routes as of now: installed, logged in, not paused, tool not over a hard budget."""
    return RouteCheck(deps.env, deps.health, deps.budgets.states(deps.config.policies.budgets),
                      login_retry_at=deps.clock() + deps.config.daemon.rescan_interval_s)


def _run(task: Task, deps: Collaborators, cancel: threading.Event, bound: Any, plan: RunPlan,
         slots: _Slots) -> Report:
    config, now = deps.config, deps.clock()
    resume = questions.take_answer(task, utc_iso(now))   # answered: this run continues the asking session
    attempt = task.attempt + 1
    started = {"status": "in_progress", "assigned_at": task.data.get("assigned_at") or utc_iso(now),
               "started_at": utc_iso(now), "claimed_by": claimer_id(), "attempt": attempt}
    if plan.routing is None:               # routing failed at dispatch: say why, spend nothing on a workspace
        board.rewrite(task, started)
        bound.error("task.failed", error=plan.error)
        return _fail(task, deps, plan.error or "no route for this task", kind=plan.error_kind, log_path=None)
    board.rewrite(task, started)
    unrunnable = _verify_setup_problems(task, deps, plan.routing)
    if unrunnable:   # no agent can fix a command that cannot start: fail now, before anything is spent
        message = ("verify cannot run, so no agent was started (nothing spent): " + "; ".join(unrunnable)
                   + f". Fix it, then `conveyor task retry {task.id}`")
        bound.error("task.failed", error=message)
        return _fail(task, deps, message, kind="verify_setup", log_path=None)
    chosen = plan.routing.route.tool_name if plan.routing.route is not None else None
    refused = reserve.reserve(deps.ledger, task, chosen, config, deps.clock())
    if refused is not None:   # the fleet's hard budget has no room for this run yet: wait, keep the attempt
        bound.warning("task.budget_wait", reason=refused.reason, until=utc_iso(refused.retry_at))
        return _requeue(task, deps, f"budget: {refused.reason}", spent=False, not_before=refused.retry_at)
    bound.info("task.started", attempt=attempt)
    follow_up = task.follow_up
    if follow_up is not None:
        return _run_follow_up(task, deps, cancel, bound, plan.routing, slots, follow_up, (attempt, resume))
    base, base_note = task_base(config.repo, task.base_branch, config.daemon.base_branch)
    if base_note:
        bound.warning("task.branch_fallback", note=base_note)
    branch = task_branch(task.id)
    path, view = config.worktrees_dir / task.id, task_workspace.view_dir(config.state_dir, task.id)
    report: Report | None = None
    try:
        workspace = task_workspace.create(config.repo, config.git_dir, path, view, branch, base)
        report = _run_in_workspace(task, deps, cancel, bound, workspace, attempt, plan.routing, slots, resume,
                                   base_note=base_note)
        return report
    finally:
        task_workspace.remove(path, view)
        bound.debug("workspace.removed", path=str(path))
        if report is None or report.disposition not in (Disposition.DONE, Disposition.LOST):   # LOST: not ours
            _drop_branch_without_work(config.repo, branch, task.id)


def _run_follow_up(task: Task, deps: Collaborators, cancel: threading.Event, bound: Any, routing: Routing,
                   slots: _Slots, follow_up: FollowUp, how: tuple[int, questions.Resume | None]) -> Report:
    """A follow-up on an open pull request (pipeline.follow_up): from the PR's head, one at a time per PR."""
    config, (attempt, answered) = deps.config, how
    with followups.pull_lock(config.state_dir, follow_up.of) as mine:
        if not mine:
            return _requeue(task, deps, "another follow-up of this pull request is running", spent=False,
                            not_before=deps.clock() + followups.BUSY_RETRY_S)
        instructions = _read_instructions(config.repo, agent_settings(task, config).instructions)
        start = followups.prepare(task, follow_up, config, deps.env, deps.layout, instructions)
        if isinstance(start, followups.Stop):
            bound.info("follow_up.stop", action=start.action, reason=start.message)
            if start.action == "finish":
                return _finish(task, deps, dict(start.result or {}))
            if start.action == "wait":
                return _requeue(task, deps, start.message, spent=False,
                                not_before=deps.clock() + config.daemon.rescan_interval_s)
            return _fail(task, deps, start.message, kind=start.kind, log_path=None)
        branch = task_branch(task.id)   # the local work branch; the push goes to follow_up.branch
        path = config.worktrees_dir / followups.workspace_name(task)
        view = task_workspace.view_dir(config.state_dir, task.id)
        report: Report | None = None
        try:
            workspace = task_workspace.create(config.repo, config.git_dir, path, view, branch,
                                              config.daemon.base_branch, start=start.start_sha)
            report = _run_in_workspace(task, deps, cancel, bound, workspace, attempt, routing, slots,
                                       answered or start.resume, prompt=start.fresh_prompt)
            return report
        finally:
            task_workspace.remove(path, view)
            result = task.data.get("result") if report is not None else None
            keep = isinstance(result, Mapping) and bool(result.get("work_branch"))
            if report is None or report.disposition not in (Disposition.DONE, Disposition.LOST):
                _drop_branch_without_work(config.repo, branch, task.id)
            elif report.disposition is Disposition.DONE and not keep:   # pushed (or nothing to push)
                followups.drop_work_branch(config.repo, branch)


def _verify_setup_problems(task: Task, deps: Collaborators, routing: Routing) -> list[str]:
    """What keeps the verify commands from starting where they will run (the chosen tool's environment)."""
    tool = routing.route.tool if routing.route is not None else None
    env = build_env(deps.env, tool.env_allowlist, tool.env) if tool is not None else dict(deps.env)
    return [*verify_problems(deps.config.daemon.verify, deps.config, env, where="daemon.yaml verify"),
            *verify_problems(task.get_list("verify"), deps.config, env, where="the task's verify")]


def _drop_branch_without_work(repo: Path, branch: str, task_id: str) -> None:
    """A failed or requeued run leaves no empty `conveyor/<id>` branch behind; a branch that already holds
    the task's commit is kept (recovery finishes it from there)."""
    with contextlib.suppress(GitError):
        if git.find_task_commit(repo, branch, task_id) is None:
            git.delete_branch(repo, branch)


def _run_in_workspace(task: Task, deps: Collaborators, cancel: threading.Event, bound: Any,
                      workspace: Workspace, attempt: int, routing: Routing, slots: _Slots,
                      resume: Resumable | None = None, *, base_note: str | None = None,
                      prompt: str | None = None) -> Report:
    config = deps.config
    if prompt is None:
        settings = agent_settings(task, config)
        instructions = _read_instructions(config.repo, settings.instructions)
        prompt = build_prompt(task, instructions=instructions, board_dir=config.daemon.board_dir,
                              roadmap_file=config.daemon.roadmap.file)
    last, stopped = _try_routes(task, deps, cancel, bound, routing, slots, (prompt, workspace, attempt), resume)
    if stopped:
        return _requeue(task, deps, "stopped by daemon shutdown", spent=False)
    skipped = [f"{skip.tool}: {skip.reason}" for skip in routing.skipped]
    paused = {skip.tool: skip.retry_at for skip in routing.skipped if skip.retry_at is not None}
    if last is None:
        retry_at = routing.retry_at()
        if retry_at is not None:   # paused, at capacity or over a tool budget: none of it spends an attempt
            report = _requeue(task, deps, "; ".join(skipped), spent=False, not_before=retry_at)
            report.paused_tools = paused
            return report
        return _fail(task, deps, "no tool could run this task: " + "; ".join(skipped), kind="no_tool",
                     log_path=None, extra={"routing": routing.record()})
    extra: dict[str, Any] = {"routing": routing.record()}
    if base_note:
        extra["base_branch_note"] = base_note
    warning = _budget_warning(task, deps, last.route.tool_name, bound)
    if warning:
        extra["budget_warning"] = warning
    report = _conclude(task, deps, bound, last, workspace, attempt, skipped, cancel=cancel, prompt=prompt,
                       result_extra=extra)
    report.paused_tools = paused
    return report


def _try_routes(task: Task, deps: Collaborators, cancel: threading.Event, bound: Any, routing: Routing,
                slots: _Slots, where: tuple[str, Workspace, int],
                resume: Resumable | None = None) -> tuple[_Attempt | None, bool]:
    """Run the chosen route, falling back past provider limits; returns (last run or None, stopped).
    With an answered question, the asking tool's session is resumed with the answer when it can be."""
    task_prompt, workspace, attempt = where
    route = routing.route
    while route is not None:
        wait = slots.take(route.tool_name)
        if wait is not None:
            routing.skip_current(f"at capacity: {wait}", retry_at=deps.clock() + CAPACITY_RETRY_S)
            route = routing.advance_past(route_check(deps))
            continue
        paused = deps.health.fresh_pause(route.tool_name) if deps.health.shared else None
        if paused is not None:   # another node hit a limit since dispatch: the fleet's pause holds here too
            slots.release(route.tool_name)
            routing.skip_current(f"paused until {utc_iso(paused.until)} after {paused.reason}", retry_at=paused.until)
            route = routing.advance_past(route_check(deps))
            continue
        prompt, session = task_prompt, None
        if resume is not None:
            resumable = resume.session_id and resume.tool == route.tool_name and route.tool.resume_argv is not None
            prompt = resume.resume_prompt() if resumable else resume.fresh_prompt(task_prompt)
            session = resume.session_id if resumable else None
        try:
            last = _invoke(task, deps, cancel, route, prompt, workspace.path, workspace.branch, attempt,
                           routing=routing, session_id=session,
                           role="fixer" if task.follow_up is not None else "author")
        except ToolUnavailable as exc:
            slots.release(route.tool_name)
            routing.skip_current(f"not installed: {exc}")
            bound.warning("tool.unavailable", tool=route.tool_name)
            route = routing.advance_past(route_check(deps))
            continue
        if cancel.is_set():
            return last, True
        parsed = last.invocation.parsed
        if not parsed.outcome.is_provider_limit:
            if parsed.outcome in (Outcome.OK, Outcome.AGENT_ERROR):
                deps.health.record_success(route.tool_name, started_at=deps.clock() - last.duration_s)
            return last, False
        until = _pause_tool(deps, route.tool_name, parsed.outcome, parsed.reset_at, parsed.api_error_status)
        status = f" (HTTP {parsed.api_error_status})" if parsed.api_error_status else ""
        routing.skip_current(f"{parsed.outcome.value}{status}; paused until {utc_iso(until)}", retry_at=until)
        slots.release(route.tool_name)
        bound.warning("tool.limited", tool=route.tool_name, outcome=parsed.outcome.value, until=utc_iso(until))
        if task_workspace.has_changes(workspace):   # keep the work done so far: completion publishes it as partial
            return last, False
        route = routing.advance_past(route_check(deps))
    return None, False


def _pause_tool(deps: Collaborators, tool: str, outcome: Outcome, reset_at: float | None,
                status: int | None) -> float:
    """Pause the tool after a provider limit; returns when it may run again."""
    return deps.health.record_limit(tool, outcome, reset_at, status).until


def _budget_warning(task: Task, deps: Collaborators, tool: str, bound: Any) -> str | None:
    """Soft budgets this task's scope has spent (counting this run): a warning, never a stop."""
    if not deps.config.policies.budgets:
        return None
    states = soft_warnings(deps.budgets.states(deps.config.policies.budgets, fresh=True), task.agent, tool)
    if not states:
        return None
    for state in states:
        bound.warning("budget.soft_exceeded", scope=state.budget.scope, period=state.budget.period,
                      usd=state.budget.usd, spent=round(state.spent, 4))
    return "; ".join(state.describe() for state in states)


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
            worktree: Path, branch: str, attempt: int, *, session_id: str | None = None,
            round_no: int = 0, routing: Routing | None = None, role: str = "author") -> _Attempt:
    """One run of the agent; with `session_id` it resumes that session (a fix round after a failing verify).

    `role` goes to telemetry; a `reviewer` runs read-only (the tool's `review_argv`) with its own log file."""
    config = deps.config
    settings = agent_settings(task, config)
    reviewer = role == "reviewer"
    log_name = f"{route.tool_name}-review" if reviewer else route.tool_name
    log_path = completion.agent_log_path(config.logs_dir, task.id, attempt, log_name, round_no)
    request = InvocationRequest(
        tool_name=route.tool_name, tool=route.tool, model=route.model, prompt=prompt, workdir=worktree,
        task_id=task.id, log_path=log_path,
        timeout_s=task.get_number("timeout_s") or settings.timeout_s or config.daemon.task_timeout_s,
        idle_timeout_s=settings.idle_timeout_s or config.daemon.idle_timeout_s,
        kill_grace_s=config.daemon.kill_grace_s, log_cap_bytes=config.daemon.log_cap_bytes,
        max_turns=int(task.get_number("max_turns") or 0) or settings.max_turns,
        max_cost_usd=task.get_number("max_cost_usd") or settings.max_cost_usd, session_id=session_id,
        read_only=reviewer, sandbox=sandbox_context(deps))
    started = deps.clock()
    decision = json.dumps(routing.record()) if routing is not None else None
    row_id = deps.telemetry.start(InvocationStart(task.id, task.agent, route.tool_name, route.model, attempt,
                                                  started, branch, prompt, round=round_no, routing=decision,
                                                  role=role))
    full = config.daemon.privacy == "full"
    records = agent_pids.AgentRecords(config.state_dir / AGENT_PIDS_DIR)   # what recovery stops after a crash
    try:
        invocation = invoke(request, deps.env, cancel=cancel, now=deps.clock,
                            on_start=lambda pid: records.add(task.id, pid))
    except ToolUnavailable as exc:
        deps.telemetry.finish(row_id, InvocationEnd(deps.clock(), 0.0, "skipped",
                                                    error=str(exc) if full else "skipped: tool not installed"))
        raise
    except ConveyorError as exc:
        deps.telemetry.finish(row_id, InvocationEnd(deps.clock(), deps.clock() - started, Outcome.CRASHED.value,
                                                    error=str(exc) if full else f"crashed: {type(exc).__name__}"))
        raise
    finally:
        records.remove(task.id)
        if not full:
            discard_transcript(log_path)
    parsed = invocation.parsed
    model = parsed.model or route.model
    cost, source = invocation_cost(parsed.cost_usd, model, parsed.tokens, config.models)
    duration = deps.clock() - started
    deps.telemetry.finish(row_id, InvocationEnd(
        finished_at=started + duration, duration_s=duration, outcome=parsed.outcome.value,
        exit_code=invocation.process.exit_code, tokens=parsed.tokens, cost_usd=cost, cost_source=source,
        session_id=parsed.session_id, turns=parsed.turns, model=model,
        error=error_column(parsed.outcome, parsed.api_error_status, parsed.error_message, full=full),
        final_text=parsed.final_text))
    return _Attempt(route, invocation, cost, source, row_id, duration)


def sandbox_context(deps: Collaborators) -> SandboxContext:
    """The sandbox's view of this daemon: its state folder, its probe, every tool's credential files."""
    files = tuple(name for tool in deps.config.tools.values() for name in tool.credentials_files)
    return SandboxContext(state_dir=deps.config.state_dir, probe=deps.sandbox_probe, credential_files=files)


def error_column(outcome: Outcome, status: int | None, message: str | None, *, full: bool) -> str | None:
    """Telemetry's `error`: in metadata mode only our classification (outcome and HTTP status), never the
    CLI's words (they may quote the prompt or the code); in full mode the CLI's message as well."""
    if outcome is Outcome.OK:
        return None
    classification = outcome.value + (f" (HTTP {status})" if status else "")
    if full and message:
        return f"{classification}: {message}"[:500]
    return classification


def discard_transcript(log_path: Path) -> None:
    """Metadata privacy mode keeps no transcript: delete the agent's log (and its folder once empty)."""
    with contextlib.suppress(FileNotFoundError):
        log_path.unlink()
    with contextlib.suppress(OSError):
        log_path.parent.rmdir()


def _conclude(task: Task, deps: Collaborators, bound: Any, last: _Attempt, workspace: Workspace,
              attempt: int, skipped: list[str], *, cancel: threading.Event, prompt: str,
              result_extra: Mapping[str, Any] | None = None) -> Report:
    """Gate, verify (resuming the agent), commit and publish, in `completion`; here the board is written."""

    def follow_up(text: str, session_id: str | None, round_no: int) -> _Attempt:
        return _invoke(task, deps, cancel, last.route, text, workspace.path, workspace.branch, attempt,
                       session_id=session_id, round_no=round_no, role="fixer")

    def review(text: str, route: Route, number: int) -> _Attempt:
        return _review_run(task, deps, cancel, route, text, (workspace.path, workspace.branch, attempt, number))

    def over_budget() -> str | None:
        if not deps.config.policies.budgets:
            return None
        states = deps.budgets.states(deps.config.policies.budgets, fresh=True)
        held = task_block(states, task.agent) or tool_block(states, last.route.tool_name)
        return held.describe() if held is not None else None

    job = completion.Job(task=task, config=deps.config, env=deps.env, telemetry=deps.telemetry,
                         workspace=workspace, branch=workspace.branch, attempt=attempt,
                         commit_type=settings_type(task, deps), prompt=prompt,
                         cancel=cancel, follow_up=follow_up, sandbox=sandbox_context(deps), skipped=tuple(skipped),
                         over_budget=over_budget, review=review, still_mine=(lambda: deps.fence.still_mine(task.id))
                         if deps.config.daemon.coordination else None)
    if not deps.fence.still_mine(task.id):   # a late node publishes nothing: the task is another node's now
        return lost(task)
    verdict = completion.conclude(job, last)
    bound.debug("task.verdict", action=verdict.action, kind=verdict.kind or None)
    if verdict.action == "finish":
        return _finish(task, deps, {**verdict.result, **(result_extra or {})})
    if verdict.action == "retry":
        return _requeue(task, deps, verdict.message, spent=True)
    if verdict.action == "stopped":
        return _requeue(task, deps, verdict.message, spent=False)
    if verdict.action == "restart":   # a follow-up's PR branch moved: once more from its new head
        bound.warning("follow_up.restart", reason=verdict.message)
        board.rewrite(task, {followups.RESTARTS_KEY: followups.restarts(task) + 1})
        return _requeue(task, deps, verdict.message, spent=False)
    if verdict.action == "park":   # the agent asked a question (pipeline.questions): wait for the answer
        if not deps.fence.still_mine(task.id):
            return lost(task)
        bound.info("task.needs_input", question=verdict.message[:200])
        return park(task, verdict.message, deps.clock(), session_id=verdict.extra.get("session_id"),
                    tool=str(verdict.extra.get("tool")))
    return _fail(task, deps, verdict.message, kind=verdict.kind, log_path=verdict.log_path, extra=verdict.extra)


def _review_run(task: Task, deps: Collaborators, cancel: threading.Event, route: Route, prompt: str,
                where: tuple[Path, str, int, int]) -> _Attempt:
    """The review stage's read-only run; a paused, logged-out or over-budget reviewer tool is unavailable,
    and a provider limit pauses the tool as for any agent run."""
    worktree, branch, attempt, number = where
    skip = route_check(deps)(route)
    if skip is not None:
        raise ToolUnavailable(skip.reason)
    run = _invoke(task, deps, cancel, route, prompt, worktree, branch, attempt, round_no=number, role="reviewer")
    parsed = run.invocation.parsed
    if parsed.outcome.is_provider_limit:
        _pause_tool(deps, route.tool_name, parsed.outcome, parsed.reset_at, parsed.api_error_status)
    return run


def settings_type(task: Task, deps: Collaborators) -> str:
    value = task.get_str("type")
    return value if value else agent_settings(task, deps.config).commit_type


def _finish(task: Task, deps: Collaborators, result: dict[str, Any]) -> Report:
    return recorded(finish(task, deps.layout, deps.clock(), result), deps.fence, "done")


def _fail(task: Task, deps: Collaborators, message: str, *, kind: str, log_path: str | None,
          extra: Mapping[str, Any] | None = None) -> Report:
    keep_log = log_path if deps.config.daemon.privacy == "full" else None   # metadata mode keeps no transcript
    return recorded(fail(task, deps.layout, deps.clock(), message, kind=kind, log_path=keep_log, extra=extra),
                    deps.fence, "error")


def _requeue(task: Task, deps: Collaborators, reason: str, *, spent: bool, not_before: float = 0.0) -> Report:
    if not deps.fence.still_mine(task.id):
        return lost(task)
    return requeue(task, reason, spent=spent, not_before=not_before)
