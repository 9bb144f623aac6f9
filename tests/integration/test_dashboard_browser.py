"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright through its
`executable_path`; `.ci/run` installs it): a task's card moves inbox → running → done without a reload while
a real daemon runs it, a question is answered from the page, and the browser's own requests from another
site or through a rebound host name are refused. Screenshots of the pages are saved as test artefacts
(`.artefacts/dashboard/`, or $CONVEYOR_TEST_ARTEFACTS)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import REPO_ROOT
from tests.integration.conftest import Repo
from tests.integration.daemon_process import running_daemon
from tests.integration.dashboard_process import DashboardProcess

ARTEFACTS = Path(os.environ.get("CONVEYOR_TEST_ARTEFACTS", REPO_ROOT / ".artefacts")) / "dashboard"
REBOUND = "rebound.test"     # a name the browser resolves to 127.0.0.1, as a DNS-rebinding attacker's would


def chromium_path() -> str:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError("no chromium found: install Debian's `chromium` package (.ci/run does)")


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                              args=["--no-sandbox", f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"])
        try:
            yield launched
        finally:
            launched.close()


def logged_in(browser: Browser, dashboard: DashboardProcess) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 800}).new_page()
    page.goto(dashboard.login_url())
    page.wait_for_url(dashboard.base + "/")
    page.wait_for_selector("body.is-live")           # the event stream is connected
    return page


def shot(page: Page, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def card(column: str, task_id: str) -> str:
    return f'section[data-column="{column}"] li.card[data-id="{task_id}"]'


def test_a_cards_moves_live_while_the_daemon_runs_the_task(repo: Repo, browser: Browser,
                                                           dashboard: DashboardProcess) -> None:
    page = logged_in(browser, dashboard)
    page.evaluate("window.notReloaded = true")
    repo.submit("live-card", description="FAKE sleep 2.5\nFAKE write live.txt hello")
    page.wait_for_selector(card("inbox", "live-card"), timeout=15000)
    with running_daemon(repo.path):
        page.wait_for_selector(card("running", "live-card"), timeout=30000)
        shot(page, "board-running")
        page.wait_for_selector(card("done", "live-card"), timeout=60000)
    assert page.evaluate("window.notReloaded") is True           # moved by the event stream, not a reload
    assert page.locator(card("inbox", "live-card")).count() == 0
    assert page.locator(card("running", "live-card")).count() == 0
    shot(page, "board-done")
    page.click(f'{card("done", "live-card")} a')
    page.wait_for_selector("h1:has-text('live-card')")
    assert "done" in page.inner_text("h1")
    assert page.locator("table.attempts tbody tr").count() >= 1   # the attempt from telemetry
    shot(page, "task-done")
    page.click("text=Spend & health")
    page.wait_for_selector("h2:has-text('By agent')")
    assert "backend-dev" in page.inner_text("main")
    shot(page, "spend")


def test_an_answer_in_the_page_resumes_the_asking_task(repo: Repo, browser: Browser,
                                                       dashboard: DashboardProcess) -> None:
    question = "Should the <script>alert(1)</script> cache expire after 5 or 60 minutes?"
    repo.submit("ask-browser", description=f"FAKE ask@1 {question}\nFAKE write cache.txt chosen")
    page = logged_in(browser, dashboard)
    with running_daemon(repo.path):
        page.wait_for_selector(card("needs_input", "ask-browser"), timeout=30000)
        shot(page, "board-needs-input")
        page.click(f'{card("needs_input", "ask-browser")} a')
        assert question in page.inner_text("#question")          # shown as text, never run
        page.fill("#answer", "60 minutes")
        shot(page, "task-question")
        page.click("#send-answer")
        page.wait_for_selector("text=the daemon resumes the agent")
        page.click("text=Board")
        page.wait_for_selector("body.is-live")
        page.wait_for_selector(card("done", "ask-browser"), timeout=60000)   # resumed and finished, live
        shot(page, "board-answered-done")
    document = repo.done_doc("ask-browser")
    assert document["status"] == "done" and document["questions"][0]["answer"] == "60 minutes"
    assert "Answer: 60 minutes" in repo.agent_prompt("ask-browser")


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (f'<form id="f" method="post" action="{self.target}"><input name="answer" value="rm -rf">'
                '</form><script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def test_the_browser_cannot_be_used_against_the_dashboard(repo: Repo, browser: Browser,
                                                         dashboard: DashboardProcess) -> None:
    folder = repo.board / "assigned" / "backend-dev"
    folder.mkdir(parents=True)
    path = folder / "ask-csrf.yaml"
    path.write_text(repo.task_text("ask-csrf", status="needs_input", question="Which port?", attempt=1))
    page = logged_in(browser, dashboard)
    # another site (localhost is not 127.0.0.1's site) posts a form to the dashboard in the logged-in browser
    _Attacker.target = f"{dashboard.base}/task/ask-csrf/answer"
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        evil = page.context.new_page()
        response_codes: list[int] = []
        evil.on("response", lambda response: response_codes.append(response.status)
                if "/answer" in response.url else None)
        evil.goto(f"http://localhost:{attacker.server_address[1]}/")
        evil.wait_for_load_state("load")
        evil.wait_for_timeout(500)
        assert response_codes and all(code in (401, 403) for code in response_codes)
    finally:
        attacker.shutdown()
        attacker.server_close()
    assert "answer" not in yaml.safe_load(path.read_text())
    # a rebinding attacker's name resolving to 127.0.0.1 reaches the server but is refused by its Host check
    rebound = page.context.new_page()
    response = rebound.goto(f"http://{REBOUND}:{dashboard.port}/")
    assert response is not None and response.status == 400
    # and a browser without the cookie is sent to the login instructions
    stranger = browser.new_page()
    response = stranger.goto(dashboard.base + "/")
    assert response is not None and response.status == 401
    assert "--print-url" in stranger.inner_text("body")
    stranger.close()
