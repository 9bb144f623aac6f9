"""A task's commit message, and publishing its committed branch with the pull request that tells its story.

Used right after the commit by the completion flow, and by start-up recovery when a crash came between the
commit and the end of publishing (the message carries what recovery needs: the summary and, for partial
work, the `Conveyor-Partial` trailer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from conveyor.config import Config
from conveyor.core.printable import printable
from conveyor.core.task import Task
from conveyor.publish.flow import Published, PublishRequest, destination, publish
from conveyor.publish.pull_request import PullRequestContent, labels_for, render_body, render_title, task_link
from conveyor.runner.types import Tokens
from conveyor.workspace.base_branch import task_base

PARTIAL_TRAILER = "Conveyor-Partial"
REVIEW_TRAILER = "Conveyor-Review"     # the review stage's outcome; recovery publishes a draft unless `approved`
SUBJECT_LIMIT = 100
BODY_LIMIT = 1500


class Totals(Protocol):
    """What a pull request reports of an attempt's runs (the pipeline's `Totals` has this shape)."""

    @property
    def tokens(self) -> Tokens: ...
    @property
    def cost(self) -> float: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def turns(self) -> int | None: ...


def commit_message(task: Task, *, kind: str, tool: str, model: str | None, cost: float, summary: str,
                   partial_reason: str | None = None, review: str | None = None) -> str:
    """`<type>(<agent>): <title>` then the agent's summary, then Conveyor's trailers."""
    title = " ".join(task.title.split())
    subject = f"{kind}({task.agent}): {title}"
    if len(subject) > SUBJECT_LIMIT:
        subject = subject[: SUBJECT_LIMIT - 3] + "..."
    body = summary.strip()[:BODY_LIMIT]
    trailers = [f"Conveyor-Task: {task.id}", f"Agent: {task.agent}", f"Tool: {tool}",
                f"Model: {model or 'default'}", f"Cost-USD: {cost:.4f}"]
    if partial_reason:
        trailers.append(f"{PARTIAL_TRAILER}: {' '.join(partial_reason.split())[:200]}")
    if review:
        trailers.append(f"{REVIEW_TRAILER}: {review}")
    return f"{subject}\n\n" + (f"{body}\n\n" if body else "") + "\n".join(trailers) + "\n"


def commit_summary(message: str) -> str:
    """The agent's summary back out of a message `commit_message` wrote."""
    paragraphs = message.strip().split("\n\n")
    return "\n\n".join(paragraphs[1:-1]).strip()


def publish_commit(config: Config, env: Mapping[str, str], task: Task, branch: str, *, sha: str, summary: str,
                   files: Sequence[str], checks: Sequence[Mapping[str, Any]], totals: Totals,
                   tool: str | None, model: str | None, partial_reason: str | None,
                   notes: Sequence[str] = (), extra_labels: Sequence[str] = (), draft: bool = False,
                   still_mine: Callable[[], bool] | None = None) -> Published:
    """Push the task's branch and open (or find) its pull request; partial work goes as a labelled draft.

    `extra_labels` and `draft` come from the review stage and the size gate (`unreviewed`,
    `changes-requested`, `too-large`): work nobody approved is not offered as ready to merge."""
    settings = config.daemon
    where = destination(config.repo, settings)
    base, _note = task_base(config.repo, task.base_branch, settings.base_branch)
    task_path = f"{settings.board_dir}/done/{task.agent}/{task.id}.yaml"
    link = task_link(task_path, github_repo=where.github_repo, api_url=settings.pull_requests.api_url,
                     base=base)
    content = PullRequestContent(
        task_id=task.id, agent=task.agent, description=str(task.data.get("description") or ""),
        summary=summary, files=files, checks=checks, tokens=totals.tokens.as_dict(), cost_usd=totals.cost,
        task_link=link, tool=tool, model=model, commit=sha, partial_reason=partial_reason, notes=notes)
    partial = partial_reason is not None
    request = PublishRequest(
        branch=branch, base=base, title=printable(render_title(task.title, partial=partial)),
        body=printable(render_body(content)),
        labels=labels_for([*settings.pull_requests.labels, *extra_labels], task.get_list("labels"),
                          partial=partial),
        draft=settings.pull_requests.draft or partial or draft)
    return publish(config.repo, settings, env, where, request, still_mine=still_mine)
