"""What became of each task's change: merged or closed, for cost per merged change and acceptance rate.

A periodic job looks at every committed task branch whose outcome is not yet known. Merged into the
base branch locally counts as merged (even after the branch was deleted: its commit is then looked for
in the base branch); otherwise the pull request's state is asked of the publisher (GitHub), which also
sees squash merges and closed pull requests. Each decision is recorded once in `pull_requests`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from conveyor.config import Config
from conveyor.core.errors import ConveyorError, GitError
from conveyor.core.timeutil import Clock
from conveyor.telemetry.base import TelemetryStore
from conveyor.workspace import git

log = structlog.get_logger("conveyor.publish.outcomes")
DECIDED = ("merged", "closed")


class OutcomeSource(Protocol):
    """What detection needs of a publisher: the state of a branch's pull request."""

    def state_of(self, head: str) -> str | None: ...


PublisherFactory = Callable[[Config], OutcomeSource | None]


def merged_locally(config: Config, branch: str, commit_sha: str | None, base: str) -> bool:
    """The branch (or, once deleted, its task commit) is reachable from the base branch."""
    if git.branch_exists(config.repo, branch):
        return git.is_merged(config.repo, branch, base)
    if not commit_sha:
        return False
    try:
        git.run(config.repo, "merge-base", "--is-ancestor", commit_sha, f"refs/heads/{base}")
    except GitError:
        return False
    return True


def detect_outcomes_safely(config: Config, telemetry: TelemetryStore, publisher_factory: PublisherFactory | None,
                           clock: Clock) -> None:
    """`detect_outcomes` for a background thread: a failing lookup is logged and tried again next period."""
    try:
        detect_outcomes(config, telemetry, publisher_factory, clock=clock)
    except Exception:
        log.exception("outcome.detection_failed")


def detect_outcomes(config: Config, telemetry: TelemetryStore, publisher_factory: PublisherFactory | None = None,
                    *, clock: Clock | None = None) -> list[dict[str, Any]]:
    """Record newly merged or closed task changes; returns what was recorded (branch, task_id, state)."""
    rows = telemetry.awaiting_outcome()
    if not rows:
        return []
    base = config.daemon.base_branch
    publisher: OutcomeSource | None = None
    asked_for_publisher = False
    recorded = []
    now = (clock or time.time)()
    try:
        for row in rows:
            state = "merged" if merged_locally(config, row["branch"], row["commit_sha"], base) else None
            if state is None and publisher_factory is not None:
                if not asked_for_publisher:
                    publisher, asked_for_publisher = _open(publisher_factory, config), True
                state = _remote_state(publisher, row["branch"])
            if state in DECIDED:
                telemetry.record_outcome(row, str(state), now)
                recorded.append({"branch": row["branch"], "task_id": row["task_id"], "state": state})
                log.info("outcome.recorded", task_id=row["task_id"], branch=row["branch"], state=state)
    finally:
        close = getattr(publisher, "close", None)
        if callable(close):
            close()
    return recorded


def _open(factory: PublisherFactory, config: Config) -> OutcomeSource | None:
    try:
        return factory(config)
    except ConveyorError as exc:
        log.warning("outcome.publisher_unavailable", error=str(exc))
        return None


def _remote_state(publisher: OutcomeSource | None, branch: str) -> str | None:
    if publisher is None:
        return None
    try:
        return publisher.state_of(branch)
    except ConveyorError as exc:
        log.warning("outcome.lookup_failed", branch=branch, error=str(exc))
        return None


def github_factory(env: Mapping[str, str] | None = None) -> PublisherFactory:
    """Pull-request states from GitHub when daemon.yaml enables pull requests and the token is set."""
    source = os.environ if env is None else env

    def factory(config: Config) -> OutcomeSource | None:
        from conveyor.publish.github import GitHubPublisher, repo_from_remote_url

        settings = config.daemon.pull_requests
        remote = config.daemon.remote.name
        token = source.get(settings.token_env, "")
        if not settings.enabled or not token or remote is None or config.daemon.follow_up.enabled:
            return None   # with follow_up on, the PR watcher records merged/closed (conditional requests: free)
        url = git.remote_url(config.repo, remote)
        name = settings.repo or (repo_from_remote_url(url) if url else None)
        if name is None:
            return None
        return GitHubPublisher(settings.api_url, token, name, token_source=f"${settings.token_env}")

    return factory
