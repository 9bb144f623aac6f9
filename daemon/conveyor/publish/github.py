"""Open and follow a task's pull request through the GitHub REST API (GitHub.com or Enterprise).

`ensure_pull_request` is idempotent: it looks for a pull request from the branch first, so a rerun
after a crash returns the same one, and a creation that loses a race to another run ("already exists")
falls back to the lookup. Retries are few on purpose: only reads are retried on server errors (a
retried POST could open a second pull request), connection errors once, and rate limits are not
slept through inside a worker. Every PyGithub or network failure becomes a `GitHubError` whose message
says what to do and never contains the token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests.exceptions
import structlog
import urllib3.exceptions
from github import Auth, Github, GithubException
from github.PullRequest import PullRequest
from github.Requester import Requester
from urllib3.util.retry import Retry

from conveyor import __version__
from conveyor.publish.github_types import (
    _REPO_NAME,
    GitHubAuthError,
    GitHubError,
    GitHubNotFoundError,
    GitHubUnavailableError,
    GitHubValidationError,
    PullRequestRef,
    PullState,
    repo_from_remote_url,
)

__all__ = ["GitHubAuthError", "GitHubError", "GitHubNotFoundError", "GitHubPublisher", "GitHubUnavailableError",
           "GitHubValidationError", "PullRequestRef", "PullState", "repo_from_remote_url", "retry_policy"]

log = structlog.get_logger()

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_TIMEOUT_S = 30
DEFAULT_TOKEN_SOURCE = "$GITHUB_TOKEN"
# GitHub asks integrators to space content-creating requests by about a second (secondary rate limits).
DEFAULT_SECONDS_BETWEEN_WRITES = 1.0

_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def retry_policy() -> Retry:
    """Retries chosen so a flaky network is survived but nothing is duplicated or storms.

    Reads (GET) are retried twice on 5xx with a short backoff; a refused connection is retried once
    (nothing was sent, so even a POST is safe); read errors and 403/429 are not retried at all.
    """
    return Retry(
        total=2, connect=1, read=0, status=2, other=0,
        allowed_methods=frozenset({"GET"}), status_forcelist=(500, 502, 503, 504),
        backoff_factor=0.5, backoff_max=4.0, raise_on_status=False,
    )


class GitHubPublisher:
    """Pull requests of one repository, through one authenticated client; close() when done."""

    def __init__(
        self,
        api_url: str,
        token: str,
        repo_full_name: str,
        timeout_s: int = DEFAULT_TIMEOUT_S,
        *,
        token_source: str = DEFAULT_TOKEN_SOURCE,
        seconds_between_writes: float | None = DEFAULT_SECONDS_BETWEEN_WRITES,
    ) -> None:
        self._api_url = _checked_api_url(api_url)
        self._token_source = token_source
        if not token.strip():
            raise GitHubAuthError(f"there is no GitHub token: {token_source} is empty or unset; set it to a "
                                  f"token that can open pull requests in {repo_full_name}")
        if not _REPO_NAME.fullmatch(repo_full_name):
            raise GitHubError(f"'{repo_full_name}' is not a repository name of the form owner/name")
        self._token = token
        self._repo_name = repo_full_name
        self._owner = repo_full_name.split("/", 1)[0]
        self._timeout_s = timeout_s
        self._github = Github(
            base_url=self._api_url, auth=Auth.Token(token), timeout=timeout_s, retry=retry_policy(),
            per_page=100, seconds_between_requests=None, seconds_between_writes=seconds_between_writes,
            user_agent=f"conveyor/{__version__}", lazy=True,
        )
        self._repo = self._github.get_repo(repo_full_name)
        self._log = log.bind(repo=repo_full_name, api_url=self._api_url)

    def __repr__(self) -> str:
        return f"GitHubPublisher(api_url={self._api_url!r}, repo={self._repo_name!r})"

    def __enter__(self) -> GitHubPublisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session (its pooled sockets)."""
        self._github.close()

    @property
    def requester(self) -> Requester:
        """PyGithub's requester (the same session, retries and write spacing) for calls PyGithub lacks."""
        return self._github.requester

    @property
    def repo_path(self) -> str:
        """`/repos/owner/name`: relative URLs under it get the API prefix (GitHub Enterprise's /api/v3)."""
        return f"/repos/{self._repo_name}"

    def errors(self, action: str) -> AbstractContextManager[None]:
        """The same translation into GitHubError (no token in any message) for those calls."""
        return self._errors(action)

    # -- public operations -----------------------------------------------------------------------

    def ensure_pull_request(
        self, head: str, base: str, title: str, body: str, labels: Sequence[str], draft: bool
    ) -> PullRequestRef:
        """Return the pull request from `head`, opening it (with labels and draft flag) if there is none.

        An existing one is returned whatever its state (open preferred, then merged, then closed; see
        `PullRequestRef.state`): reopening or replacing a closed one is the caller's decision.
        """
        existing = self._find(head)
        if existing is not None:
            self._add_missing_labels(existing, labels)
            self._log.info("github.pull_request.found", head=head, number=existing.number)
            return _ref(existing, created=False)
        pull = self._create(head, base, title, body, draft)
        if pull is None:  # lost a race: someone opened it between our lookup and our POST
            found = self._find(head)
            if found is None:
                raise GitHubValidationError(f"GitHub says a pull request from {head} already exists in "
                                            f"{self._repo_name}, but it cannot be found", status=422)
            return _ref(found, created=False)
        self._add_missing_labels(pull, labels)
        self._log.info("github.pull_request.created", head=head, number=pull.number, draft=pull.draft)
        return _ref(pull, created=True)

    def state_of(self, head: str) -> PullState | None:
        """The state of the branch's pull request (open wins over merged over closed), None if none."""
        pull = self._find(head)
        return None if pull is None else _state(pull)

    # -- steps -----------------------------------------------------------------------------------

    def _find(self, head: str) -> PullRequest | None:
        qualified = head if ":" in head else f"{self._owner}:{head}"
        with self._errors(f"looking up pull requests from {head}"):
            pulls = list(self._repo.get_pulls(state="all", head=qualified))
        if not pulls:
            return None
        rank = {"open": 0, "merged": 1, "closed": 2}
        return min(pulls, key=lambda pull: (rank[_state(pull)], -pull.number))

    def _create(self, head: str, base: str, title: str, body: str, draft: bool) -> PullRequest | None:
        action = f"opening a pull request from {head} into {base}"
        try:
            with self._errors(action, keep_validation=True):
                return self._repo.create_pull(base=base, head=head, title=title, body=body, draft=draft)
        except GithubException as exc:
            details = _details(exc.data)
            if "already exists" in details:
                return None
            if draft and "draft" in details.lower():
                self._log.warning("github.draft_unsupported", head=head)
                with self._errors(action):
                    return self._repo.create_pull(base=base, head=head, title=title, body=body, draft=False)
            raise self._validation_error(action, head, base, details) from None

    def _add_missing_labels(self, pull: PullRequest, labels: Sequence[str]) -> None:
        """Add only absent labels, so a rerun sends no write; a failure here does not undo the PR."""
        present = {label.name for label in pull.labels}
        missing = [name for name in dict.fromkeys(labels) if name not in present]
        if not missing:
            return
        try:
            with self._errors(f"adding labels to pull request #{pull.number}"):
                pull.add_to_labels(*missing)
        except GitHubError as exc:
            self._log.warning("github.labels_not_added", number=pull.number, labels=missing, reason=str(exc))

    # -- error translation -----------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str, *, keep_validation: bool = False) -> Iterator[None]:
        """Turn PyGithub and network failures into GitHubError sentences (422s optionally kept)."""
        try:
            yield
        except GithubException as exc:
            if keep_validation and exc.status == 422:
                raise
            raise self._http_error(action, exc.status, _details(exc.data)) from None
        except requests.exceptions.RequestException as exc:
            raise self._network_error(action, exc) from None

    def _http_error(self, action: str, status: int, details: str) -> GitHubError:
        said = self._scrub(f"{status}" + (f": {details}" if details else ""))
        where = f"GitHub at {self._api_url}"
        if status == 401:
            return GitHubAuthError(
                f"the token in {self._token_source} was rejected by {where} ({said}) while {action}; "
                f"create a new token that can write pull requests in {self._repo_name} and put it in "
                f"{self._token_source}", status=status)
        if status in (403, 429) and "rate limit" in details.lower():
            return GitHubUnavailableError(f"{where} rate-limited the token in {self._token_source} while "
                                          f"{action} ({said}); the publish will work again later",
                                          status=status, transient=True)
        if status == 403:
            return GitHubAuthError(
                f"{where} refused {action} ({said}); the token in {self._token_source} needs write access "
                f"to pull requests (and issues, for labels) in {self._repo_name}", status=status)
        if status == 404:
            return GitHubNotFoundError(
                f"repository {self._repo_name} was not found at {self._api_url} ({said}) while {action}; "
                f"check the repository name and api_url, and that the token in {self._token_source} "
                "can see it (GitHub answers 404 for private repositories a token cannot read)",
                status=status)
        if status == 422:
            return GitHubValidationError(f"{where} refused {action} in {self._repo_name} ({said})",
                                         status=status)
        if status >= 500:
            return GitHubUnavailableError(f"{where} failed with {said} while {action}; this is usually "
                                          "temporary, so the publish can be retried later",
                                          status=status, transient=True)
        return GitHubError(f"{where} refused {action} ({said})", status=status)

    def _validation_error(self, action: str, head: str, base: str, details: str) -> GitHubValidationError:
        hint = ""
        lowered = details.lower()
        if "no commits between" in lowered:
            hint = f"; branch {head} has no commits that {base} lacks"
        elif "head" in lowered and "invalid" in lowered:
            hint = f"; push branch {head} to the remote first"
        elif "base" in lowered and "invalid" in lowered:
            hint = f"; the base branch {base} does not exist on GitHub"
        said = details or "Validation Failed"
        message = f"GitHub refused {action} in {self._repo_name} (422: {said}){hint}"
        return GitHubValidationError(self._scrub(message), status=422)

    def _network_error(self, action: str, exc: requests.exceptions.RequestException) -> GitHubError:
        if _is_timeout(exc):
            return GitHubUnavailableError(f"GitHub at {self._api_url} did not answer within "
                                          f"{self._timeout_s}s while {action}", transient=True)
        found = _ERRNO_TEXT.search(str(exc))
        reason = found[1].strip() if found else type(exc).__name__
        return GitHubUnavailableError(
            self._scrub(f"could not reach GitHub at {self._api_url} while {action} ({reason}); check the "
                        "api_url setting and the network"), transient=True)

    def _scrub(self, text: str) -> str:
        """Belt and braces: a server or proxy that echoes the token must not get it into our messages."""
        return text.replace(self._token, "***") if self._token else text


