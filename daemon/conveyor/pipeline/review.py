"""The review stage: a second CLI reads the change read-only and ends with a machine-readable verdict.

After the gate and verify pass, the reviewer (by default the other CLI than the author's) runs in the
task's worktree through its tool's `review_argv` (claude's plan mode, codex's read-only sandbox) and sees
the task, the diff against the base and the verify results. It must end with a fenced JSON block:

    {"verdict": "approve" | "request_changes",
     "findings": [{"file": "a.py", "line": 3, "severity": "high", "message": "..."}]}

A missing or malformed verdict is asked for once more, and is never read as approval: the change then
opens as a draft labelled `unreviewed`. Findings at or above `block_at` go back to the author (its session
resumed) up to `rounds` times; each later review sees only what changed since the tree it last reviewed.
A reviewer stopped by a provider limit (or not installed, or paused) hands over to the next reviewer.
The reviewer's words are data: they reach the author's prompt and the pull request body, never a shell.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.checks.gate import withhold_secrets
from conveyor.config import Config
from conveyor.config.models import SEVERITIES, ReviewSettings, Severity
from conveyor.core.errors import ToolUnavailable
from conveyor.core.task import Task
from conveyor.pipeline.runs import Run, Totals
from conveyor.publish.github_types import CHANGES_LABEL, UNREVIEWED_LABEL
from conveyor.runner.types import Outcome
from conveyor.scheduling.router import Route, agent_settings
from conveyor.workspace import task_workspace
from conveyor.workspace.task_workspace import Workspace

log = structlog.get_logger("conveyor.pipeline.review")

DIFF_LIMIT = 60_000          # characters of diff in the reviewer's prompt; the rest it can read itself
FINDINGS_SHOWN = 30          # in the pull request body and in the author's fix prompt
MESSAGE_LIMIT = 500
PAIRED_TOOL = {"claude-code": "codex", "codex": "claude-code"}
_FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*?)```", re.DOTALL)

# prompt, reviewer route, invocation number → the reviewer's run (read-only, role `reviewer`)
ReviewRunner = Callable[[str, Route, int], Run]
Status = Literal["approved", "changes_requested", "unreviewed"]


class _FindingModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    file: str = Field(min_length=1, max_length=1000)
    line: int | None = Field(default=None, ge=0)
    severity: Severity
    message: str = Field(min_length=1)


class _VerdictModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    verdict: Literal["approve", "request_changes"]
    findings: list[_FindingModel] = Field(default_factory=list)
    summary: str = ""


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    severity: Severity
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "severity": self.severity, "message": self.message}

    def one_line(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"[{self.severity}] {where}: {' '.join(self.message.split())}"


@dataclass(frozen=True)
class ReviewVerdict:
    decision: Literal["approve", "request_changes"]
    findings: tuple[Finding, ...]
    summary: str = ""


def parse_verdict(text: str | None) -> ReviewVerdict | None:
    """The last fenced JSON block that is a valid verdict (or the whole text when it is one); None when
    there is none: a missing or malformed verdict, never an approval."""
    if not text:
        return None
    candidates = [*reversed(_FENCED.findall(text))]
    if text.strip().startswith("{"):
        candidates.append(text.strip())
    for candidate in candidates:
        try:
            model = _VerdictModel.model_validate(json.loads(candidate))
        except (ValueError, ValidationError):
            continue
        findings = tuple(Finding(f.file, f.line, f.severity, withhold_secrets(f.message)[:MESSAGE_LIMIT])
                         for f in model.findings)
        return ReviewVerdict(model.verdict, findings, withhold_secrets(model.summary)[:MESSAGE_LIMIT])
    return None


def blocking(verdict: ReviewVerdict, block_at: Severity) -> list[Finding]:
    """Findings at or above the configured severity; only these send the change back to the author."""
    floor = SEVERITIES.index(block_at)
    return [finding for finding in verdict.findings if SEVERITIES.index(finding.severity) >= floor]


def settings_for(task: Task, config: Config) -> ReviewSettings:
    """The agent's own `review` block, else daemon.yaml's; a task may say `review: false` to skip it."""
    own = agent_settings(task, config).review
    chosen = own if own is not None else config.daemon.review
    if task.data.get("review") is False:
        return chosen.model_copy(update={"enabled": False})
    return chosen


def reviewer_routes(settings: ReviewSettings, config: Config, author: Route) -> list[Route]:
    """The reviewer, then its fallbacks: by default the other CLI, then the author's CLI (another model
    when `model` names one); tools missing from tools.yaml are left out."""
    first = settings.tool or PAIRED_TOOL.get(author.tool_name, author.tool_name)
    entries: list[tuple[str, str | None, str]] = [(first, settings.model, "reviewer")]
    fallback = settings.fallback if settings.fallback is not None else [author.tool_name]
    for entry in fallback:
        name, _, pinned = entry.partition(":")
        entries.append((name, pinned or None, f"fallback reviewer {entry}"))
    routes: list[Route] = []
    for tool, model, why in entries:
        if tool in config.tools and (tool, model) not in {(r.tool_name, r.model) for r in routes}:
            routes.append(Route(tool, config.tools[tool], model, why))
    return routes


@dataclass
class ReviewState:
    """Everything the review stage learned over the rounds of one attempt; goes to result, PR and trailer."""

    settings: ReviewSettings
    routes: list[Route]
    runs: list[Run] = field(default_factory=list)
    reviews: int = 0                       # verdicts obtained
    fixes: int = 0                         # author fix rounds sent back by the reviewer
    last_tree: str | None = None
    last: ReviewVerdict | None = None
    reviewer: str | None = None
    notes: list[str] = field(default_factory=list)
    invocations: int = 0
    current: bool = False                  # the last verdict is about the tree as it is now

    def blocking(self) -> list[Finding]:
        return blocking(self.last, self.settings.block_at) if self.last is not None else []

    @property
    def status(self) -> Status:
        if self.last is None or not self.current:
            return "unreviewed"
        if self.last.decision == "request_changes" and self.blocking():
            return "changes_requested"
        return "approved"

    def labels(self) -> list[str]:
        return {"approved": [], "unreviewed": [UNREVIEWED_LABEL], "changes_requested": [CHANGES_LABEL]}[self.status]

    def holds_draft(self) -> bool:
        return self.status != "approved" and self.settings.required

    def record(self) -> dict[str, Any]:
        """`result.review`: verdict, findings, rounds, the reviewer and what reviewing cost."""
        totals = Totals.of(self.runs) if self.runs else None
        record: dict[str, Any] = {
            "status": self.status, "verdict": self.last.decision if self.last else None,
            "rounds": self.reviews, "fix_rounds": self.fixes, "reviewer": self.reviewer,
            "block_at": self.settings.block_at,
            "findings": [finding.as_dict() for finding in (self.last.findings if self.last else ())],
            "tokens": totals.tokens.as_dict() if totals else {}, "cost_usd": totals.cost if totals else 0.0}
        if self.notes:
            record["notes"] = list(self.notes)
        return record

    def body_section(self) -> str:
        """The pull request's "Review" section: what a person reads before the diff."""
        heading = {"approved": "✅ approved", "changes_requested": "❌ changes requested (rounds exhausted)",
                   "unreviewed": "⚠️ unreviewed: no valid verdict"}[self.status]
        lines = [f"## Review: {heading}", ""]
        cost = Totals.of(self.runs).cost if self.runs else 0.0
        lines.append(f"**Reviewer:** {self.reviewer or 'none'} · **reviews:** {self.reviews} · "
                     f"**fix rounds:** {self.fixes} · **blocks at:** {self.settings.block_at} · "
                     f"**cost:** ${cost:.4f}")
        if self.last is not None and self.last.summary:
            lines += ["", _quote(self.last.summary)]
        findings = self.last.findings if self.last else ()
        if findings:
            lines += ["", "| Severity | Where | Finding |", "| --- | --- | --- |"]
            for finding in findings[:FINDINGS_SHOWN]:
                where = f"{finding.file}:{finding.line}" if finding.line else finding.file
                lines.append(f"| {finding.severity} | `{_cell(where)}` | {_cell(finding.message)} |")
            if len(findings) > FINDINGS_SHOWN:
                lines.append(f"| | | ... and {len(findings) - FINDINGS_SHOWN} more (see the task's result) |")
        for note in self.notes:
            lines += ["", f"_{_cell(note)}_"]
        return "\n".join(lines)


