"""After the agent: gate, verify (resuming the agent on a failure), commit, publish; or keep partial work.

The pipeline hands over the agent's last run and gets back a `Verdict` (finish, fail, retry, stopped):
this module decides, the pipeline writes the board. Order matters: nothing is committed before the
change passes the whole gate (README, "Before the commit"), and nothing is published before it is committed, so
the commit on the branch is the point of no return that start-up recovery resumes from.

Partial work: when a timeout or a provider limit stops an agent that has already changed files, the
change still goes through the path and secret checks, is committed (trailer `Conveyor-Partial`), and
is published as a draft pull request labelled `partial`. The task then ends `done` with
`result.partial: true`: the draft is what a person reviews and continues, and running the agent again
from scratch would spend another attempt redoing (and likely again not finishing) the same work.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from conveyor.checks.gate import (
    CheckResult,
    GateFailure,
    GateResult,
    VerifyCommand,
    VerifyRun,
    check_change,
    no_changes_failure,
    run_verify,
    verify_commands,
    verify_failure,
    verify_feedback,
    withhold_secrets,
)
from conveyor.checks.verify_setup import venv_dir, verify_env
from conveyor.config import Config
from conveyor.core.errors import ConveyorError
from conveyor.core.follow_up import FollowUp as FollowUpBlock
from conveyor.core.task import Task
from conveyor.pipeline import follow_up as followups
from conveyor.pipeline import questions, size_gate
from conveyor.pipeline import review as reviewing
from conveyor.pipeline.runs import Run, Totals, latest_session, result_block, summarize
from conveyor.publish.follow_up import publish_follow_up
from conveyor.publish.task_branch import commit_message, publish_commit
from conveyor.runner.env import build_env
from conveyor.runner.sandbox import SandboxContext, contain_check
from conveyor.runner.sandbox_home import SANDBOX_DIR
from conveyor.runner.types import Outcome
from conveyor.telemetry.base import TelemetryStore
from conveyor.workspace import git, task_workspace
from conveyor.workspace.task_workspace import StagedChange, Workspace

log = structlog.get_logger("conveyor.pipeline.conclude")

# prompt, session to resume (None: start afresh in the same worktree), round number → the new run
FollowUp = Callable[[str, str | None, int], Run]


@dataclass(frozen=True)
class Job:
    """What concluding one task needs; built by the pipeline for each run."""

    task: Task
    config: Config
    env: Mapping[str, str]
    telemetry: TelemetryStore
    workspace: Workspace
    branch: str
    attempt: int
    commit_type: str
    prompt: str
    cancel: threading.Event
    follow_up: FollowUp
    sandbox: SandboxContext   # how agents are contained here; verify runs in the same sandbox (the agent's code)
    skipped: Sequence[str] = ()
    # A hard budget (policies.yaml) spent since the run started, described; None while spending may go on.
    # Asked before each fix round: a round is new spend, and `limit: hard` means no new spend.
    over_budget: Callable[[], str | None] = lambda: None
    # The review stage's read-only reviewer run (None: this pipeline cannot review; see pipeline.review).
    review: reviewing.ReviewRunner | None = None
    # A fleet's fence, compared just before the push (None on a single host: the push replaces an older one).
    still_mine: Callable[[], bool] | None = None


@dataclass(frozen=True)
class Verdict:
    """What the pipeline does next: finish with `result`, fail with an error block, or requeue."""

    action: Literal["finish", "fail", "retry", "stopped", "park", "restart"]   # restart: a follow-up's PR
    # branch moved while it ran: run it again from the new head (spends no attempt; pipeline.follow_up)
    result: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    kind: str = ""
    log_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def agent_log_path(logs_dir: Path, task_id: str, attempt: int, tool: str, round_no: int = 0) -> Path:
    """Where one invocation's output goes; each resume gets its own file (the supervisor rewrites a log)."""
    suffix = f"-round-{round_no}" if round_no else ""
    return logs_dir / task_id / f"attempt-{attempt}-{tool}{suffix}.log"