def _checked_api_url(api_url: str) -> str:
    parts = urlsplit(api_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GitHubError(f"the GitHub API URL '{api_url}' is not an http(s) URL; use {DEFAULT_API_URL} "
                          "or, for GitHub Enterprise, https://<host>/api/v3")
    return api_url.strip().rstrip("/")


def _is_timeout(exc: requests.exceptions.RequestException) -> bool:
    """A read timeout with read retries disabled reaches us as a ConnectionError wrapping urllib3's."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.ReadTimeoutError)


def _state(pull: PullRequest) -> PullState:
    if pull.state == "open":
        return "open"
    return "merged" if pull.merged_at is not None else "closed"


def _ref(pull: PullRequest, *, created: bool) -> PullRequestRef:
    """Our record of a pull request; an answer without its number or address is not one we can use."""
    number, url, state = pull.raw_data.get("number"), pull.raw_data.get("html_url"), pull.raw_data.get("state")
    if not isinstance(number, int) or not isinstance(url, str) or state not in ("open", "closed"):
        missing = [name for name, ok in (("number", isinstance(number, int)), ("html_url", isinstance(url, str)),
                                         ("state", state in ("open", "closed"))) if not ok]
        raise GitHubError(f"GitHub's answer about a pull request lacks {', '.join(missing)}; the pull request is "
                          "looked up again by its branch later", transient=True)
    return PullRequestRef(number=pull.number, url=pull.html_url, created=created, state=_state(pull),
                          draft=bool(pull.draft))


def _details(data: Any) -> str:
    """GitHub's own explanation from an error body: the message plus each listed error."""
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or "")]
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            fallback = f"{error.get('field', '?')} {error.get('code', 'invalid')}"
            parts.append(str(error.get("message") or fallback))
        else:
            parts.append(str(error))
    return "; ".join(part for part in parts if part)
