"""The dashboard over real HTTP against a real `conveyor dashboard` process: login, Host check, CSRF, the
JSON twin of `conveyor status`, the live event stream after a file move, and the two actions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from tests.integration.conftest import DAEMON_YAML, Repo
from tests.integration.daemon_process import running_daemon
from tests.integration.dashboard_process import DashboardProcess
from tests.support.waiting import wait_for


def park(repo: Repo, task_id: str, question: str) -> os.PathLike[str]:
    """A task parked in assigned/ waiting for an answer, as the daemon leaves it."""
    folder = repo.board / "assigned" / "backend-dev"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task_id}.yaml"
    path.write_text(repo.task_text(task_id, status="needs_input", question=question, attempt=1), encoding="utf-8")
    return path


def test_every_page_needs_the_login(repo: Repo, dashboard: DashboardProcess) -> None:
    for path in ("/", "/events", "/api/status", "/spend", "/task/anything"):
        response = httpx.get(dashboard.base + path, timeout=10)
        assert response.status_code == 401, path
        assert "--print-url" in response.text
    wrong = httpx.get(dashboard.base + "/login?token=not-the-token", timeout=10)
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    forged = httpx.get(dashboard.base + "/", cookies={"conveyor_dashboard": "0" * 64}, timeout=10)
    assert forged.status_code == 401


def test_the_token_file_is_private_and_the_cookie_is_httponly_strict(repo: Repo, dashboard: DashboardProcess) -> None:
    token_file = repo.git_dir / "conveyor" / "dashboard.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    url = dashboard.login_url()
    assert url == f"{dashboard.base}/login?token={token}"
    response = httpx.get(url, timeout=10)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert token not in cookie                       # the cookie is derived from the token, not the token
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_a_wrong_host_header_is_refused_even_when_logged_in(dashboard: DashboardProcess) -> None:
    client = dashboard.client()
    assert client.get("/").status_code == 200
    rebound = client.get("/", headers={"Host": f"attacker.example:{dashboard.port}"})
    assert rebound.status_code == 400
    assert client.get("/api/status", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"Host": f"localhost:{dashboard.port}"}).status_code == 200


def test_cross_site_posts_are_refused_and_a_same_site_answer_is_written(repo: Repo,
                                                                        dashboard: DashboardProcess) -> None:
    path = park(repo, "ask-1", "Which database should the cache use?")
    client = dashboard.client()
    page = client.get("/task/ask-1").text
    assert "Which database should the cache use?" in page
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    no_token = client.post("/task/ask-1/answer", content="answer=sqlite", headers=form)
    assert no_token.status_code == 403
    cross_origin = client.post("/task/ask-1/answer", content=f"csrf={csrf}&answer=sqlite",
                               headers={**form, "Origin": "http://attacker.example"})
    assert cross_origin.status_code == 403
    cross_site = client.post("/task/ask-1/answer", content=f"csrf={csrf}&answer=sqlite",
                             headers={**form, "Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403
    no_cookie = httpx.post(dashboard.base + "/task/ask-1/answer", content=f"csrf={csrf}&answer=sqlite",
                           headers=form, timeout=10)
    assert no_cookie.status_code == 401
    assert "answer" not in yaml.safe_load(path.read_text())
    accepted = client.post("/task/ask-1/answer", content=f"csrf={csrf}&answer=use+sqlite",
                           headers={**form, "Origin": dashboard.base, "Sec-Fetch-Site": "same-origin"})
    assert accepted.status_code == 303
    document = yaml.safe_load(path.read_text())
    assert document["answer"] == "use sqlite" and document["status"] == "needs_input"
    again = client.post("/task/ask-1/answer", content=f"csrf={csrf}&answer=other", headers=form)
    assert again.status_code == 409 and "already has an answer" in again.text


def test_only_answer_and_retry_change_anything(repo: Repo, dashboard: DashboardProcess) -> None:
    client = dashboard.client()
    csrf = client.get("/").text.count("csrf")   # the board page carries no form at all
    assert csrf == 0
    for path in ("/", "/api/status", "/events", "/spend", "/task/x", "/login"):
        assert client.request("PUT", path).status_code in (401, 403, 404, 405)
        assert client.post(path).status_code in (403, 404, 405)
    assert client.post("/task/x/delete", content="csrf=x").status_code == 403


def test_retry_moves_a_failed_task_back_into_the_inbox(repo: Repo, dashboard: DashboardProcess) -> None:
    folder = repo.board / "done" / "backend-dev"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bad-1.yaml").write_text(repo.task_text("bad-1", status="error", attempt=3,
                                                      error={"kind": "timeout", "message": "ran out of time"}))
    (folder / "good-1.yaml").write_text(repo.task_text("good-1", status="done", result={"branch": "b"}))
    client = dashboard.client()
    page = client.get("/task/bad-1").text
    assert "ran out of time" in page and "timeout" in page
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    refused = client.post("/task/good-1/retry", content=f"csrf={csrf}", headers=form)
    assert refused.status_code == 409 and "has not failed" in refused.text
    assert client.post("/task/bad-1/retry", content=f"csrf={csrf}", headers=form).status_code == 303
    document = yaml.safe_load((repo.inbox / "bad-1.yaml").read_text())
    assert document["status"] == "new" and "attempt" not in document
    assert document["retries"][0]["error"] == "ran out of time" and "error" not in document
    assert not (folder / "bad-1.yaml").exists()
    spend = client.get("/spend").text
    assert "Errors by kind" in spend


def test_task_ids_never_become_paths(repo: Repo, dashboard: DashboardProcess) -> None:
    client = dashboard.client()
    for bad in ("..%2F..%2Fconfig%2Fdaemon", "%2Fetc%2Fpasswd", ".hidden"):
        response = client.get(f"/task/{bad}")
        assert response.status_code == 404
        assert "base_branch" not in response.text and "root:" not in response.text


def test_the_json_twin_matches_conveyor_status(repo: Repo, dashboard: DashboardProcess) -> None:
    repo.submit("t-json")
    park(repo, "ask-2", "Tabs or spaces?")
    client = dashboard.client()
    served = client.get("/api/status").json()
    printed = json.loads(subprocess.run([sys.executable, "-m", "conveyor", "status", "--format", "json"],
                                        cwd=repo.path, capture_output=True, text=True, check=True).stdout)
    assert served.keys() == printed.keys()
    assert served["queued"][0]["id"] == printed["queued"][0]["id"] == "t-json"
    assert served["needs_input"] == printed["needs_input"]
    assert printed["needs_input"][0]["question"] == "Tabs or spaces?"


class EventReader:
    """Reads the server-sent events of one client on a thread; `wait(n)` waits for the n-th one.

    It reads with a short read timeout and reconnects with `Last-Event-ID` after each (as a browser does after
    a dropped connection), so `close()` never waits for a ping, and every reconnect exercises the resume.
    """

    def __init__(self, client: httpx.Client, last_event_id: str | None = None) -> None:
        self.events: list[dict[str, str]] = []
        self.connections = 0
        self._client = client
        self._last = last_event_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            headers = {"Last-Event-ID": self._last} if self._last else {}
            try:
                with self._client.stream("GET", "/events", headers=headers,
                                         timeout=httpx.Timeout(10, read=0.5)) as response:
                    self.connections += 1
                    self._read(response)
            except httpx.ReadTimeout:
                continue
            except httpx.HTTPError:
                if not self._stop.is_set():
                    raise

    def _read(self, response: httpx.Response) -> None:
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if not line:
                if "data" in event:
                    self.events.append(event)
                    self._last = event.get("id", self._last)
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                event[name] = value.lstrip(" ")

    def wait(self, count: int, timeout: float = 15.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"only {len(self.events)} events"
            time.sleep(0.02)
        return self.events[count - 1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def columns_of(event: dict[str, str]) -> dict[str, list[str]]:
    view = json.loads(event["data"])
    return {name: [card["id"] for card in cards] for name, cards in view["columns"].items()}


def test_a_file_move_reaches_the_event_stream_and_a_reconnect_resumes(repo: Repo,
                                                                       dashboard: DashboardProcess) -> None:
    repo.submit("live-1")
    reader = EventReader(dashboard.client())
    try:
        first = reader.wait(1)
        assert columns_of(first)["inbox"] == ["live-1"]
        folder = repo.board / "assigned" / "backend-dev"
        folder.mkdir(parents=True)
        (repo.inbox / "live-1.yaml").rename(folder / "live-1.yaml")
        second = reader.wait(2)
        assert columns_of(second)["inbox"] == [] and columns_of(second)["running"] == ["live-1"]
        assert second["id"] != first["id"]
    finally:
        reader.close()
    # a client that saw the latest event waits for the next one; one that missed some gets the board at once
    current = EventReader(dashboard.client(), last_event_id=second["id"])
    stale = EventReader(dashboard.client(), last_event_id=first["id"])
    try:
        assert columns_of(stale.wait(1))["running"] == ["live-1"]
        wait_for(lambda: current.connections >= 2, what="a reconnect")   # the first stream ended silent
        assert current.events == []                                      # nothing resent
        (folder / "live-1.yaml").rename(repo.board / "done" / "live-1.yaml")
        assert "live-1" in columns_of(current.wait(1))["done"]
    finally:
        current.close()
        stale.close()


def test_a_non_loopback_address_is_refused_without_allow_remote(repo: Repo) -> None:
    done = subprocess.run([sys.executable, "-m", "conveyor", "dashboard", "--host", "0.0.0.0", "--port", "0"],
                          cwd=repo.path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "not a loopback address" in done.stderr and "allow_remote" in done.stderr


def test_the_daemon_serves_the_dashboard_when_daemon_yaml_says_so(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML + "dashboard: {enabled: true, port: 0}\n")
    runtime = repo.git_dir / "conveyor" / "dashboard.json"
    with running_daemon(repo.path) as daemon:
        daemon.wait_event("dashboard.listening")
        port = json.loads(runtime.read_text())["port"]
        assert httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=10).status_code == 401
        token = (repo.git_dir / "conveyor" / "dashboard.token").read_text().strip()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get(f"/login?token={token}").status_code == 200
            assert client.get("/api/status").json()["daemon"]["running"] is True
        assert daemon.stop() == 0
    assert not runtime.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