# ------------------------------------------------------------------ entry point
def conclude(job: Job, last: Run) -> Verdict:
    """Judge the agent's run and carry the task to its verdict (see the module docstring)."""
    outcome = last.invocation.parsed.outcome
    stopped = outcome is Outcome.TIMEOUT or outcome.is_provider_limit
    if stopped and task_workspace.has_changes(job.workspace):
        return _partial(job, [last], _stop_reason(last))
    if outcome is Outcome.OK:
        question = questions.question_of(last.invocation.parsed.final_text)
        if question is not None:   # the agent asks before it goes on: park the task (pipeline.questions)
            return Verdict("park", message=question, extra={"session_id": latest_session([last]),
                                                            "tool": last.route.tool_name})
        return _complete(job, [last])
    message = last.invocation.parsed.error_message or outcome.value
    log_path = str(_log_of(job, last, 0))
    if (stopped or outcome is Outcome.CRASHED) and job.attempt < job.config.daemon.attempts:
        log.warning("task.retry", task_id=job.task.id, outcome=outcome.value, error=message)
        return Verdict("retry", message=f"attempt {job.attempt} {outcome.value}: {message}")
    return Verdict("fail", message=message, kind=outcome.value, log_path=log_path)


def _stop_reason(run: Run) -> str:
    parsed = run.invocation.parsed
    return f"{parsed.outcome.value}: {parsed.error_message or 'the agent was stopped'}"


def _log_of(job: Job, run: Run, round_no: int) -> Path:
    return agent_log_path(job.config.logs_dir, job.task.id, job.attempt, run.route.tool_name, round_no)


# ------------------------------------------------------------------ the gate and the verify rounds
def _complete(job: Job, runs: list[Run]) -> Verdict:
    """Gate → verify → size → review; a failing verify or a blocking review resumes the agent (each up
    to its own number of rounds), then everything runs again on the new change."""
    try:
        commands = verify_commands(job.config.daemon.verify, job.task.get_list("verify"))
    except ConveyorError as exc:
        return _discard(job, runs, GateFailure("verify", str(exc)))
    rounds = job.config.daemon.verify_rounds
    verify_fixes = 0
    state = _review_state(job, runs[-1])
    while True:
        staged = task_workspace.stage(job.workspace)
        changed = staged.paths
        if not changed:
            return _no_changes(job, runs)
        gate = _gate(job, staged)
        if gate.failure is not None:
            return _discard(job, runs, gate.failure)
        verified = _verify(job, runs[-1], commands, len(runs) - 1)
        if job.cancel.is_set():
            return Verdict("stopped", message="stopped by daemon shutdown")
        failed = next((run for run in verified if not run.passed), None)
        checks = [*gate.checks, *(run.check() for run in verified)]
        if failed is None:
            passed = _passed(job, runs, changed, checks, state, verify_fixes)
            if passed is None:
                continue
            return passed
        if verify_fixes >= rounds:
            return _discard(job, runs, verify_failure(failed, verify_fixes), _verify_extra(job, failed, checks))
        held = job.over_budget()
        if held is not None:
            log.warning("verify.no_fix_round", task_id=job.task.id, budget=held)
            return _discard(job, runs, verify_failure(failed, verify_fixes, f"no fix round: {held}"),
                            _verify_extra(job, failed, checks))
        verify_fixes += 1
        verdict = _resume(job, runs, failed, verify_fixes, rounds)
        if verdict is not None:
            return verdict


# ------------------------------------------------------------------ the review stage and the size gate
def _passed(job: Job, runs: list[Run], changed: list[str], checks: list[CheckResult],
            state: reviewing.ReviewState | None, verify_fixes: int) -> Verdict | None:
    """Gate and verify passed: the size gate, then the review; None when the author fixed review findings
    (so gate, verify and review run again)."""
    too_large = size_gate.over_limit(size_gate.limits_for(job.task, job.config), size_gate.measure(job.workspace))
    if too_large is not None:
        return _too_large(job, runs, changed, checks, too_large, rounds_used=verify_fixes)
    if state is not None:
        step = _review_round(job, runs, state, checks)
        if isinstance(step, Verdict):
            return step
        if step == "again":
            return None
    return _commit_and_publish(job, runs, changed, checks, rounds_used=verify_fixes, review=state)


