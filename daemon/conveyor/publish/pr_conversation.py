"""The conversation on a task's pull request: what people and CI said, and the daemon's answers.

Reads are conditional: each takes the ETag of the last answer the caller acted on and sends it as
If-None-Match; GitHub answers 304 (no body, and no cost against the rate limit) when nothing changed, so
a watcher polling idle pull requests spends nothing. The caller stores the new ETag only after it has
acted on the answer, so a crash in between reads the same answer again (and its own cursor skips what
it already did). Lists follow GitHub's Link pages; only the first page is conditional (a changed list
changes its first page's ETag too, as the newest or the count changes).

Writes (a comment, a reply in a review thread, a label) go through the same PyGithub requester as
publishing: the same retry policy (a POST is never retried after it was sent), write spacing, and
error sentences that never contain the token.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog

from conveyor.publish.github_types import GitHubError

if TYPE_CHECKING:   # PyGithub (and requests) load when a PR is first read, not when the daemon starts
    from conveyor.publish.github import GitHubPublisher

log = structlog.get_logger("conveyor.publish.pr_conversation")
MAX_BODY = 65536                  # GitHub refuses longer comment bodies
MAX_PAGES = 20                    # 2,000 items per list: past that a pull request is not a conversation
LOG_BYTES = 256 * 1024            # of a job's log, only this much of the end is kept while reading it
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


@dataclass(frozen=True)
class Fetched:
    """One conditional read: `changed` False means 304 (nothing new since the ETag given; `data` None)."""

    changed: bool
    data: Any
    etag: str | None


class PullConversation:
    """Reads and writes on one repository's pull requests; close() when done (or use `with`)."""

    def __init__(self, publisher: GitHubPublisher) -> None:
        self._publisher = publisher
        self._requester = publisher.requester
        self._base = publisher.repo_path

    @classmethod
    def connect(cls, api_url: str, token: str, repo: str, *, token_source: str,
                seconds_between_writes: float | None = 1.0) -> PullConversation:
        from conveyor.publish.github import GitHubPublisher

        return cls(GitHubPublisher(api_url, token, repo, token_source=token_source,
                                   seconds_between_writes=seconds_between_writes))

    def __enter__(self) -> PullConversation:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._publisher.close()

    # -- conditional reads -----------------------------------------------------------------------

    def me(self, etag: str | None = None) -> Fetched:
        """The token's own user (its `login` is how the daemon's own comments are recognised)."""
        return self._get("/user", etag, "reading the token's user")

    def pull(self, number: int, etag: str | None = None) -> Fetched:
        return self._get(f"{self._base}/pulls/{number}", etag, f"reading pull request #{number}")

    def issue_comments(self, number: int, etag: str | None = None) -> Fetched:
        return self._list(f"{self._base}/issues/{number}/comments", etag, f"reading comments on #{number}")

    def issue_events(self, number: int) -> Fetched:
        """The pull request's issue events (`labeled`, `unlabeled`, … with their actor)."""
        return self._list(f"{self._base}/issues/{number}/events", None, f"reading events of #{number}")

    def review_comments(self, number: int, etag: str | None = None) -> Fetched:
        return self._list(f"{self._base}/pulls/{number}/comments", etag, f"reading review comments on #{number}")

    def reviews(self, number: int, etag: str | None = None) -> Fetched:
        return self._list(f"{self._base}/pulls/{number}/reviews", etag, f"reading reviews of #{number}")

    def check_runs(self, sha: str, etag: str | None = None) -> Fetched:
        """The check runs on a commit (`data` is the list of runs, every page)."""
        action = f"reading check runs of {sha[:12]}"
        first = self._get(f"{self._base}/commits/{sha}/check-runs", etag, action, {"per_page": 100})
        if not first.changed or not isinstance(first.data, Mapping):
            return first
        runs = list(first.data.get("check_runs") or [])
        total, page = int(first.data.get("total_count") or 0), 1
        while len(runs) < total and page < MAX_PAGES:
            page += 1
            more = self._get(f"{self._base}/commits/{sha}/check-runs", None, action, {"per_page": 100, "page": page})
            found = list(more.data.get("check_runs") or []) if isinstance(more.data, Mapping) else []
            if not found:
                break
            runs += found
        return Fetched(True, runs, first.etag)

    def combined_status(self, sha: str, etag: str | None = None) -> Fetched:
        """The latest status per context on a commit (GitHub's combined status)."""
        return self._get(f"{self._base}/commits/{sha}/status", etag, f"reading the status of {sha[:12]}",
                         {"per_page": 100})

    # -- plain reads -----------------------------------------------------------------------------

    def permission(self, login: str) -> str:
        """A login's permission on the repository: admin, write, read or none (maintain counts as write)."""
        try:
            with self._publisher.errors(f"reading the permission of {login}"):
                _, data = self._requester.requestJsonAndCheck(
                    "GET", f"{self._base}/collaborators/{login}/permission")
        except GitHubError as exc:
            if exc.status == 404:
                return "none"     # no such user (or not visible to the token): nobody to obey
            raise
        permission = data.get("permission") if isinstance(data, Mapping) else None
        return str(permission) if isinstance(permission, str) else "none"

    def log_tail(self, job_id: int, lines: int) -> str | None:
        """The last `lines` lines of a GitHub Actions job's log (None when it cannot be had: not an Actions
        job, expired, or no permission); read as a stream, keeping only the end in memory."""
        import requests.exceptions
        from github import GithubException

        try:
            _, _, chunks = self._requester.getStream(f"{self._base}/actions/jobs/{job_id}/logs", chunk_size=65536)
            tail: deque[bytes] = deque()
            kept = 0
            for chunk in chunks:
                tail.append(chunk)
                kept += len(chunk)
                while kept - len(tail[0]) > LOG_BYTES and len(tail) > 1:
                    kept -= len(tail.popleft())
        except (requests.exceptions.RequestException, GithubException, OSError) as exc:
            log.warning("pr.log_unavailable", job_id=job_id, error=type(exc).__name__)
            return None
        text = b"".join(tail).decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- writes ----------------------------------------------------------------------------------

    def comment(self, number: int, body: str) -> int:
        """Post a comment on the pull request's conversation; returns its id."""
        with self._publisher.errors(f"commenting on pull request #{number}"):
            _, data = self._requester.requestJsonAndCheck(
                "POST", f"{self._base}/issues/{number}/comments", input={"body": bounded(body)})
        return _id_of(data)

    def reply(self, number: int, comment_id: int, body: str) -> int:
        """Reply in the thread of review comment `comment_id`; returns the reply's id."""
        with self._publisher.errors(f"replying to review comment {comment_id} on #{number}"):
            _, data = self._requester.requestJsonAndCheck(
                "POST", f"{self._base}/pulls/{number}/comments/{comment_id}/replies", input={"body": bounded(body)})
        return _id_of(data)

    def add_label(self, number: int, label: str) -> None:
        with self._publisher.errors(f"labelling pull request #{number} {label!r}"):
            self._requester.requestJsonAndCheck("POST", f"{self._base}/issues/{number}/labels",
                                                input={"labels": [label]})

    def remove_label(self, number: int, label: str) -> None:
        """Take `label` off the pull request; one that is not there (404) is already what was wanted."""
        try:
            with self._publisher.errors(f"removing label {label!r} from pull request #{number}"):
                self._requester.requestJsonAndCheck("DELETE", f"{self._base}/issues/{number}/labels/{quote(label)}")
        except GitHubError as exc:
            if exc.status != 404:
                raise

    # -- helpers ---------------------------------------------------------------------------------

    def _get(self, url: str, etag: str | None, action: str, parameters: dict[str, Any] | None = None) -> Fetched:
        headers = {"If-None-Match": etag} if etag else None
        with self._publisher.errors(action):
            answer_headers, data = self._requester.requestJsonAndCheck("GET", url, parameters, headers)
        if data is None:            # 304: the body is empty; nothing changed since `etag`
            return Fetched(False, None, etag)
        return Fetched(True, data, answer_headers.get("etag"))

    def _list(self, url: str, etag: str | None, action: str) -> Fetched:
        """Every page of a list; only the first is conditional."""
        headers = {"If-None-Match": etag} if etag else None
        items: list[Any] = []
        next_url: str | None = url
        parameters: dict[str, Any] | None = {"per_page": 100}
        first_etag, pages = etag, 0
        while next_url is not None and pages < MAX_PAGES:
            with self._publisher.errors(action):
                answer_headers, data = self._requester.requestJsonAndCheck("GET", next_url, parameters, headers)
            if data is None:
                return Fetched(False, None, etag)
            if pages == 0:
                first_etag = answer_headers.get("etag")
            items += data if isinstance(data, list) else []
            found = _NEXT.search(str(answer_headers.get("link") or ""))
            next_url, parameters, headers, pages = (found[1] if found else None), None, None, pages + 1
        return Fetched(True, items, first_etag)


def bounded(body: str) -> str:
    """A comment body GitHub accepts (at most MAX_BODY characters)."""
    if len(body) <= MAX_BODY:
        return body
    note = "\n\n… (cut: GitHub takes at most 65536 characters)"
    return body[:MAX_BODY - len(note)] + note


def _id_of(data: Any) -> int:
    value = data.get("id") if isinstance(data, Mapping) else None
    if not isinstance(value, int):
        raise GitHubError("GitHub's answer to a comment lacks its id; it was probably posted", transient=True)
    return value