def review_prompt(task: Task, diff: str, checks: Sequence[Mapping[str, Any]], *,
                  previous: ReviewVerdict | None) -> str:
    """What the reviewer reads: the task, the diff (whole, or since the last review), the checks, the format."""
    shown = diff if len(diff) <= DIFF_LIMIT else diff[:DIFF_LIMIT] + "\n... (diff cut; read the files)\n"
    parts = [f"# Review of task {task.id}",
             "You are reviewing another agent's change. Do not edit files and do not run commands that "
             "change anything; read the files in this directory as you need.",
             f"## The task\n\nTitle: {task.title}\n\n{task.data.get('description') or ''}".rstrip()]
    if previous is None:
        parts.append(f"## The change (diff against the base branch)\n\n```diff\n{shown}\n```")
    else:
        earlier = "\n".join(f"- {finding.one_line()}" for finding in previous.findings[:FINDINGS_SHOWN])
        parts.append("## Your previous review asked for changes\n\n" + (earlier or "(no findings listed)"))
        parts.append(f"## What changed since your previous review\n\n```diff\n{shown}\n```\n\n"
                     "Judge whether your findings are fixed and whether the new lines add problems.")
    rows = "\n".join(f"- {check.get('check')}: {check.get('result')} ({check.get('detail')})" for check in checks)
    parts.append(f"## Checks already run by Conveyor\n\n{rows or '(none)'}")
    parts.append(
        "## Your answer\n\nEnd your answer with exactly one fenced JSON block:\n\n```json\n"
        '{"verdict": "approve", "summary": "one sentence", "findings": [{"file": "path", "line": 1, '
        '"severity": "low", "message": "what is wrong and how to fix it"}]}\n```\n\n'
        f"`verdict` is `approve` or `request_changes`; `severity` is one of {', '.join(SEVERITIES)}. "
        "List real defects only: no praise, no style preferences.")
    return "\n\n".join(parts) + "\n"