def _review_state(job: Job, last: Run) -> reviewing.ReviewState | None:
    """The review stage's state for this attempt, or None when it is off (or the pipeline cannot review)."""
    settings = reviewing.settings_for(job.task, job.config)
    if not settings.enabled or job.review is None:
        return None
    state = reviewing.ReviewState(settings, reviewing.reviewer_routes(settings, job.config, last.route))
    if not state.routes:
        state.notes.append("no reviewer: none of the review tools is defined in tools.yaml")
    return state


def _review_round(job: Job, runs: list[Run], state: reviewing.ReviewState,
                  checks: Sequence[CheckResult]) -> Verdict | Literal["publish", "again"]:
    """Review the change; blocking findings go back to the author while rounds and budget last."""
    assert job.review is not None
    reviewing.review_change(state, job.task, job.workspace, [check.as_dict() for check in checks],
                            runner=job.review, over_budget=job.over_budget, cancel=job.cancel)
    if job.cancel.is_set():
        return Verdict("stopped", message="stopped by daemon shutdown")
    if state.status != "changes_requested" or state.fixes >= state.settings.rounds:
        return "publish"
    held = job.over_budget()
    if held is not None:
        state.notes.append(f"no review fix round: {held}")
        return "publish"
    state.fixes += 1
    log.info("review.resume", task_id=job.task.id, round=state.fixes, findings=len(state.blocking()))
    run = _send_back(job, runs, reviewing.fix_prompt(state.blocking(), state.fixes, state.settings.rounds),
                     "## A reviewer requested changes")
    if job.cancel.is_set():
        return Verdict("stopped", message="stopped by daemon shutdown")
    outcome = run.invocation.parsed.outcome
    if outcome is Outcome.TIMEOUT or outcome.is_provider_limit:
        return _partial(job, runs, _stop_reason(run) + " (while fixing review findings)")
    if outcome is not Outcome.OK:
        state.notes.append(f"the author's review fix round {state.fixes} ended with {outcome.value}")
    return "again"


def _too_large(job: Job, runs: list[Run], changed: list[str], checks: list[CheckResult], reason: str, *,
               rounds_used: int) -> Verdict:
    """Over the size gate: a draft labelled `too-large` when the task asks for one, else fail with the
    author's own proposal of how to split the task."""
    log.warning("task.too_large", task_id=job.task.id, reason=reason)
    if size_gate.wants_draft(job.task):
        note = f"> [!WARNING]\n> **Too large.** {reason}. Opened as a draft because the task asks for one."
        return _commit_and_publish(job, runs, changed, [*checks, CheckResult("size", False, reason)],
                                   rounds_used=rounds_used, extra_labels=[size_gate.TOO_LARGE_LABEL],
                                   draft=True, notes=[note])
    extra: dict[str, Any] = {}
    if job.over_budget() is None:
        run = _send_back(job, runs, size_gate.proposal_prompt(reason), "## Your change is too large")
        proposal = withhold_secrets((run.invocation.parsed.final_text or "").strip())
        if run.invocation.parsed.outcome is Outcome.OK and proposal:
            extra["split_proposal"] = proposal[:4000]
    return _discard(job, runs, GateFailure(size_gate.TOO_LARGE_KIND, reason + "; split the task (see "
                                           "split_proposal) or raise the limit"), extra)


def _send_back(job: Job, runs: list[Run], feedback: str, header: str) -> Run:
    """Resume the author's session with `feedback` (or start afresh with the task plus it); the new run is
    appended to `runs`."""
    session = latest_session(runs)
    resumable = session is not None and runs[-1].route.tool.resume_argv is not None
    prompt = feedback if resumable else f"{job.prompt}\n{header}\n\n{feedback}"
    run = job.follow_up(prompt, session if resumable else None, len(runs))
    runs.append(run)
    return run


def _gate(job: Job, staged: StagedChange) -> GateResult:
    """The change from the base (whatever the agent committed, reset or switched), checked as a whole."""
    inside = task_workspace.submodule_changes(job.workspace, staged)
    if inside:
        named = ", ".join(f"'{path}'" for path in inside)
        return GateResult([CheckResult("submodules", False, f"{len(inside)} submodule(s) touched")],
                          GateFailure("submodule", f"the change touches submodule {named}, which Conveyor does "
                                                   "not commit into; change the submodule's own repository, "
                                                   "or leave it out of this task"))
    allowed = job.task.data.get("allowed_paths")
    globs = [str(item) for item in allowed] if isinstance(allowed, list) else None
    return check_change(job.workspace.path, staged.paths, board_dir=job.config.daemon.board_dir,
                        roadmap_file=job.config.daemon.roadmap.file, allowed_globs=globs, diff=staged.diff)


