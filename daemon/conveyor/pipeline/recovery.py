"""Start-up recovery (README, "How it behaves"): nothing left in `assigned/` by a crash is lost or done twice.

- A task whose branch already holds its commit (trailer `Conveyor-Task: <id>`) is finished from that
  commit instead of running the agent again.
- A task Conveyor was running (`in_progress`, claimed by this daemon) was interrupted: it runs again
  without spending an attempt; `daemon.interruptions` in a row (default 5) mark it `error`.
- A task that was assigned but never started simply waits its turn again.
- Everything else in `assigned/` is not Conveyor's to touch (board/assigned.py) and stays byte-identical.
- Telemetry rows left `running` become `interrupted`; worktrees left behind are removed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from conveyor.board import layout as board
from conveyor.board.assigned import Action, claimed_here, judge
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.coordination.base import Fence
from conveyor.core import yamlio
from conveyor.core.errors import GitError, TaskFileError
from conveyor.core.follow_up import FollowUp
from conveyor.core.state_files import task_branch
from conveyor.core.task import Task, parse_task, task_id_from_path
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.pipeline import follow_up as followups
from conveyor.pipeline.finish import Disposition, Report, fail, finish, lost, recorded
from conveyor.pipeline.questions import is_parked
from conveyor.pipeline.run import AGENT_PIDS_DIR
from conveyor.pipeline.runs import Totals, result_from_rows
from conveyor.publish.follow_up import publish_follow_up
from conveyor.publish.github_types import CHANGES_LABEL, UNREVIEWED_LABEL
from conveyor.publish.task_branch import PARTIAL_TRAILER, REVIEW_TRAILER, commit_summary, publish_commit
from conveyor.runner.pids import AgentRecords
from conveyor.telemetry.base import TelemetryStore
from conveyor.workspace import git, task_workspace
from conveyor.workspace.base_branch import task_base

log = structlog.get_logger("conveyor.pipeline.recovery")


@dataclass
class RecoveryOutcome:
    ready: list[Task] = field(default_factory=list)
    finished: list[Report] = field(default_factory=list)
    parked: list[Task] = field(default_factory=list)     # needs_input: waiting for an answer, not to run


def recover(config: Config, layout: BoardLayout, telemetry: TelemetryStore, clock: Clock,
            env: Mapping[str, str], *, shared: bool = False) -> RecoveryOutcome:
    """`env` is the daemon's environment (the GitHub token for publishing). With `shared` (a fleet) only this
    node's own state is recovered: the board and the task branches belong to the fleet, whose leases say
    which tasks were left by a dead node (`take_over`).

    Only Conveyor's own work is touched (board/assigned.py says which): `done`, `error` and `blocked`
    files, someone else's `in_progress` and tasks of agents Conveyor does not serve stay byte-identical.
    """
    outcome = RecoveryOutcome()
    interrupted = telemetry.mark_interrupted(clock())
    if interrupted:
        log.warning("recovery.telemetry_interrupted", rows=interrupted)
    # agents a killed daemon left running go first: they would write into the worktrees recreated below
    AgentRecords(config.state_dir / AGENT_PIDS_DIR).stop_orphans(config.daemon.kill_grace_s)
    reap_worktrees(config, keep=set())
    if shared:
        return outcome
    remove_stale_temp_files(layout)
    _clear_ref_locks(config)
    host = socket.gethostname()

    def ours(document: Mapping[str, Any]) -> bool:
        return claimed_here(document, host, lambda task_id: bool(telemetry.rows_for_task(task_id)))

    left = 0
    for path in list(board.task_files(layout.assigned)):
        left += _recover_path(path, outcome, ours, config, layout, telemetry, clock, env)
    if outcome.ready or outcome.finished or left:
        log.info("recovery.done", requeued=len(outcome.ready), finished=len(outcome.finished), left_alone=left)
    return outcome


def _recover_path(path: Path, outcome: RecoveryOutcome, ours: Callable[[Mapping[str, Any]], bool],
                  config: Config, layout: BoardLayout, telemetry: TelemetryStore, clock: Clock,
                  env: Mapping[str, str]) -> int:
    """Recover one file of assigned/ into `outcome`; returns 1 when it is not Conveyor's and was left alone."""
    document = yamlio.read_mapping(path)   # None: no one's task (not YAML): validated below and rejected
    resume = False
    if document is not None:
        status = str(document.get("status") or "")
        if status in ("done", "error") and ours(document):
            report = _finished_not_moved(path, layout, telemetry, clock)
            if report is not None:
                outcome.finished.append(report)
                return 0
        verdict = judge(document, serves=lambda agent: config.agent(agent) is not None, ours=ours)
        if verdict.action is Action.LEAVE:
            log.debug("recovery.left_alone", file=str(path), reason=verdict.reason)
            return 1
        resume = verdict.action is Action.RESUME
    try:
        task = parse_task(path)
    except TaskFileError as exc:
        board.reject(layout, path, exc.problems, utc_iso(clock()))
        log.error("recovery.rejected", task_id=task_id_from_path(path), file=str(path),
                  problems=[p.render() for p in exc.problems])
        return 0
    if is_parked(task):
        outcome.parked.append(task)
        return 0
    report = _recover_one(task, config, layout, telemetry, clock, env, resume=resume, mine=ours(task.data))
    if report is None:
        outcome.ready.append(task)
    else:
        outcome.finished.append(report)
    return 0


