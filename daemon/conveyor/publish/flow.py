"""Publish a committed task branch: push it to the configured remote, then open (or find) its pull request.

Every step that cannot happen is a sentence in the result, not a task failure: the commit is the work,
and a branch that stays local (no remote, no token, GitHub down) is still reviewable. The sentence
(`result.publish`) says what happened and what to set to get further. Both steps are idempotent, so
start-up recovery can run them again after a crash between push and finish: pushing the same commit is
a no-op and `ensure_pull_request` finds the pull request opened the first time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from conveyor.config.models import DaemonSettings
from conveyor.core.errors import GitError
from conveyor.publish.github_types import GitHubError, PullRequestRef, repo_from_remote_url
from conveyor.workspace import git

log = structlog.get_logger()

_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")


@dataclass(frozen=True)
class Destination:
    """Where a branch goes: the remote (None: it stays local, `why_local` says why) and its GitHub repo."""

    remote: str | None
    github_repo: str | None
    why_local: str | None = None


@dataclass(frozen=True)
class PublishRequest:
    branch: str
    base: str
    title: str
    body: str
    labels: Sequence[str]
    draft: bool


@dataclass(frozen=True)
class Published:
    """What publishing achieved: `message` becomes `result.publish`; `pr_url` goes to result and telemetry."""

    message: str
    pr_url: str | None = None
    pushed: bool = False
    pull_request: PullRequestRef | None = None
    pending: str | None = None      # "push" or "pull_request": what the periodic retry still owes


def destination(repo: Path, settings: DaemonSettings) -> Destination:
    """The remote to push to and the GitHub repository of its pull requests, as far as they are known."""
    name = settings.remote.name
    if not name:
        return Destination(None, settings.pull_requests.repo, "local branch only (remote.name is null)")
    url = git.remote_url(repo, name)
    if url is None:
        return Destination(None, settings.pull_requests.repo, f"local branch only (no remote '{name}')")
    github_repo = settings.pull_requests.repo or repo_from_remote_url(url)
    if not settings.remote.push:
        return Destination(None, github_repo, "local branch only (remote.push is false)")
    return Destination(name, github_repo)


def publish(repo: Path, settings: DaemonSettings, env: Mapping[str, str], where: Destination,
            request: PublishRequest, *, still_mine: Callable[[], bool] | None = None) -> Published:
    """Push `request.branch` to `where.remote`, then ensure its pull request; never raises for either.

    In a fleet (`still_mine` given) the lease's fence is compared just before the push, and the push only
    fast-forwards: a node whose lease passed on pushes nothing, and cannot replace another node's commit."""
    bound = log.bind(branch=request.branch)
    if where.remote is None:
        bound.info("publish.local_only", reason=where.why_local)
        return Published(where.why_local or "local branch only")
    if still_mine is not None and not still_mine():
        bound.warning("publish.fenced", note="the lease passed to another node: nothing pushed")
        return Published("not pushed: the lease passed to another node")
    try:
        git.push(repo, where.remote, request.branch, replace=still_mine is None)
    except GitError as exc:
        reason = _URL_CREDENTIALS.sub(r"\1***@", str(exc))
        bound.error("publish.push_failed", remote=where.remote, error=reason)
        return Published(f"not pushed to '{where.remote}' ({reason}); the branch stays local until a retry "
                         "succeeds", pending="push")
    bound.info("publish.pushed", remote=where.remote)
    pushed = f"pushed to '{where.remote}'"
    missing = why_no_pull_request(settings, env, where)
    if missing is not None or where.github_repo is None:
        bound.info("publish.no_pull_request", reason=missing)
        return Published(f"{pushed}; {missing}", pushed=True)
    return _open(settings, env[settings.pull_requests.token_env].strip(), where.github_repo, request, pushed)


def why_no_pull_request(settings: DaemonSettings, env: Mapping[str, str], where: Destination) -> str | None:
    """Why no pull request would be opened (None: one would); `conveyor doctor` asks this before any run."""
    prs = settings.pull_requests
    if not prs.enabled:
        return "no pull request opened (pull_requests.enabled is false)"
    if where.github_repo is None:
        return ("no pull request opened: the remote's URL does not name a GitHub repository; set "
                "pull_requests.repo (owner/name) in config/daemon.yaml")
    if not env.get(prs.token_env, "").strip():
        return (f"no pull request opened: ${prs.token_env} is not set; put a token that can open pull "
                f"requests in {where.github_repo} there (or name another variable in "
                "pull_requests.token_env)")
    return None


def _open(settings: DaemonSettings, token: str, github_repo: str, request: PublishRequest,
          pushed: str) -> Published:
    prs = settings.pull_requests
    try:
        from conveyor.publish.github import GitHubPublisher  # PyGithub only when a PR is opened

        with GitHubPublisher(prs.api_url, token, github_repo, token_source=f"${prs.token_env}") as client:
            ref = client.ensure_pull_request(head=request.branch, base=request.base, title=request.title,
                                             body=request.body, labels=request.labels, draft=request.draft)
    except GitHubError as exc:
        log.error("publish.pull_request_failed", branch=request.branch, error=str(exc),
                  transient=exc.transient)
        return Published(f"{pushed}; the pull request could not be opened: {exc}", pushed=True,
                         pending="pull_request")
    except Exception as exc:   # an answer the client cannot read: the commit is pushed, the work is done
        log.exception("publish.pull_request_unreadable", branch=request.branch)
        return Published(f"{pushed}; the pull request could not be confirmed: GitHub's answer could not be read "
                         f"({type(exc).__name__}); it is looked for again later", pushed=True,
                         pending="pull_request")
    if ref.created:
        said = f"opened {'draft ' if ref.draft else ''}pull request #{ref.number}"
    else:
        said = f"pull request #{ref.number} already existed ({ref.state})"
    return Published(f"{pushed}; {said}", pr_url=ref.url, pushed=True, pull_request=ref)
