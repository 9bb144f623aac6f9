"""A local stand-in for the GitHub REST API, for tests that must never leave 127.0.0.1.

It speaks the subset the publisher really uses (found by running PyGithub against it): list pull
requests by head, create one, read one, add labels, and the repository itself. Pull requests live in
memory per repository. Every request is recorded for asserts; tests can merge or close a pull request
and make the next requests fail or stall. With `remotes` (repository name → bare git directory) a
pull request is refused, as GitHub does, when its branches were never pushed, and an open pull
request's head sha follows its branch there (a push moves it).

The conversation (reviews, comments and replies, check runs and logs, statuses, permissions, merge and
close through the API) is `fake.threads` (see `fake_github_threads`). Every GET answer carries an ETag;
a request whose If-None-Match names the current one gets 304 with no body and, as on GitHub, does not
count against the rate limit (`rate_used` counts the requests that do). Merging is bookkeeping only: the
base branch in `remotes` is not changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.fake_github_threads import Threads

DEFAULT_TOKEN = "fake-github-token"
DEFAULT_LOGIN = "conveyor-bot"     # the token's owner: the user the API's writes are made as
RATE_LIMIT = 5000
DOCS_URL = "https://docs.github.com/rest"
_DEFAULT_MESSAGES = {
    401: "Bad credentials",
    403: "Resource not accessible by personal access token",
    404: "Not Found",
    422: "Validation Failed",
    500: "Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (the path has the API prefix removed)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    authorized: bool


@dataclass(frozen=True)
class FakePull:
    """A pull request as the fake stores it."""

    repo: str
    number: int
    head_owner: str
    head: str
    base: str
    title: str
    body: str | None
    draft: bool
    labels: tuple[str, ...] = ()
    state: str = "open"
    merged: bool = False
    created_at: str = ""
    closed_at: str | None = None
    merged_at: str | None = None
    head_sha: str = "0" * 40
    head_deleted: bool = False


@dataclass
class _Injection:
    status: int | None
    remaining: int
    method: str | None
    path_contains: str | None
    message: str | None
    delay_s: float
    action: Callable[[], object] | None = None
    drop_fields: tuple[str, ...] = ()

    def matches(self, method: str, path: str) -> bool:
        return (self.remaining > 0 and (self.method is None or self.method == method)
                and (self.path_contains is None or self.path_contains in path))


class FakeGitHub:
    """An HTTP server on 127.0.0.1 (a free port) in a thread; use as a context manager."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        repos: Iterable[str] = ("octo/widgets",),
        path_prefix: str = "",
        drafts_supported: bool = True,
        remotes: Mapping[str, Path] | None = None,
        login: str = DEFAULT_LOGIN,
    ) -> None:
        self.token = token
        self.login = login
        self.path_prefix = path_prefix.rstrip("/")
        self.drafts_supported = drafts_supported
        self._remotes = dict(remotes or {})
        self._pulls: dict[str, dict[int, FakePull]] = {repo: {} for repo in repos}
        self._label_events: dict[tuple[str, int], list[dict[str, Any]]] = {}   # issue events: (un)labeled
        self._requests: list[RecordedRequest] = []
        self._injections: list[_Injection] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self.rate_used = 0
        self.threads = Threads(self, login=login)

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FakeGitHub:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-github", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeGitHub is not started")
        return int(self._server.server_address[1])

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The base URL to give the client: GitHub.com style, or GHE style with `path_prefix`."""
        return f"{self.web_url}{self.path_prefix}"

    # -- inspection ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path fully matches the regex `path_pattern`."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    def pulls(self, repo: str) -> list[FakePull]:
        with self._lock:
            pulls = sorted(self._pulls[repo].values(), key=lambda pull: pull.number)
        return [self._live(pull) for pull in pulls]

    def pulls_for(self, repo: str, head: str) -> list[FakePull]:
        """Every pull request (any state) whose head is `head` ("branch" or "owner:branch")."""
        owner, branch = _split_head(repo, head)
        return [p for p in self.pulls(repo) if p.head == branch and p.head_owner == owner]

    def pull(self, number: int, repo: str | None = None) -> FakePull:
        repo = self.only_repo(repo)
        with self._lock:
            pull = self._pulls[repo][number]
        return self._live(pull)

    # -- test controls ---------------------------------------------------------------------------

    def open_pull(self, repo: str, head: str, base: str = "main", *, title: str = "seeded",
                  draft: bool = False) -> FakePull:
        """Create a pull request directly, as if someone had opened it by hand."""
        owner, branch = _split_head(repo, head)
        with self._lock:
            return self._store_new(repo, owner, branch, base, title, None, draft)

    def merge(self, number: int, repo: str | None = None) -> FakePull:
        head = self.pull(number, repo).head_sha       # the head is frozen where it was when merged
        return self._update(repo, number, state="closed", merged=True, merged_at=_now(), closed_at=_now(),
                            head_sha=head)

    def close(self, number: int, repo: str | None = None) -> FakePull:
        head = self.pull(number, repo).head_sha
        return self._update(repo, number, state="closed", closed_at=_now(), head_sha=head)

    def reopen(self, number: int, repo: str | None = None) -> FakePull:
        return self._update(repo, number, state="open", closed_at=None)

    def edit(self, number: int, repo: str | None = None, *, title: str | None = None,
             body: str | None = None) -> FakePull:
        pull = self.pull(number, repo)
        return self._update(repo, number, title=pull.title if title is None else title,
                            body=pull.body if body is None else body)

    def delete_head_branch(self, number: int, repo: str | None = None) -> FakePull:
        """The head branch is deleted: on GitHub an open pull request is then closed (not merged); with
        `remotes` the branch really goes from the bare repository."""
        repo = self.only_repo(repo)
        pull = self.pull(number, repo)
        self._update(repo, number, head_sha=pull.head_sha, head_deleted=True)   # before the branch goes
        if repo in self._remotes:
            subprocess.run(["git", "--git-dir", str(self._remotes[repo]), "update-ref", "-d",
                            f"refs/heads/{pull.head}"], check=False, capture_output=True)
        return self.close(number, repo) if pull.state == "open" else self.pull(number, repo)

    def fail_next(self, status: int, *, count: int = 1, method: str | None = None,
                  path_contains: str | None = None, message: str | None = None) -> None:
        """Answer the next `count` matching requests with `status` and a GitHub-style error body."""
        with self._lock:
            self._injections.append(_Injection(status, count, method, path_contains, message, 0.0))

    def stall_next(self, seconds: float, *, count: int = 1, method: str | None = None,
                   path_contains: str | None = None) -> None:
        """Hold the next `count` matching requests for `seconds` before answering them normally."""
        with self._lock:
            self._injections.append(_Injection(None, count, method, path_contains, None, seconds))

    def drop_from_next(self, *fields: str, count: int = 1, method: str | None = None,
                       path_contains: str | None = None) -> None:
        """Handle the next matching request for real but leave `fields` out of the answer: a server (or
        proxy) whose answer the client cannot read, after the change already happened."""
        with self._lock:
            self._injections.append(_Injection(None, count, method, path_contains, None, 0.0, drop_fields=fields))

    def run_before_next(self, action: Callable[[], object], *, count: int = 1, method: str | None = None,
                        path_contains: str | None = None) -> None:
        """Call `action` just before handling the next matching request: another client acting at
        the worst moment (a race), deterministically."""
        with self._lock:
            self._injections.append(_Injection(None, count, method, path_contains, None, 0.0, action))

    # -- request handling (called from server threads) -------------------------------------------

    def handle(self, method: str, raw_path: str, authorization: str,
               body: bytes, if_none_match: str = "") -> tuple[int, Any, dict[str, str]]:
        """One request → (status, JSON body or None, headers). GET answers get an ETag (304 when the
        client already has it); every answer but a 304 counts against the rate limit."""
        status, answer, headers = self._handle(method, raw_path, authorization, body)
        if method == "GET" and status == 200 and not isinstance(answer, str):
            etag = 'W/"' + hashlib.sha256(json.dumps([answer, headers], sort_keys=True).encode()).hexdigest() + '"'
            headers = {**headers, "ETag": etag}
            if etag in [tag.strip() for tag in if_none_match.split(",")]:
                status, answer = 304, None
        with self._lock:
            if status != 304:
                self.rate_used += 1
            used = self.rate_used
        return status, answer, {**headers, "X-RateLimit-Limit": str(RATE_LIMIT),
                                "X-RateLimit-Remaining": str(max(RATE_LIMIT - used, 0)),
                                "X-RateLimit-Used": str(used)}

    def _handle(self, method: str, raw_path: str, authorization: str,
                body: bytes) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(raw_path)
        if not url.path.startswith(self.path_prefix + "/"):
            return 404, _error("Not Found"), {}
        path = url.path[len(self.path_prefix):]
        self._local.path = url.path
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        payload = _json_or_none(body)
        authorized = authorization in (f"token {self.token}", f"Bearer {self.token}")
        injection = self._record(RecordedRequest(method, path, query, payload, authorized))
        if injection is not None:
            if injection.action is not None:
                injection.action()
            if injection.delay_s:
                self._stopping.wait(injection.delay_s)
            if injection.status is not None:
                message = injection.message or _DEFAULT_MESSAGES.get(injection.status, "Error")
                return injection.status, _error(message), {}
        logs = re.fullmatch(r"/_fake/logs/(\d+)", path)
        if logs is not None and method == "GET":   # the download URL a job's logs redirect to (a text body)
            text = self.threads.raw_log(int(logs[1]))
            return (404, _error("Not Found"), {}) if text is None else (200, text, {})
        if not authorized:
            return 401, _error("Bad credentials"), {}
        if path == "/user" and method == "GET":
            return 200, {"login": self.login, "id": 2, "type": "User"}, {}
        status, answer, headers = self._route(method, path, query, payload)
        if injection is not None and injection.drop_fields and isinstance(answer, dict):
            answer = {key: value for key, value in answer.items() if key not in injection.drop_fields}
        return status, answer, headers

    def _record(self, request: RecordedRequest) -> _Injection | None:
        with self._lock:
            self._requests.append(request)
            for injection in self._injections:
                if injection.matches(request.method, request.path):
                    injection.remaining -= 1
                    return dataclasses.replace(injection)
        return None

    def _route(self, method: str, path: str, query: dict[str, str],
               payload: Any) -> tuple[int, Any, dict[str, str]]:
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if match is None or match[1] not in self._pulls:
            return 404, _error("Not Found"), {}
        repo, rest = match[1], match[2] or ""
        for verb, pattern, action in self._routes():
            found = re.fullmatch(pattern, rest)
            if verb == method and found is not None:
                return action(repo, found, query, payload)
        return 404, _error("Not Found"), {}

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any, dict[str, str]]]]]:
        return [
            ("GET", "", self._get_repo),
            ("GET", "/pulls", self._list_pulls),
            ("POST", "/pulls", self._create_pull),
            ("GET", r"/pulls/(\d+)", self._get_pull),
            ("GET", r"/pulls/(\d+)/merge", self._get_merged),
            ("GET", r"/issues/(\d+)/labels", self._get_labels),
            ("POST", r"/issues/(\d+)/labels", self._add_labels),
            ("DELETE", r"/issues/(\d+)/labels/([^/]+)", self._remove_label),
            ("GET", r"/issues/(\d+)/events", self._list_events),
            *self.threads.routes(),
        ]

    def _get_repo(self, repo: str, _m: re.Match[str], _q: dict[str, str],
                  _p: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, self.repo_json(repo), {}

    def _list_pulls(self, repo: str, _m: re.Match[str], query: dict[str, str],
                    _p: Any) -> tuple[int, Any, dict[str, str]]:
        state = query.get("state", "open")
        pulls = [p for p in self.pulls(repo) if state == "all" or p.state == state]
        if "head" in query:
            owner, _, branch = query["head"].partition(":")
            pulls = [p for p in pulls if p.head_owner == owner and p.head == branch] if branch else []
        if "base" in query:
            pulls = [p for p in pulls if p.base == query["base"]]
        pulls.sort(key=lambda pull: pull.number, reverse=True)
        return self.page(repo, [self.pull_json(p) for p in pulls], query)

    def page(self, repo: str, items: list[Any], query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """One page of a list answer, with GitHub's Link header naming the next one."""
        per_page = max(1, min(100, int(query.get("per_page", "30"))))
        page = max(1, int(query.get("page", "1")))
        chunk = items[(page - 1) * per_page:page * per_page]
        headers: dict[str, str] = {}
        if page * per_page < len(items):
            rest = "&".join(f"{k}={v}" for k, v in query.items() if k not in ("page", "per_page"))
            path = getattr(self._local, "path", f"{self.path_prefix}/repos/{repo}/pulls")
            link = f"{self.web_url}{path}?{rest}&per_page={per_page}&page={page + 1}"
            headers["Link"] = f'<{link}>; rel="next"'
        return 200, chunk, headers

    def _create_pull(self, repo: str, _m: re.Match[str], _q: dict[str, str],
                     payload: Any) -> tuple[int, Any, dict[str, str]]:
        with self._lock:  # check and store at once, so racing clients cannot both create
            problem = self._create_problem(repo, payload)
            if problem is not None:
                return 422, problem, {}
            owner, branch = _split_head(repo, payload["head"])
            pull = self._store_new(repo, owner, branch, payload["base"], payload["title"],
                                   payload.get("body"), bool(payload.get("draft", False)))
        return 201, self.pull_json(pull), {}

    def _create_problem(self, repo: str, payload: Any) -> dict[str, Any] | None:
        if not isinstance(payload, dict):
            return _error("Problems parsing JSON")
        missing = [name for name in ("head", "base", "title") if not payload.get(name)]
        if missing:
            return _validation({"resource": "PullRequest", "code": "missing_field", "field": missing[0]})
        owner, branch = _split_head(repo, payload["head"])
        if payload.get("draft") and not self.drafts_supported:
            return _validation({"resource": "PullRequest", "code": "custom",
                                "message": "Draft pull requests are not supported in this repository."})
        for field in ("head", "base"):
            name = branch if field == "head" else payload["base"]
            if repo in self._remotes and not self._branch_exists(repo, name):
                return _validation({"resource": "PullRequest", "field": field, "code": "invalid"})
        existing = self.pulls_for(repo, payload["head"])
        if any(p.state == "open" and p.base == payload["base"] for p in existing):
            return _validation({"resource": "PullRequest", "code": "custom",
                                "message": f"A pull request already exists for {owner}:{branch}."})
        return None

    def _get_pull(self, repo: str, match: re.Match[str], _q: dict[str, str],
                  _p: Any) -> tuple[int, Any, dict[str, str]]:
        pull = self._find(repo, int(match[1]))
        return (404, _error("Not Found"), {}) if pull is None else (200, self.pull_json(pull), {})

    def _get_merged(self, repo: str, match: re.Match[str], _q: dict[str, str],
                    _p: Any) -> tuple[int, Any, dict[str, str]]:
        pull = self._find(repo, int(match[1]))
        return (204, None, {}) if pull is not None and pull.merged else (404, _error("Not Found"), {})

    def _get_labels(self, repo: str, match: re.Match[str], _q: dict[str, str],
                    _p: Any) -> tuple[int, Any, dict[str, str]]:
        pull = self._find(repo, int(match[1]))
        if pull is None:
            return 404, _error("Not Found"), {}
        return 200, [self._label_json(repo, name) for name in pull.labels], {}

    def _add_labels(self, repo: str, match: re.Match[str], _q: dict[str, str],
                    payload: Any) -> tuple[int, Any, dict[str, str]]:
        names = payload.get("labels") if isinstance(payload, dict) else payload
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            return 422, _validation({"resource": "Label", "code": "invalid", "field": "labels"}), {}
        number = int(match[1])
        if self._find(repo, number) is None:
            return 404, _error("Not Found"), {}
        with self._lock:
            pull = self._pulls[repo][number]
            labels = pull.labels + tuple(name for name in names if name not in pull.labels)
            self._pulls[repo][number] = dataclasses.replace(pull, labels=labels)
            for name in names:
                if name not in pull.labels:
                    self._label_event(repo, number, "labeled", name, self.login)
        return 200, [self._label_json(repo, name) for name in labels], {}

    def label_as(self, number: int, name: str, login: str, repo: str | None = None) -> None:
        """A person (`login`) puts a label on the pull request, as the web page would."""
        repo = self.only_repo(repo)
        with self._lock:
            pull = self._pulls[repo][number]
            if name not in pull.labels:
                self._pulls[repo][number] = dataclasses.replace(pull, labels=(*pull.labels, name))
            self._label_event(repo, number, "labeled", name, login)

    def _label_event(self, repo: str, number: int, event: str, name: str, login: str) -> None:
        events = self._label_events.setdefault((repo, number), [])
        events.append({"id": 9000 + len(events), "event": event, "label": {"name": name},
                       "actor": {"login": login, "id": 2 if login == self.login else 3, "type": "User"},
                       "created_at": "2026-12-07T00:00:00Z"})

    def _list_events(self, repo: str, match: re.Match[str], query: dict[str, str],
                     _p: Any) -> tuple[int, Any, dict[str, str]]:
        number = int(match[1])
        if self._find(repo, number) is None:
            return 404, _error("Not Found"), {}
        with self._lock:
            events = list(self._label_events.get((repo, number), []))
        return self.page(repo, events, query)

    def _remove_label(self, repo: str, match: re.Match[str], _q: dict[str, str],
                      _p: Any) -> tuple[int, Any, dict[str, str]]:
        number, name = int(match[1]), unquote(match[2])
        pull = self._find(repo, number)
        if pull is None or name not in pull.labels:
            return 404, _error("Label does not exist" if pull is not None else "Not Found"), {}
        with self._lock:
            pull = self._pulls[repo][number]
            labels = tuple(label for label in pull.labels if label != name)
            self._pulls[repo][number] = dataclasses.replace(pull, labels=labels)
            self._label_event(repo, number, "unlabeled", name, self.login)
        return 200, [self._label_json(repo, label) for label in labels], {}

    # -- helpers ---------------------------------------------------------------------------------

    def _store_new(self, repo: str, owner: str, branch: str, base: str, title: str,
                   body: str | None, draft: bool) -> FakePull:
        """Add a pull request; the caller holds the lock."""
        number = max(self._pulls[repo], default=0) + 1
        sha = self._branch_sha(repo, branch) if repo in self._remotes else "0" * 40
        pull = FakePull(repo=repo, number=number, head_owner=owner, head=branch, base=base, title=title,
                        body=body, draft=draft, created_at=_now(), head_sha=sha)
        self._pulls[repo][number] = pull
        return pull

    def _update(self, repo: str | None, number: int, **changes: Any) -> FakePull:
        repo = self.only_repo(repo)
        with self._lock:
            pull = dataclasses.replace(self._pulls[repo][number], **changes)
            self._pulls[repo][number] = pull
            return pull

    def _find(self, repo: str, number: int) -> FakePull | None:
        with self._lock:
            pull = self._pulls[repo].get(number)
        return None if pull is None else self._live(pull)

    def _live(self, pull: FakePull) -> FakePull:
        """An open pull request's head is its branch's tip in `remotes` (a push moves it)."""
        if pull.state != "open" or pull.head_deleted or pull.repo not in self._remotes:
            return pull
        sha = self._branch_sha(pull.repo, pull.head)
        return dataclasses.replace(pull, head_sha=sha) if sha and sha != pull.head_sha else pull

    def only_repo(self, repo: str | None) -> str:
        if repo is not None:
            return repo
        if len(self._pulls) != 1:
            raise ValueError("FakeGitHub serves several repositories: say which one")
        return next(iter(self._pulls))

    def _branch_sha(self, repo: str, branch: str) -> str:
        done = subprocess.run(
            ["git", "--git-dir", str(self._remotes[repo]), "rev-parse", "--verify", "--quiet",
             f"refs/heads/{branch}^{{commit}}"],
            capture_output=True, text=True, check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    def _branch_exists(self, repo: str, branch: str) -> bool:
        return bool(self._branch_sha(repo, branch))

    def repo_json(self, repo: str) -> dict[str, Any]:
        owner, name = repo.split("/", 1)
        return {
            "id": abs(hash(repo)) % 10**8, "name": name, "full_name": repo, "private": False,
            "owner": {"login": owner, "id": 1, "type": "User"},
            "html_url": f"{self.web_url}/{repo}", "url": f"{self.api_url}/repos/{repo}",
            "default_branch": "main",
        }

    def _label_json(self, repo: str, name: str) -> dict[str, Any]:
        return {"id": abs(hash((repo, name))) % 10**8, "name": name, "color": "ededed",
                "url": f"{self.api_url}/repos/{repo}/labels/{name}", "default": False}

    def pull_json(self, pull: FakePull) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{pull.repo}"
        owner = pull.repo.split("/", 1)[0]
        return {
            "id": pull.number + 1000, "node_id": f"PR_fake{pull.number}", "number": pull.number,
            "state": pull.state, "locked": False, "title": pull.title, "body": pull.body,
            "draft": pull.draft, "merged": pull.merged, "merged_at": pull.merged_at,
            "closed_at": pull.closed_at, "created_at": pull.created_at, "updated_at": pull.created_at,
            "html_url": f"{self.web_url}/{pull.repo}/pull/{pull.number}",
            "url": f"{api}/pulls/{pull.number}", "issue_url": f"{api}/issues/{pull.number}",
            "user": {"login": self.login, "id": 2, "type": "User"},
            "labels": [self._label_json(pull.repo, name) for name in pull.labels],
            "head": {"label": f"{pull.head_owner}:{pull.head}", "ref": pull.head, "sha": pull.head_sha,
                     "repo": self.repo_json(pull.repo)},
            "mergeable": None if pull.state != "open" else True,
            "base": {"label": f"{owner}:{pull.base}", "ref": pull.base, "sha": "0" * 40,
                     "repo": self.repo_json(pull.repo)},
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGitHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client gave up (a timeout test): that is the point of the test."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are recorded on the fake; no access log on stderr."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorization = self.headers.get("Authorization", "")
        try:
            status, payload, extra = self.server.fake.handle(self.command, self.path, authorization, body,
                                                             self.headers.get("If-None-Match", ""))
        except Exception as exc:  # a bug in the fake must fail the test loudly, not drop the connection
            status, payload, extra = 500, _error(f"FakeGitHub failed: {exc!r}"), {}
        text = isinstance(payload, str)
        data = payload.encode() if text else b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)


def _split_head(repo: str, head: str) -> tuple[str, str]:
    owner, sep, branch = head.partition(":")
    return (owner, branch) if sep else (repo.split("/", 1)[0], head)


def _error(message: str) -> dict[str, Any]:
    return {"message": message, "documentation_url": DOCS_URL}


def _validation(error: dict[str, Any]) -> dict[str, Any]:
    return {"message": "Validation Failed", "errors": [error], "documentation_url": DOCS_URL}


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