def _verify(job: Job, last: Run, commands: Sequence[VerifyCommand], round_no: int) -> list[VerifyRun]:
    """The verify commands, contained like the agent whose code they run (its tests, its conftest.py):
    in the author tool's sandbox, with that tool's environment minus every credential, and a private HOME
    emptied after each round (a check must not leave anything for the next task's checks)."""
    if not commands:
        return []
    route = last.route
    env = verify_env(job.config, _without_credentials(job.config, build_env(job.env, route.tool.env_allowlist,
                                                                            route.tool.env)))
    home = job.config.state_dir / SANDBOX_DIR / "verify" / job.task.id
    venv = venv_dir(job.config)

    def wrap(argv: list[str], run_env: Mapping[str, str]) -> tuple[list[str], Mapping[str, str]]:
        contained = contain_check(route.tool_name, route.tool, argv, run_env, job.workspace.path, job.sandbox,
                                  home=home, read_also=[venv] if venv else [])
        return contained.argv, contained.env

    try:
        runs = run_verify(commands, worktree=job.workspace.path, env=env,
                          log_dir=job.config.logs_dir / job.task.id, timeout_s=_timeout_s(job), stop=job.cancel,
                          label=f"attempt-{job.attempt}-round-{round_no}", wrap=wrap)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if not _keeps_logs(job):   # metadata privacy keeps no transcripts; the output tail is already read
        for run in runs:
            run.log_path.unlink(missing_ok=True)
    return runs


