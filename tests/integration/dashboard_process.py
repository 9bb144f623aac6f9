"""`conveyor dashboard` as a real process on 127.0.0.1, and a logged-in HTTP client for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


class DashboardProcess:
    def __init__(self, repo: Path, *args: str) -> None:
        self.repo = repo
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.runtime = repo / ".git" / "conveyor" / "dashboard.json"
        self.clients: list[httpx.Client] = []
        self._login: str | None = None

    def start(self, timeout: float = 30.0) -> DashboardProcess:
        self.runtime.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "conveyor", "dashboard", "--repo", str(self.repo),
                                      "--port", "0", *self.args], cwd=self.repo, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited: {self.proc.communicate()[1].decode()}")
            if self.runtime.exists() and self._answers():
                return self
            time.sleep(0.05)
        raise AssertionError("the dashboard did not start in time")

    def _answers(self) -> bool:
        try:
            return httpx.get(self.base + "/static/dashboard.css", timeout=2).status_code == 200
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    @property
    def port(self) -> int:
        return int(json.loads(self.runtime.read_text(encoding="utf-8"))["port"])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def login_url(self) -> str:
        if self._login is not None:
            return self._login
        done = subprocess.run([sys.executable, "-m", "conveyor", "dashboard", "--repo", str(self.repo), "--print-url"],
                              capture_output=True, text=True, check=True, cwd=self.repo)
        self._login = done.stdout.strip()
        return self._login

    def client(self) -> httpx.Client:
        """A client holding the session cookie, as a browser would after opening the login link."""
        client = httpx.Client(base_url=self.base, timeout=10)
        self.clients.append(client)
        response = client.get(self.login_url().removeprefix(self.base))
        assert response.status_code == 200, response.text
        return client

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