def _finished_not_moved(path: Path, layout: BoardLayout, telemetry: TelemetryStore, clock: Clock) -> Report | None:
    """Finished here, then stopped between writing the file and moving it: only the move is left."""
    try:
        task = parse_task(path)
    except TaskFileError:
        return None
    if not telemetry.rows_for_task(task.id):
        return None
    status = str(task.data["status"])
    board.move(task, layout.done_dir(task.agent))
    log.info("recovery.moved_finished", task_id=task.id, status=status)
    return Report(Disposition.DONE if status == "done" else Disposition.FAILED, task)


def _recover_one(task: Task, config: Config, layout: BoardLayout, telemetry: TelemetryStore,
                 clock: Clock, env: Mapping[str, str], *, resume: bool, mine: bool) -> Report | None:
    bound = log.bind(task_id=task.id)
    branch = task_branch(task.id)
    if mine:   # only a run of ours can have left a commit on conveyor/<id>
        try:
            sha = git.find_task_commit(config.repo, branch, task.id)
        except GitError:
            sha = None
        if sha is not None:
            bound.info("recovery.resume_from_commit", commit=sha)
            if task.follow_up is not None:
                return _finish_follow_up(task, task.follow_up, config, layout, telemetry, clock, sha, env)
            return _finish_from_commit(task, config, layout, telemetry, clock, branch, sha, env)
    if not resume:
        return None
    # The daemon died under this run (SIGKILL, OOM, power loss): the machine's fault, not the task's, so
    # no attempt is spent; only a task that stops the daemon every time reaches the interruption limit.
    interruptions = _count(task.data.get("interruptions")) + 1
    limit = config.daemon.interruptions
    if interruptions >= limit:
        bound.error("recovery.interruptions_exhausted", interruptions=interruptions, limit=limit)
        return fail(task, layout, clock(), f"the daemon stopped under this task {interruptions} times in a row "
                    f"(limit: daemon.interruptions = {limit}); it may be what stops it: read its logs, then set "
                    "`status: assigned` to try again", kind="interrupted")
    git.delete_branch(config.repo, branch)
    board.rewrite(task, {"status": "assigned", "attempt": max(task.attempt - 1, 0), "interruptions": interruptions})
    bound.info("recovery.requeued", next_attempt=task.attempt + 1, interruptions=interruptions)
    return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def take_over(task: Task, config: Config, layout: BoardLayout, telemetry: TelemetryStore, clock: Clock,
              env: Mapping[str, str], fence: Fence) -> Report | None:
    """A fleet task whose node died holding its lease. Work already committed is published (under this node's
    fence); otherwise it runs again, and the crash does not count as the task's attempt. None: run it."""
    bound = log.bind(task_id=task.id)
    # the dead node's runs of this task end here: the lease says nobody else runs it (a shared telemetry)
    telemetry.mark_interrupted(clock(), [task.id])
    branch = task_branch(task.id)
    try:
        sha = git.find_task_commit(config.repo, branch, task.id)
    except GitError:
        sha = None
    if sha is not None:
        if not fence.still_mine(task.id):
            return lost(task)
        bound.info("fleet.resume_from_commit", commit=sha)
        if task.follow_up is not None:   # onto the PR's own branch, never a pull request of its own
            report = _finish_follow_up(task, task.follow_up, config, layout, telemetry, clock, sha, env, fence)
            if report is None:
                return None
            return recorded(report, fence, "done" if report.disposition is Disposition.DONE else "error")
        return recorded(_finish_from_commit(task, config, layout, telemetry, clock, branch, sha, env, fence),
                        fence, "done")
    # a git command killed with the old node may have left the branch's ref locked; the lease makes it ours
    stale_lock = config.git_dir / "refs" / "heads" / f"{branch}.lock"
    if stale_lock.exists():
        stale_lock.unlink(missing_ok=True)
        bound.warning("fleet.ref_lock_removed", lock=str(stale_lock))
    # the old node's worktree still has the branch checked out (a shared repository): git would refuse it
    for entry in git.list_worktrees(config.repo):
        if entry.branch == branch:
            git.remove_worktree(config.repo, entry.path)
            bound.info("fleet.worktree_taken", path=str(entry.path))
    if task.data.get("status") == "in_progress":
        with contextlib.suppress(GitError):
            git.delete_branch(config.repo, branch)
        board.rewrite(task, {"status": "assigned", "attempt": max(task.attempt - 1, 0)})
    bound.info("fleet.takeover", attempt=task.attempt)
    return None


