"""The daemon as a real process (`python -m conveyor run --repo ...`), as systemd or launchd would run it.

Its JSON log lines (stderr) are collected by a reader thread so a test can wait for an event, send real
signals and look at what was said. Started in a session of its own, so `kill_group` takes the daemon and
the git commands it is running at that moment (as a service manager's SIGKILL would) but not the agents,
which run in sessions of their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

Event = dict[str, Any]


class DaemonProcess:
    def __init__(self, repo: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.repo = repo
        self.env = {**os.environ, **(env or {})}
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "run", "--repo", str(self.repo), "--json-logs", *self.args],
            cwd=self.repo, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.proc.stderr:
            for raw in self.proc.stderr:
                with self._lock:
                    self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the daemon and whatever it runs in its own process group (git commands), not the agents."""
        with_suppressed(lambda: os.killpg(self.pid, signal.SIGKILL))
        self.wait(30)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(10)
        return code

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it does not come)."""
        if not self.alive():
            return self.wait(timeout)
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise

    # ---------------------------------------------------------------- logs
    def events(self, name: str | None = None) -> list[Event]:
        with self._lock:
            lines = list(self.lines)
        parsed = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and (name is None or entry.get("event") == name):
                parsed.append(entry)
        return parsed

    def wait_event(self, name: str, predicate: Callable[[Event], bool] | None = None, timeout: float = 60,
                   after: int = 0) -> Event:
        """The first event `name` (matching `predicate`), from the `after`-th such event on."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(name)[after:] if predicate is None or predicate(e)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name!r} event within {timeout} s; log tail:\n" + self.tail())
            if not self.alive() and not found:
                time.sleep(0.2)
                if not [e for e in self.events(name)[after:] if predicate is None or predicate(e)]:
                    raise AssertionError(f"the daemon exited ({self.proc and self.proc.returncode}) before "
                                         f"{name!r}; log tail:\n" + self.tail())
            time.sleep(0.05)

    def tail(self, count: int = 30) -> str:
        with self._lock:
            return "\n".join(self.lines[-count:])


def with_suppressed(action: Callable[[], object]) -> None:
    with suppress(ProcessLookupError):
        action()


@contextmanager
def running_daemon(repo: Path, env: Mapping[str, str] | None = None,
                   args: tuple[str, ...] = ()) -> Iterator[DaemonProcess]:
    """A started daemon that is stopped (SIGTERM, else SIGKILL) when the block ends, whatever happened."""
    daemon = DaemonProcess(repo, env, args).start()
    try:
        yield daemon
    finally:
        if daemon.alive():
            with suppress(subprocess.TimeoutExpired):
                daemon.stop(60)



class NotifySocket:
    """systemd's end of sd_notify: a bound AF_UNIX datagram socket (in a short path: sun_path is ~107 bytes)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="cv-")
        self.address = str(Path(self._dir.name) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.received: list[str] = []

    def collect(self, timeout: float = 0.0) -> list[str]:
        """Read what arrived (waiting up to `timeout` for the first datagram); returns all received so far."""
        self.sock.settimeout(timeout if timeout > 0 else None)
        if timeout <= 0:
            self.sock.setblocking(False)
        try:
            while True:
                self.received.append(self.sock.recv(65536).decode())
                self.sock.setblocking(False)
        except (BlockingIOError, TimeoutError):
            return list(self.received)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30.0, since: int = 0) -> str:
        """The first message from the `since`-th on that matches, waiting for it to arrive if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.collect(0.1)[since:]:
                if predicate(message):
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching notification within {timeout} s; got {self.received[-10:]}")

    def close(self) -> None:
        self.sock.close()
        self._dir.cleanup()