def _without_credentials(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """`env` without any tool's credential variables nor the pull-request token: verify needs none."""
    secret = {name for tool in config.tools.values() for name in tool.credentials_env}
    secret.add(config.daemon.pull_requests.token_env)
    return {name: value for name, value in env.items() if name not in secret}


def _keeps_logs(job: Job) -> bool:
    return job.config.daemon.privacy == "full"


def _timeout_s(job: Job) -> float:
    return job.task.get_number("timeout_s") or job.config.daemon.task_timeout_s


def _resume(job: Job, runs: list[Run], failed: VerifyRun, round_no: int, rounds: int) -> Verdict | None:
    """Send the failure back to the agent; None when it ran fine (gate and verify again), else the verdict."""
    feedback = verify_feedback(failed, round_no, rounds)
    log.info("verify.resume", task_id=job.task.id, round=round_no, command=failed.command.text)
    run = _send_back(job, runs, feedback, "## Your previous attempt failed verification")
    if job.cancel.is_set():
        return Verdict("stopped", message="stopped by daemon shutdown")
    outcome = run.invocation.parsed.outcome
    if outcome is Outcome.TIMEOUT or outcome.is_provider_limit:
        return _partial(job, runs, _stop_reason(run) + " (while fixing a failing verify command)")
    if outcome is not Outcome.OK:
        note = f"the agent's fix round {round_no} ended with {outcome.value}: {_stop_reason(run)}"
        return _discard(job, runs, verify_failure(failed, round_no - 1, note), _verify_extra(job, failed, []),
                        round_no=len(runs) - 1)
    return None


def _verify_extra(job: Job, failed: VerifyRun, checks: Sequence[CheckResult]) -> dict[str, Any]:
    extra: dict[str, Any] = {"output_tail": failed.output_tail or "(no output)"}
    if _keeps_logs(job):
        extra["verify_log"] = str(failed.log_path)
    if checks:
        extra["checks"] = [check.as_dict() for check in checks]
    return extra


# ------------------------------------------------------------------ endings without a commit
def _no_changes(job: Job, runs: list[Run]) -> Verdict:
    summary = summarize(runs)
    _drop_branch(job)
    if job.task.data.get("expect_changes") is False:
        log.info("task.no_changes", task_id=job.task.id)
        result = result_block(runs, branch=job.branch, changed=[], checks=[], skipped=job.skipped)
        result.update({"summary": "no changes", "branch": None, "commit": None})
        if summary:
            result["agent_summary"] = summary
        return Verdict("finish", result=result)
    failure = no_changes_failure()
    extra = {"agent_summary": summary} if summary else {}
    return Verdict("fail", message=failure.message, kind=failure.kind,
                   log_path=str(_log_of(job, runs[-1], len(runs) - 1)), extra=extra)


def _discard(job: Job, runs: list[Run], failure: GateFailure, extra: dict[str, Any] | None = None, *,
             round_no: int | None = None) -> Verdict:
    """Fail without committing anything; the branch (still at the base) goes too."""
    _drop_branch(job)
    log.error("gate.blocked", task_id=job.task.id, kind=failure.kind)
    index = len(runs) - 1 if round_no is None else round_no
    return Verdict("fail", message=failure.message, kind=failure.kind, extra=extra or {},
                   log_path=str(_log_of(job, runs[-1], index)))


def _drop_branch(job: Job) -> None:
    """A leftover `conveyor/<id>` of an earlier run goes (this run's branch exists only once committed)."""
    git.delete_branch(job.config.repo, job.branch)


# ------------------------------------------------------------------ partial work
def _partial(job: Job, runs: list[Run], reason: str) -> Verdict:
    """Commit and publish what a stopped agent had done, as a draft marked partial (paths and secrets still
    checked: a stopped agent's half-written file can hold a key as well as a finished one)."""
    staged = task_workspace.stage(job.workspace)
    changed = staged.paths
    if not changed:
        return Verdict("fail", message=f"the agent was stopped ({reason}) before changing any file",
                       kind=runs[-1].invocation.parsed.outcome.value,
                       log_path=str(_log_of(job, runs[-1], len(runs) - 1)))
    gate = _gate(job, staged)
    if gate.failure is not None:
        return _discard(job, runs, gate.failure)
    if job.task.follow_up is not None:   # half a change is not pushed onto a pull request a person reviews
        return _discard(job, runs, GateFailure("partial", f"the agent was stopped ({reason}) before it finished; "
                                               "nothing was pushed to the pull request"))
    log.warning("task.partial", task_id=job.task.id, reason=reason, files=len(changed))
    skipped = CheckResult("verify", False, "not run: the agent was stopped before it finished", skipped=True)
    return _commit_and_publish(job, runs, changed, [*gate.checks, skipped], rounds_used=len(runs) - 1,
                               partial_reason=reason)


# ------------------------------------------------------------------ commit and publish
def _commit_and_publish(job: Job, runs: list[Run], changed: list[str], checks: list[CheckResult], *,
                        rounds_used: int, partial_reason: str | None = None,
                        review: reviewing.ReviewState | None = None, extra_labels: Sequence[str] = (),
                        draft: bool = False, notes: Sequence[str] = ()) -> Verdict:
    totals = Totals.of(runs)
    summary = summarize(runs)
    last = runs[-1]
    model = last.invocation.parsed.model or last.route.model
    message = commit_message(job.task, kind=job.commit_type, tool=last.route.tool_name, model=model,
                             cost=totals.cost, summary=summary, partial_reason=partial_reason,
                             review=review.status if review is not None else None)
    author = job.config.daemon.commit
    sha = task_workspace.commit(job.workspace, message, author.author_name, author.author_email)
    log.info("task.committed", task_id=job.task.id, commit=sha, files=len(changed),
             partial=bool(partial_reason))
    check_dicts = [check.as_dict() for check in checks]
    if job.task.follow_up is not None:
        return _publish_follow_up(job, runs, job.task.follow_up, sha=sha, summary=summary, changed=changed,
                                  checks=check_dicts, review=review, rounds_used=rounds_used)
    if review is not None:
        notes = [review.body_section(), *notes]
        extra_labels = [*review.labels(), *extra_labels]
        draft = draft or review.holds_draft()
    published = publish_commit(job.config, job.env, job.task, job.branch, sha=sha, summary=summary,
                               files=changed, checks=check_dicts, totals=totals, tool=last.route.tool_name,
                               model=model, partial_reason=partial_reason, notes=notes,
                               extra_labels=extra_labels, draft=draft, still_mine=job.still_mine)
    job.telemetry.record_result(last.row_id, commit_sha=sha, pr_url=published.pr_url, branch=job.branch)
    result = result_block(runs, branch=job.branch, changed=changed, checks=check_dicts, skipped=job.skipped)
    result.update({"commit": sha, "pr_url": published.pr_url, "publish": published.message})
    missing = _missing_artefacts(job, changed, sha)
    if missing:   # named by the task, neither changed nor present: a reviewer should know before merging
        result["artefacts_missing"] = missing
    if published.pending:
        result["publish_pending"] = published.pending
    if rounds_used:
        result["verify_rounds"] = rounds_used
    if partial_reason:
        result.update({"partial": True, "partial_reason": partial_reason})
    if review is not None:
        result["review"] = review.record()
    if extra_labels:
        result["labels"] = list(dict.fromkeys(extra_labels))
    return Verdict("finish", result=result)


def _publish_follow_up(job: Job, runs: list[Run], follow_up: FollowUpBlock, *, sha: str, summary: str,
                       changed: list[str], checks: list[dict[str, Any]], review: reviewing.ReviewState | None,
                       rounds_used: int) -> Verdict:
    """A follow-up's commit goes onto its PR's branch (fast-forward) with an answer on the thread, not into a
    new pull request; a PR closed meanwhile gets nothing, a branch that moved means starting again."""
    status = review.status if review is not None else None
    published = publish_follow_up(job.config, job.env, job.task.id, follow_up, sha=sha, summary=summary,
                                  files=changed, review=status, labels=review.labels() if review else (),
                                  still_mine=job.still_mine, answered_before=False)
    if published.outcome in ("moved", "not_open"):
        _drop_branch(job)
    if published.outcome == "moved":
        if followups.restarts(job.task) < followups.MAX_RESTARTS:
            return Verdict("restart", message=published.message + "; starting again from its new head")
        return Verdict("fail", kind="follow_up_branch_moved", message=(
            f"{published.message}, again after starting over from its new head; nothing was pushed. Push nothing "
            f"to '{follow_up.branch}' while Conveyor works on it, then `conveyor task retry {job.task.id}`"))
    pushed = published.outcome in ("pushed",) or published.pending == "reply"
    result = result_block(runs, branch=follow_up.branch, changed=changed, checks=checks, skipped=job.skipped)
    for key in [key for key in result if key.startswith("next_")]:
        result.pop(key)   # a follow-up hands nothing on: its agent was given a stranger's words
    not_open = published.outcome == "not_open"
    result.update({"commit": None if not_open else sha, "pr_url": follow_up.pr_url, "publish": published.message,
                   "follow_up": {"of": follow_up.of, "pr": follow_up.pr, "event_id": follow_up.event_id,
                                 "trigger": follow_up.trigger, "pushed": pushed, "parent": job.workspace.base,
                                 "status": f"skipped_{published.state}" if not_open else published.outcome,
                                 "reply_url": published.reply_url}})
    if not_open:
        result["summary"] = f"not pushed: pull request #{follow_up.pr} was {published.state} meanwhile"
    if published.pending:
        result["publish_pending"] = published.pending
    if published.pending or published.outcome == "local":   # the commit lives on this branch until pushed
        result["work_branch"] = job.branch
    if rounds_used:
        result["verify_rounds"] = rounds_used
    if review is not None:
        result["review"] = review.record()
    # no telemetry.record_result: the PR's outcome (merged, closed) stays the original task's, which opened it
    return Verdict("finish", result=result)


def _missing_artefacts(job: Job, changed: Sequence[str], sha: str) -> list[str]:
    """Artefacts the task names (plain paths, not patterns) that the change neither touched nor holds: read
    from the commit, never from the agent's working tree."""
    names = [name for name in job.task.artefacts if not any(ch in name for ch in "*?[") and name not in changed]
    if not names:
        return []
    try:
        present = set(git.run(job.workspace.repo, "ls-tree", "-r", "--name-only", sha, "--", *names).splitlines())
    except ConveyorError:
        return []
    return [name for name in names if name not in present]