def _finish_from_commit(task: Task, config: Config, layout: BoardLayout, telemetry: TelemetryStore, clock: Clock,
                        branch: str, sha: str, env: Mapping[str, str], fence: Fence | None = None) -> Report:
    """The gate passed before the commit, so only publishing is left (idempotent: an existing pull request
    is found, not duplicated)."""
    rows = _rows_of_attempt(telemetry, task)
    last: dict[str, Any] = rows[-1] if rows else {}
    totals = Totals.of_rows(rows)
    base, _note = task_base(config.repo, task.base_branch, config.daemon.base_branch)
    files = _files(config, base, sha)
    partial = git.trailer(config.repo, sha, PARTIAL_TRAILER)
    review = git.trailer(config.repo, sha, REVIEW_TRAILER)   # anything but `approved` stays a labelled draft
    held = [] if review in (None, "approved") else [UNREVIEWED_LABEL if review == "unreviewed" else CHANGES_LABEL]
    summary = commit_summary(git.message_of(config.repo, sha))
    checks: list[dict[str, Any]] = [{"check": "completion gate", "result": "passed",
                                     "detail": "passed before the commit (details not kept over a restart)"}]
    if partial:
        checks.append({"check": "verify", "result": "skipped", "detail": "not run: partial work"})
    published = publish_commit(
        config, env, task, branch, sha=sha, summary=summary, files=files, checks=checks, totals=totals,
        tool=last.get("tool"), model=last.get("model"), partial_reason=partial,
        notes=["_Committed before a restart; published by start-up recovery._"], extra_labels=held,
        draft=bool(held), still_mine=None if fence is None else lambda: fence.still_mine(task.id))
    result = result_from_rows(rows, summary=summary or "committed before a restart; finished by start-up recovery",
                              branch=branch, changed=files)
    result.update({"commit": sha, "pr_url": published.pr_url, "publish": published.message, "checks": checks,
                   "recovered": "committed before a restart; published by start-up recovery"})
    if published.pending:
        result["publish_pending"] = published.pending
    if partial:
        result.update({"partial": True, "partial_reason": partial})
    if review:
        result["review"] = {"status": review, "details": "not kept over a restart"}
    if last:
        telemetry.record_result(int(last["id"]), commit_sha=sha, pr_url=published.pr_url, branch=branch)
    return finish(task, layout, clock(), result)


def _finish_follow_up(task: Task, follow_up: FollowUp, config: Config, layout: BoardLayout, telemetry: TelemetryStore,
                      clock: Clock, sha: str, env: Mapping[str, str], fence: Fence | None = None) -> Report | None:
    """A follow-up committed before a restart: push and answer now (both idempotent: a push that already
    happened is a no-op, an answer already posted is found by its marker), never a second commit. A branch
    that moved meanwhile sends the task back to run from the new head (None: run it)."""
    branch = task_branch(task.id)
    rows = _rows_of_attempt(telemetry, task)
    summary = commit_summary(git.message_of(config.repo, sha))
    try:
        files = git.changed_files(config.repo, f"{sha}^", sha)
    except GitError:
        files = []
    review = git.trailer(config.repo, sha, REVIEW_TRAILER)
    held = [] if review in (None, "approved") else [UNREVIEWED_LABEL if review == "unreviewed" else CHANGES_LABEL]
    published = publish_follow_up(config, env, task.id, follow_up, sha=sha, summary=summary, files=files,
                                  review=review, labels=held,
                                  still_mine=None if fence is None else lambda: fence.still_mine(task.id))
    if published.outcome in ("moved", "not_open"):
        followups.drop_work_branch(config.repo, branch)
    if published.outcome == "moved":
        if followups.restarts(task) >= followups.MAX_RESTARTS:
            return fail(task, layout, clock(), f"{published.message}; nothing was pushed, again after starting "
                        f"over. Then `conveyor task retry {task.id}`", kind="follow_up_branch_moved")
        board.rewrite(task, {"status": "assigned", "attempt": max(task.attempt - 1, 0),
                             followups.RESTARTS_KEY: followups.restarts(task) + 1})
        return None
    pushed = published.outcome == "pushed" or published.pending == "reply"
    result = result_from_rows(rows, summary=summary or "committed before a restart; finished by start-up recovery",
                              branch=follow_up.branch, changed=files)
    result.update({"commit": None if published.outcome == "not_open" else sha, "pr_url": follow_up.pr_url,
                   "publish": published.message, "recovered": "committed before a restart; pushed by start-up "
                   "recovery", "follow_up": {"of": follow_up.of, "pr": follow_up.pr, "event_id": follow_up.event_id,
                                             "trigger": follow_up.trigger, "pushed": pushed,
                                             "status": published.outcome, "reply_url": published.reply_url}})
    if published.pending:
        result["publish_pending"] = published.pending
    keep = bool(published.pending) or published.outcome == "local"
    if keep:
        result["work_branch"] = branch
    report = finish(task, layout, clock(), result)
    if not keep:   # only after the finished file is written: until then the branch is what recovery resumes
        followups.drop_work_branch(config.repo, branch)
    return report


