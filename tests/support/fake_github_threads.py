"""The conversation side of the fake GitHub: reviews, review comments (and their replies), issue comments,
check runs and their logs, commit statuses, collaborator permissions, merging and closing.

Kept apart from `fake_github.py` so neither class grows past a screenful of routes. It answers the way
the REST API does, including its refusals: 404 for a pull request, comment or job that does not exist,
422 for an empty or too long body, a review that requests changes without saying what, an author
reviewing their own pull request, an unknown status state or merge method; 405 for merging a pull
request that is not open; 409 when `sha` no longer names the head. Ids are global across kinds (as on
GitHub), so a review, a comment and a check run never share one.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fake_github import FakeGitHub

Answer = tuple[int, Any, dict[str, str]]
MAX_BODY = 65536                      # GitHub refuses comment bodies longer than this (422)
REVIEW_EVENTS = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}
STATUS_STATES = ("error", "failure", "pending", "success")
CONCLUSIONS = ("success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required", None)
PERMISSIONS = ("admin", "maintain", "write", "triage", "read", "none")
DOCS_URL = "https://docs.github.com/rest"


@dataclass(frozen=True)
class FakeComment:
    """An issue comment (`kind='issue'`) or a review comment on a line of the diff (`kind='review'`)."""

    id: int
    kind: str
    number: int
    login: str
    body: str
    created_at: str
    in_reply_to: int | None = None
    path: str | None = None
    line: int | None = None
    commit_id: str | None = None
    review_id: int | None = None
    user_type: str = "User"


@dataclass(frozen=True)
class FakeReview:
    id: int
    number: int
    login: str
    state: str
    body: str
    commit_id: str
    submitted_at: str
    user_type: str = "User"


@dataclass(frozen=True)
class FakeCheckRun:
    id: int
    sha: str
    name: str
    status: str
    conclusion: str | None
    log: str
    title: str
    summary: str
    app_slug: str = "github-actions"
    started_at: str = ""


@dataclass(frozen=True)
class FakeStatus:
    id: int
    sha: str
    context: str
    state: str
    description: str
    target_url: str | None
    created_at: str
    login: str


class Threads:
    """Everything said and checked on the fake's pull requests; `fake.threads` in tests."""

    def __init__(self, fake: FakeGitHub, *, login: str) -> None:
        self._fake = fake
        self.login = login                              # the token's owner: who the API's writes are by
        self._ids = itertools.count(4_000_001)
        self._lock = threading.RLock()
        self._comments: dict[str, list[FakeComment]] = {}
        self._reviews: dict[str, list[FakeReview]] = {}
        self._checks: dict[str, list[FakeCheckRun]] = {}
        self._statuses: dict[str, list[FakeStatus]] = {}
        self._permissions: dict[str, dict[str, str]] = {}

    # -- test controls ---------------------------------------------------------------------------

    def comment(self, number: int, login: str, body: str, *, repo: str | None = None,
                user_type: str = "User") -> FakeComment:
        """A person's comment on the pull request's conversation tab."""
        repo = self._repo(repo, number)
        return self._add_comment(repo, FakeComment(next(self._ids), "issue", number, login, body, _now(),
                                                   user_type=user_type))

    def review_comment(self, number: int, login: str, body: str, *, path: str = "README.md", line: int = 1,
                       in_reply_to: int | None = None, repo: str | None = None) -> FakeComment:
        """A comment on a line of the diff (or, with `in_reply_to`, a reply in its thread)."""
        repo = self._repo(repo, number)
        sha = self._fake.pull(number, repo).head_sha
        root = None
        if in_reply_to is not None:       # a reply sits on its thread's line
            target = self._thread_root(repo, number, in_reply_to)
            root, path, line, sha = target.id, target.path or path, target.line or line, target.commit_id or sha
        return self._add_comment(repo, FakeComment(next(self._ids), "review", number, login, body, _now(),
                                                   in_reply_to=root, path=path, line=line, commit_id=sha))

    def review(self, number: int, login: str, state: str, body: str = "", *, repo: str | None = None,
               comments: list[tuple[str, int, str]] = ()) -> FakeReview:  # type: ignore[assignment]
        """A submitted review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`) with optional line comments
        (path, line, body)."""
        if state not in REVIEW_EVENTS.values():
            raise ValueError(f"review state must be one of {sorted(REVIEW_EVENTS.values())}")
        repo = self._repo(repo, number)
        sha = self._fake.pull(number, repo).head_sha
        review = FakeReview(next(self._ids), number, login, state, body, sha, _now())
        with self._lock:
            self._reviews.setdefault(repo, []).append(review)
        for path, line, text in comments:
            self._add_comment(repo, FakeComment(next(self._ids), "review", number, login, text, _now(), path=path,
                                                line=line, commit_id=sha, review_id=review.id))
        return review

    def check_run(self, sha: str, name: str, conclusion: str | None = "failure", *, log: str = "",
                  status: str = "completed", repo: str | None = None, summary: str = "",
                  app_slug: str = "github-actions") -> FakeCheckRun:
        """A check run on a commit; an Actions one (the default) serves `log` at its job's logs URL."""
        if conclusion not in CONCLUSIONS:
            raise ValueError(f"conclusion must be one of {CONCLUSIONS}")
        run = FakeCheckRun(next(self._ids), sha, name, status, conclusion if status == "completed" else None, log,
                           f"{name} {conclusion or status}", summary, app_slug, _now())
        with self._lock:
            self._checks.setdefault(self._fake_repo(repo), []).append(run)
        return run

    def status(self, sha: str, context: str, state: str, description: str = "", *, target_url: str | None = None,
               repo: str | None = None) -> FakeStatus:
        """A commit status, as an external CI posts it."""
        if state not in STATUS_STATES:
            raise ValueError(f"state must be one of {STATUS_STATES}")
        found = FakeStatus(next(self._ids), sha, context, state, description, target_url, _now(), "ci-bot")
        with self._lock:
            self._statuses.setdefault(self._fake_repo(repo), []).append(found)
        return found

    def set_permission(self, login: str, permission: str, *, repo: str | None = None) -> None:
        """Make `login` a collaborator with this permission (`none` removes them)."""
        if permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {PERMISSIONS}")
        with self._lock:
            self._permissions.setdefault(self._fake_repo(repo), {})[login.lower()] = permission

    # -- inspection ------------------------------------------------------------------------------

    def comments(self, number: int, *, repo: str | None = None, kind: str | None = None) -> list[FakeComment]:
        repo = self._fake_repo(repo)
        with self._lock:
            return [c for c in self._comments.get(repo, []) if c.number == number and (kind is None or c.kind == kind)]

    def reviews(self, number: int, *, repo: str | None = None) -> list[FakeReview]:
        repo = self._fake_repo(repo)
        with self._lock:
            return [r for r in self._reviews.get(repo, []) if r.number == number]

    # -- routes (rest of the path after /repos/owner/name) ---------------------------------------

    def routes(self) -> list[tuple[str, str, Callable[..., Answer]]]:
        return [
            ("GET", r"/pulls/(\d+)/reviews", self._list_reviews),
            ("POST", r"/pulls/(\d+)/reviews", self._create_review),
            ("GET", r"/pulls/(\d+)/comments", self._list_review_comments),
            ("POST", r"/pulls/(\d+)/comments", self._create_review_comment),
            ("POST", r"/pulls/(\d+)/comments/(\d+)/replies", self._reply),
            ("GET", r"/pulls/comments/(\d+)", self._get_review_comment),
            ("GET", r"/issues/(\d+)/comments", self._list_issue_comments),
            ("POST", r"/issues/(\d+)/comments", self._create_issue_comment),
            ("GET", r"/issues/comments/(\d+)", self._get_issue_comment),
            ("GET", r"/commits/([^/]+)/check-runs", self._list_check_runs),
            ("GET", r"/commits/([^/]+)/status", self._combined_status),
            ("GET", r"/commits/([^/]+)/statuses", self._list_statuses),
            ("POST", r"/statuses/([0-9a-f]{40})", self._create_status),
            ("GET", r"/actions/jobs/(\d+)/logs", self._job_logs),
            ("GET", r"/collaborators/([^/]+)/permission", self._permission),
            ("PUT", r"/pulls/(\d+)/merge", self._merge),
            ("PATCH", r"/pulls/(\d+)", self._update_pull),
        ]

    def raw_log(self, job_id: int) -> str | None:
        """The text behind a job's logs redirect (served outside the JSON API, as a download)."""
        with self._lock:
            for runs in self._checks.values():
                for run in runs:
                    if run.id == job_id:
                        return run.log
        return None

    def _list_reviews(self, repo: str, m: re.Match[str], query: dict[str, str], _p: Any) -> Answer:
        if self._missing(repo, m):
            return _not_found()
        return self._fake.page(repo, [self._review_json(repo, r) for r in self.reviews(int(m[1]), repo=repo)], query)

    def _create_review(self, repo: str, m: re.Match[str], _q: dict[str, str], payload: Any) -> Answer:
        if self._missing(repo, m):
            return _not_found()
        number = int(m[1])
        event = payload.get("event", "COMMENT") if isinstance(payload, dict) else None
        body = payload.get("body") or "" if isinstance(payload, dict) else ""
        if event not in REVIEW_EVENTS:
            return 422, _validation("event", "invalid"), {}
        if event != "APPROVE" and not str(body).strip():
            return 422, {"message": "Unprocessable Entity", "errors": [
                f"Review Can not {event.lower().replace('_', ' ')} without a body"], "documentation_url": DOCS_URL}, {}
        if event != "COMMENT":
            return 422, {"message": "Unprocessable Entity", "errors": [
                f"Review Can not {'approve' if event == 'APPROVE' else 'request changes on'} your own pull request"],
                "documentation_url": DOCS_URL}, {}
        review = FakeReview(next(self._ids), number, self.login, REVIEW_EVENTS[event], str(body),
                            self._fake.pull(number, repo).head_sha, _now(), "Bot")
        with self._lock:
            self._reviews.setdefault(repo, []).append(review)
        return 200, self._review_json(repo, review), {}

    def _list_review_comments(self, repo: str, m: re.Match[str], query: dict[str, str], _p: Any) -> Answer:
        if self._missing(repo, m):
            return _not_found()
        items = [self._comment_json(repo, c) for c in self.comments(int(m[1]), repo=repo, kind="review")]
        return self._fake.page(repo, items, query)

    def _create_review_comment(self, repo: str, m: re.Match[str], _q: dict[str, str], payload: Any) -> Answer:
        refused = self._refused(repo, m, payload)
        if refused is not None:
            return refused
        number = int(m[1])
        if payload.get("in_reply_to") is not None:
            return self._add_reply(repo, number, int(payload["in_reply_to"]), payload["body"])
        missing = [name for name in ("commit_id", "path") if not payload.get(name)]
        if missing or not isinstance(payload.get("line", payload.get("position")), int):
            return 422, _validation(missing[0] if missing else "line", "missing_field"), {}
        comment = FakeComment(next(self._ids), "review", number, self.login, payload["body"], _now(),
                              path=payload["path"], line=payload.get("line"), commit_id=payload["commit_id"],
                              user_type="Bot")
        return 201, self._comment_json(repo, self._add_comment(repo, comment)), {}

    def _reply(self, repo: str, m: re.Match[str], _q: dict[str, str], payload: Any) -> Answer:
        refused = self._refused(repo, m, payload)
        return refused if refused is not None else self._add_reply(repo, int(m[1]), int(m[2]), payload["body"])

    def _refused(self, repo: str, m: re.Match[str], payload: Any) -> Answer | None:
        """What GitHub answers a comment write it will not take: no such PR, no JSON object, a bad body."""
        if self._missing(repo, m):
            return _not_found()
        if not isinstance(payload, dict):
            return 400, {"message": "Problems parsing JSON", "documentation_url": DOCS_URL}, {}
        return _body_problem(payload)

    def _add_reply(self, repo: str, number: int, to: int, body: str) -> Answer:
        target = next((c for c in self.comments(number, repo=repo, kind="review") if c.id == to), None)
        if target is None:
            return _not_found()          # a comment of another pull request, an issue comment, or none
        comment = FakeComment(next(self._ids), "review", number, self.login, body, _now(),
                              in_reply_to=target.in_reply_to or target.id, path=target.path, line=target.line,
                              commit_id=target.commit_id, user_type="Bot")
        return 201, self._comment_json(repo, self._add_comment(repo, comment)), {}

    def _get_review_comment(self, repo: str, m: re.Match[str], _q: dict[str, str], _p: Any) -> Answer:
        found = self._comment_by_id(repo, int(m[1]), "review")
        return _not_found() if found is None else (200, self._comment_json(repo, found), {})

    def _list_issue_comments(self, repo: str, m: re.Match[str], query: dict[str, str], _p: Any) -> Answer:
        if self._missing(repo, m):
            return _not_found()
        items = [self._comment_json(repo, c) for c in self.comments(int(m[1]), repo=repo, kind="issue")]
        return self._fake.page(repo, items, query)

    def _create_issue_comment(self, repo: str, m: re.Match[str], _q: dict[str, str], payload: Any) -> Answer:
        refused = self._refused(repo, m, payload)
        if refused is not None:
            return refused
        comment = FakeComment(next(self._ids), "issue", int(m[1]), self.login, payload["body"], _now(),
                              user_type="Bot")
        return 201, self._comment_json(repo, self._add_comment(repo, comment)), {}

    def _get_issue_comment(self, repo: str, m: re.Match[str], _q: dict[str, str], _p: Any) -> Answer:
        found = self._comment_by_id(repo, int(m[1]), "issue")
        return _not_found() if found is None else (200, self._comment_json(repo, found), {})

    def _list_check_runs(self, repo: str, m: re.Match[str], query: dict[str, str], _p: Any) -> Answer:
        sha = self._resolve(repo, m[1])
        with self._lock:
            runs = [r for r in self._checks.get(repo, []) if r.sha == sha]
        runs.sort(key=lambda run: run.id, reverse=True)
        per_page = max(1, min(100, int(query.get("per_page", "30"))))
        page = max(1, int(query.get("page", "1")))
        chunk = runs[(page - 1) * per_page:page * per_page]
        return 200, {"total_count": len(runs), "check_runs": [self._check_json(repo, r) for r in chunk]}, {}

    def _combined_status(self, repo: str, m: re.Match[str], _q: dict[str, str], _p: Any) -> Answer:
        sha = self._resolve(repo, m[1])
        latest = {s.context: s for s in sorted(self._statuses_of(repo, sha), key=lambda s: s.id)}
        states = {s.state for s in latest.values()}
        state = ("failure" if states & {"error", "failure"} else "pending" if "pending" in states or not states
                 else "success")
        return 200, {"state": state, "sha": sha, "total_count": len(latest),
                     "statuses": [self._status_json(repo, s) for s in latest.values()],
                     "repository": self._fake.repo_json(repo)}, {}

    def _list_statuses(self, repo: str, m: re.Match[str], query: dict[str, str], _p: Any) -> Answer:
        sha = self._resolve(repo, m[1])
        items = [self._status_json(repo, s) for s in sorted(self._statuses_of(repo, sha), key=lambda s: -s.id)]
        return self._fake.page(repo, items, query)

    def _create_status(self, repo: str, m: re.Match[str], _q: dict[str, str], payload: Any) -> Answer:
        if not isinstance(payload, dict) or payload.get("state") not in STATUS_STATES:
            return 422, _validation("state", "invalid"), {}
        found = FakeStatus(next(self._ids), m[1], str(payload.get("context") or "default"), payload["state"],
                           str(payload.get("description") or ""), payload.get("target_url"), _now(), self.login)
        with self._lock:
            self._statuses.setdefault(repo, []).append(found)
        return 201, self._status_json(repo, found), {}

    def _job_logs(self, repo: str, m: re.Match[str], _q: dict[str, str], _p: Any) -> Answer:
        """As on GitHub: a redirect to a short-lived download URL (here on the same host)."""
        if self.raw_log(int(m[1])) is None:
            return _not_found()
        return 302, None, {"Location": f"{self._fake.api_url}/_fake/logs/{m[1]}"}

    def _permission(self, repo: str, m: re.Match[str], _q: dict[str, str], _p: Any) -> Answer:
        login = m[1]
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?", login):
            return _not_found()
        with self._lock:
            permission = self._permissions.get(repo, {}).get(login.lower(), "read")   # a public repository
        role = {"admin": "admin", "maintain": "maintain", "write": "write", "triage": "triage"}.get(permission, "read")
        return 200, {"permission": permission if permission != "maintain" else "write", "role_name": role,
                     "user": _user(login)}, {}

    def _merge(self, repo: str, m: re.Match[str], _q: dict[str, str], payload: Any) -> Answer:
        if self._missing(repo, m):
            return _not_found()
        payload = payload if isinstance(payload, dict) else {}
        if payload.get("merge_method", "merge") not in ("merge", "squash", "rebase"):
            return 422, _validation("merge_method", "invalid"), {}
        pull = self._fake.pull(int(m[1]), repo)
        if pull.state != "open":
            return 405, {"message": "Pull Request is not mergeable", "documentation_url": DOCS_URL}, {}
        if payload.get("sha") and payload["sha"] != pull.head_sha:
            return 409, {"message": "Head branch was modified. Review and try the merge again.",
                         "documentation_url": DOCS_URL}, {}
        self._fake.merge(pull.number, repo)
        return 200, {"sha": pull.head_sha, "merged": True, "message": "Pull Request successfully merged"}, {}

    def _update_pull(self, repo: str, m: re.Match[str], _q: dict[str, str], payload: Any) -> Answer:
        if self._missing(repo, m):
            return _not_found()
        if not isinstance(payload, dict) or payload.get("state", "open") not in ("open", "closed"):
            return 422, _validation("state", "invalid"), {}
        number = int(m[1])
        pull = self._fake.pull(number, repo)
        if payload.get("state") == "closed" and pull.state == "open":
            self._fake.close(number, repo)
        elif payload.get("state") == "open" and pull.state == "closed":
            if pull.merged:
                return 422, _validation("state", "invalid"), {}
            self._fake.reopen(number, repo)
        if "title" in payload or "body" in payload:
            self._fake.edit(number, repo, title=payload.get("title"), body=payload.get("body"))
        return 200, self._fake.pull_json(self._fake.pull(number, repo)), {}

    # -- helpers ---------------------------------------------------------------------------------

    def _missing(self, repo: str, m: re.Match[str]) -> bool:
        try:
            self._fake.pull(int(m[1]), repo)
        except KeyError:
            return True
        return False

    def _repo(self, repo: str | None, number: int) -> str:
        repo = self._fake_repo(repo)
        self._fake.pull(number, repo)              # KeyError for a pull request that does not exist
        return repo

    def _fake_repo(self, repo: str | None) -> str:
        return self._fake.only_repo(repo)

    def _resolve(self, repo: str, ref: str) -> str:
        """A branch name or a sha → the sha the fake stores checks under."""
        if re.fullmatch(r"[0-9a-f]{40}", ref):
            return ref
        for pull in self._fake.pulls(repo):
            if pull.head == ref:
                return pull.head_sha
        return ref

    def _statuses_of(self, repo: str, sha: str) -> list[FakeStatus]:
        with self._lock:
            return [s for s in self._statuses.get(repo, []) if s.sha == sha]

    def _thread_root(self, repo: str, number: int, to: int) -> FakeComment:
        comments = {c.id: c for c in self.comments(number, repo=repo, kind="review")}
        if to not in comments:
            raise KeyError(f"no review comment {to} on #{number}")
        target = comments[to]
        return comments.get(target.in_reply_to, target) if target.in_reply_to else target

    def _comment_by_id(self, repo: str, comment_id: int, kind: str) -> FakeComment | None:
        with self._lock:
            return next((c for c in self._comments.get(repo, []) if c.id == comment_id and c.kind == kind), None)

    def _add_comment(self, repo: str, comment: FakeComment) -> FakeComment:
        with self._lock:
            self._comments.setdefault(repo, []).append(comment)
        return comment

    def _comment_json(self, repo: str, c: FakeComment) -> dict[str, Any]:
        web, api = f"{self._fake.web_url}/{repo}", f"{self._fake.api_url}/repos/{repo}"
        data: dict[str, Any] = {
            "id": c.id, "node_id": f"C_fake{c.id}", "body": c.body, "user": _user(c.login, c.user_type),
            "created_at": c.created_at, "updated_at": c.created_at, "author_association": "NONE",
        }
        if c.kind == "issue":
            data.update({"html_url": f"{web}/pull/{c.number}#issuecomment-{c.id}",
                         "url": f"{api}/issues/comments/{c.id}", "issue_url": f"{api}/issues/{c.number}"})
        else:
            data.update({"html_url": f"{web}/pull/{c.number}#discussion_r{c.id}",
                         "url": f"{api}/pulls/comments/{c.id}", "pull_request_url": f"{api}/pulls/{c.number}",
                         "path": c.path, "line": c.line, "commit_id": c.commit_id,
                         "original_commit_id": c.commit_id, "pull_request_review_id": c.review_id,
                         "diff_hunk": "@@ -1 +1 @@", "side": "RIGHT"})
            if c.in_reply_to is not None:
                data["in_reply_to_id"] = c.in_reply_to
        return data

    def _review_json(self, repo: str, r: FakeReview) -> dict[str, Any]:
        return {"id": r.id, "node_id": f"PRR_fake{r.id}", "user": _user(r.login, r.user_type), "body": r.body,
                "state": r.state, "commit_id": r.commit_id, "submitted_at": r.submitted_at,
                "html_url": f"{self._fake.web_url}/{repo}/pull/{r.number}#pullrequestreview-{r.id}",
                "pull_request_url": f"{self._fake.api_url}/repos/{repo}/pulls/{r.number}",
                "author_association": "NONE"}

    def _check_json(self, repo: str, r: FakeCheckRun) -> dict[str, Any]:
        web = f"{self._fake.web_url}/{repo}"
        return {"id": r.id, "name": r.name, "head_sha": r.sha, "status": r.status, "conclusion": r.conclusion,
                "started_at": r.started_at, "completed_at": r.started_at if r.status == "completed" else None,
                "html_url": f"{web}/runs/{r.id}", "details_url": f"{web}/actions/runs/1/job/{r.id}",
                "output": {"title": r.title, "summary": r.summary, "text": None, "annotations_count": 0},
                "app": {"id": 15368, "slug": r.app_slug, "name": r.app_slug}}

    def _status_json(self, repo: str, s: FakeStatus) -> dict[str, Any]:
        return {"id": s.id, "node_id": f"SC_fake{s.id}", "state": s.state, "context": s.context,
                "description": s.description, "target_url": s.target_url, "created_at": s.created_at,
                "updated_at": s.created_at, "creator": _user(s.login, "Bot"),
                "url": f"{self._fake.api_url}/repos/{repo}/statuses/{s.sha}"}


def _body_problem(payload: dict[str, Any]) -> Answer | None:
    body = payload.get("body")
    if not isinstance(body, str) or not body.strip():
        return 422, _validation("body", "missing_field"), {}
    if len(body) > MAX_BODY:
        return 422, {"message": "Validation Failed", "errors": [{
            "resource": "IssueComment", "code": "custom", "field": "body",
            "message": f"Body is too long (maximum is {MAX_BODY} characters)"}], "documentation_url": DOCS_URL}, {}
    return None


def _user(login: str, user_type: str = "User") -> dict[str, Any]:
    return {"login": login, "id": abs(hash(login.lower())) % 10**7, "type": user_type,
            "html_url": f"https://github.example/{login}"}


def _not_found() -> Answer:
    return 404, {"message": "Not Found", "documentation_url": DOCS_URL}, {}


def _validation(field: str, code: str) -> dict[str, Any]:
    return {"message": "Validation Failed", "errors": [{"resource": "Issue", "code": code, "field": field}],
            "documentation_url": DOCS_URL}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
