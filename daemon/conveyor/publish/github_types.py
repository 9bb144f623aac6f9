"""The parts of GitHub publishing that need no GitHub client: errors, results and remote URL parsing.

Kept apart from `github.py` so that modules deciding *whether* to publish (and the daemon at start-up)
do not import PyGithub, which costs about 15 MB of memory; the client is imported when a pull request
is actually opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from conveyor.core.errors import ConveyorError

PullState = Literal["open", "merged", "closed"]
# What the review stage says on a pull request nobody approved; a later approved follow-up takes them off.
UNREVIEWED_LABEL = "unreviewed"
CHANGES_LABEL = "changes-requested"
REVIEW_LABELS = (UNREVIEWED_LABEL, CHANGES_LABEL)

_NAME = r"[A-Za-z0-9_.-]+"
_REPO_NAME = re.compile(rf"(?!\.\.?/){_NAME}/(?!\.\.?$){_NAME}")
_SCP_REMOTE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>[^/\s].*)$")
_REMOTE_SCHEMES = frozenset({"https", "http", "ssh", "git", "git+ssh", "ssh+git"})


class GitHubError(ConveyorError):
    """Publishing through the GitHub API failed; `transient` says whether trying later may help."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class GitHubAuthError(GitHubError):
    """The token is missing, rejected, or lacks a permission."""


class GitHubNotFoundError(GitHubError):
    """The repository (or pull request) does not exist, or the token cannot see it."""


class GitHubValidationError(GitHubError):
    """GitHub refused the request as invalid (422): unpushed branch, no commits, bad base..."""


class GitHubUnavailableError(GitHubError):
    """GitHub could not be reached, timed out, failed (5xx) or rate-limited us: try again later."""


@dataclass(frozen=True)
class PullRequestRef:
    """The pull request for a task's branch; `created` is False when an existing one was found."""

    number: int
    url: str
    created: bool
    state: PullState = "open"
    draft: bool = False


def repo_from_remote_url(url: str) -> str | None:
    """"owner/name" from a GitHub or GitHub Enterprise remote URL; None for local paths and other shapes.

    Accepts scp-like (`git@host:o/r.git`) and URL forms (`https://host/o/r(.git)`, `ssh://git@host/o/r`),
    ignoring any credentials embedded in the URL.
    """
    text = url.strip()
    scp = _SCP_REMOTE.match(text) if "://" not in text else None
    if scp is not None:
        path = scp["path"]
    else:
        try:
            parts = urlsplit(text)
        except ValueError:
            return None
        if parts.scheme.lower() not in _REMOTE_SCHEMES or not parts.hostname:
            return None
        path = parts.path
    path = path.strip("/")
    path = path.removesuffix(".git").rstrip("/")
    return path if _REPO_NAME.fullmatch(path) else None