def _rows_of_attempt(telemetry: TelemetryStore, task: Task) -> list[dict[str, Any]]:
    """Finished invocations of the attempt that made the commit (the agent's run and its fix rounds)."""
    rows = [row for row in telemetry.rows_for_task(task.id)
            if row["outcome"] not in ("running", "skipped") and row.get("role") != "reviewer"]
    mine = [row for row in rows if row.get("attempt") == task.attempt]
    return mine or [row for row in rows if row["outcome"] == "ok"][-1:]


def _files(config: Config, base: str, sha: str) -> list[str]:
    try:
        return git.changed_files(config.repo, f"refs/heads/{base}", sha)
    except GitError:
        return []


def _clear_ref_locks(config: Config) -> None:
    removed, others = git.clear_task_ref_locks(config.git_dir)
    if removed:
        log.warning("recovery.ref_locks_removed", locks=[str(p) for p in removed],
                    note="left by a git command killed with the previous daemon")
    if others:
        log.warning("recovery.git_locks_present", locks=[str(p) for p in others],
                    note="if no git command is running in this repository, a crash left them: delete them")


def remove_stale_temp_files(layout: BoardLayout) -> int:
    """Delete the temporary files of rewrites a crash interrupted (`.<name>.*.tmp`, see yamlio.atomic_write).

    Only in `assigned/` and `done/`, which only the daemon writes (and it holds the lock): a dotted file
    in `inbox/` may be an author's file still being written.
    """
    removed = 0
    for parent in (layout.assigned, layout.done):
        folders = [parent, *(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink())] \
            if parent.is_dir() else []
        for folder in folders:
            for leftover in folder.glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
                    removed += 1
    if removed:
        log.info("recovery.temp_files_removed", removed=removed)
    return removed


LEGACY_WORKTREES = "worktrees"   # <state dir>/worktrees: the default before 2026-11-22


def reap_worktrees(config: Config, keep: set[str]) -> int:
    """Remove task workspaces (and their views in the state dir) whose task is not running; returns how many.

    Also linked git worktrees that builds before task workspaces became repositories of their own left,
    and those under `<state dir>/worktrees`, where earlier builds put them (before Claude Code's refusal to
    edit below `.git/` moved them out): nothing else would ever remove those.
    """
    roots = list(dict.fromkeys([config.worktrees_dir, config.state_dir / LEGACY_WORKTREES]))
    removed = 0
    with contextlib.suppress(GitError):
        for entry in git.list_worktrees(config.repo):
            if entry.path.parent in roots and entry.path.name not in keep:
                git.remove_worktree(config.repo, entry.path)
                removed += 1
    for root in roots:
        if root.is_dir():
            for leftover in root.iterdir():
                if leftover.name not in keep and leftover.is_dir():
                    task_workspace.remove(leftover, task_workspace.view_dir(config.state_dir, leftover.name))
                    removed += 1
    views = config.state_dir / task_workspace.VIEWS
    for view in (list(views.iterdir()) if views.is_dir() else []):
        if view.name not in keep:   # a view whose workspace is already gone
            task_workspace.remove(view, view)
    if removed:
        log.info("worktrees.reaped", removed=removed)
    return removed
