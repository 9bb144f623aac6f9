"""The few pull request calls a follow-up needs: the PR's state and head, and the answer on its thread.

A follow-up (core.follow_up) commits on an open PR's branch and then says what changed, on the thread the
person used: a reply under a review comment, else a comment on the PR's conversation. Every answer carries
a hidden marker naming the follow-up task, and the thread is searched for it before posting, so a daemon
restarted between posting and finishing never answers twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import requests

from conveyor import __version__
from conveyor.publish.github_types import (
    GitHubAuthError,
    GitHubError,
    GitHubNotFoundError,
    GitHubUnavailableError,
    GitHubValidationError,
    PullState,
)

TIMEOUT_S = 30
MAX_PAGES = 20          # 2,000 comments: a thread longer than that is searched no further for our marker
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


def marker(task_id: str) -> str:
    """The hidden line that identifies a follow-up's answer on the thread."""
    return f"<!-- conveyor-follow-up: {task_id} -->"


@dataclass(frozen=True)
class PullInfo:
    """What a follow-up checks before it starts and before it pushes."""

    number: int
    state: PullState
    title: str
    head_ref: str
    head_sha: str
    base_ref: str


class PullThread:
    """One pull request of one repository through the REST API (GitHub.com or Enterprise); close() when done."""

    def __init__(self, api_url: str, token: str, repo: str, number: int, *, timeout_s: float = TIMEOUT_S) -> None:
        if not token.strip():
            raise GitHubAuthError(f"there is no GitHub token to answer on pull request #{number} of {repo}")
        self._base = api_url.rstrip("/")
        self._repo, self._number, self._timeout_s = repo, number, timeout_s
        self._token = token
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {token}",
                                      "Accept": "application/vnd.github+json",
                                      "X-GitHub-Api-Version": "2022-11-28",
                                      "User-Agent": f"conveyor/{__version__}"})

    def __enter__(self) -> PullThread:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def info(self) -> PullInfo:
        data = self._call("GET", f"/repos/{self._repo}/pulls/{self._number}", "reading the pull request")
        merged = bool(data.get("merged") or data.get("merged_at"))
        state: PullState = "merged" if merged else ("open" if data.get("state") == "open" else "closed")
        head, base = data.get("head") or {}, data.get("base") or {}
        return PullInfo(number=int(data["number"]), state=state, title=str(data.get("title") or ""),
                        head_ref=str(head.get("ref") or ""), head_sha=str(head.get("sha") or ""),
                        base_ref=str(base.get("ref") or ""))

    def find(self, text: str) -> str | None:
        """The address of a comment (conversation or review) on this PR whose body holds `text`."""
        for path in (f"/repos/{self._repo}/issues/{self._number}/comments",
                     f"/repos/{self._repo}/pulls/{self._number}/comments"):
            for item in self._pages(path):
                if isinstance(item, dict) and text in str(item.get("body") or ""):
                    return str(item.get("html_url") or item.get("url") or "")
        return None

    def comment(self, body: str) -> str:
        """Post on the PR's conversation; returns the comment's address."""
        data = self._call("POST", f"/repos/{self._repo}/issues/{self._number}/comments", "commenting",
                          json={"body": body})
        return str(data.get("html_url") or "")

    def reply(self, comment_id: int, body: str) -> str:
        """Answer under a review comment (GitHub threads replies to the top comment); returns its address."""
        data = self._call("POST", f"/repos/{self._repo}/pulls/{self._number}/comments/{comment_id}/replies",
                          "replying to a review comment", json={"body": body})
        return str(data.get("html_url") or "")

    # -- plumbing --------------------------------------------------------------------------------
    def _pages(self, path: str) -> list[Any]:
        items: list[Any] = []
        url: str | None = f"{self._base}{path}?per_page=100"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self._send("GET", url, "reading the thread")
            page = response.json()
            items.extend(page if isinstance(page, list) else [])
            found = _NEXT.search(response.headers.get("Link", ""))
            url = found.group(1) if found and found.group(1).startswith(self._base) else None
        return items

    def _call(self, method: str, path: str, action: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, f"{self._base}{path}", action, **kwargs)
        try:
            data = response.json()
        except ValueError as exc:
            raise GitHubError(f"{action} on pull request #{self._number}: GitHub's answer is not JSON",
                              status=response.status_code, transient=True) from exc
        if not isinstance(data, dict):
            raise GitHubError(f"{action} on pull request #{self._number}: GitHub's answer is not an object",
                              status=response.status_code, transient=True)
        return data

    def _send(self, method: str, url: str, action: str, **kwargs: Any) -> requests.Response:
        where = f"{action} on pull request #{self._number} of {self._repo}"
        try:
            response = self._session.request(method, url, timeout=self._timeout_s, **kwargs)
        except requests.exceptions.RequestException as exc:
            raise GitHubUnavailableError(f"{where}: GitHub could not be reached ({type(exc).__name__}); "
                                         "tried again later", transient=True) from exc
        status = response.status_code
        if status < 400:
            return response
        said = self._scrub(response.text[:300])
        if status in (401, 403) and "rate limit" not in said.lower():
            raise GitHubAuthError(f"{where}: GitHub refused the token ({status}: {said}); give it write access "
                                  "to pull requests and issues", status=status)
        if status == 404:
            raise GitHubNotFoundError(f"{where}: not found (404); is the number right and can the token see "
                                      "the repository?", status=status)
        if status == 422:
            raise GitHubValidationError(f"{where}: GitHub refused it (422: {said})", status=status)
        raise GitHubUnavailableError(f"{where}: GitHub answered {status} ({said}); tried again later",
                                     status=status, transient=True)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text