def fix_prompt(findings: Sequence[Finding], round_no: int, rounds: int) -> str:
    """The author's resumed turn: the blocking findings, one per line."""
    listed = "\n".join(f"- {finding.one_line()}" for finding in findings[:FINDINGS_SHOWN])
    return (f"A reviewer requested changes (review fix round {round_no} of {rounds}). Fix these findings in "
            f"the files, then say briefly what you changed:\n\n{listed}\n")


def review_change(state: ReviewState, task: Task, workspace: Workspace, checks: Sequence[Mapping[str, Any]], *,
                  runner: ReviewRunner, over_budget: Callable[[], str | None],
                  cancel: threading.Event) -> ReviewVerdict | None:
    """One review round: each reviewer in turn (past provider limits), one retry for a bad verdict."""
    tree = task_workspace.staged_tree(workspace)
    diff = task_workspace.review_diff(workspace, state.last_tree)
    state.current = False
    prompt = review_prompt(task, diff, checks, previous=state.last)
    bound = log.bind(task_id=task.id, review=state.reviews + 1)
    for route in list(state.routes):
        label = route.tool_name + (f":{route.model}" if route.model else "")
        for _ in range(2):   # the verdict, and once more if it was missing or malformed
            held = over_budget()
            if held is not None:
                state.notes.append(f"review stopped: {held}")
                bound.warning("review.no_budget", budget=held)
                return None
            state.invocations += 1
            try:
                run = runner(prompt, route, state.invocations)
            except ToolUnavailable as exc:
                state.notes.append(f"reviewer {label} unavailable: {exc}")
                bound.warning("review.unavailable", reviewer=label)
                state.routes.remove(route)
                break
            state.runs.append(run)
            if cancel.is_set():
                return None
            parsed = run.invocation.parsed
            if parsed.outcome.is_provider_limit:
                state.notes.append(f"reviewer {label} stopped by {parsed.outcome.value}; next reviewer")
                bound.warning("review.limited", reviewer=label, outcome=parsed.outcome.value)
                state.routes.remove(route)
                break
            verdict = parse_verdict(parsed.final_text) if parsed.outcome is Outcome.OK else None
            if verdict is not None:
                state.last, state.last_tree, state.reviewer, state.current = verdict, tree, label, True
                state.reviews += 1
                bound.info("review.verdict", reviewer=label, verdict=verdict.decision,
                           findings=len(verdict.findings), blocking=len(state.blocking()))
                return verdict
            bound.warning("review.malformed", reviewer=label, outcome=parsed.outcome.value)
            state.notes.append(f"reviewer {label} gave no valid verdict ({parsed.outcome.value})")
        else:
            return None   # asked twice, no verdict: unreviewed (another reviewer would be verdict shopping)
    return None


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:MESSAGE_LIMIT]


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())
