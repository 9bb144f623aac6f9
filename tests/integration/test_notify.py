"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conveyor.service.notify import Heartbeat, Notifier, status_line, watchdog_interval_s
from tests.conftest import REPO_ROOT
from tests.support.clock import TestClock
from tests.support.waiting import wait_for


class Receiver:
    """The service manager's end: a bound datagram socket and the address to put in NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock, self.address = sock, address

    def next(self, timeout: float = 10.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        """Every datagram waiting right now."""
        self.sock.setblocking(False)
        got = []
        try:
            while True:
                got.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return got


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # A short directory of our own: AF_UNIX paths are limited to ~107 bytes, pytest's tmp paths can be longer.
    with tempfile.TemporaryDirectory(prefix="cv-") as directory, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = str(Path(directory) / "notify")
        sock.bind(path)
        yield Receiver(sock, path)


def test_each_message_arrives_as_one_datagram(receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    assert notifier.enabled
    assert notifier.ready(status_line(running=0, queued=3, paused=1))
    assert receiver.next() == "READY=1\nSTATUS=running 0, queued 3, paused 1"
    notifier.status("running 2, queued 1, paused 0")
    assert receiver.next() == "STATUS=running 2, queued 1, paused 0"
    notifier.watchdog()
    assert receiver.next() == "WATCHDOG=1"
    notifier.stopping()
    assert receiver.next() == "STOPPING=1"
    notifier.extend_timeout(2.5)
    assert receiver.next() == "EXTEND_TIMEOUT_USEC=2500000"


def test_reloading_carries_the_monotonic_clock(receiver: Receiver) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier.from_env({"NOTIFY_SOCKET": receiver.address}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = receiver.next().split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_a_newline_in_a_status_cannot_forge_another_field(receiver: Receiver) -> None:
    Notifier(receiver.address).status("paused\nREADY=1")
    assert receiver.next() == "STATUS=paused READY=1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the abstract socket namespace is Linux-only")
def test_an_at_sign_means_the_abstract_namespace() -> None:
    name = f"conveyor-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_a_child_process_started_by_the_manager_reaches_it(receiver: Receiver) -> None:
    code = "import os; from conveyor.service.notify import Notifier; Notifier.from_env(os.environ).ready('up')"
    env = {**os.environ, "NOTIFY_SOCKET": receiver.address}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, check=True, timeout=60)
    assert receiver.next() == "READY=1\nSTATUS=up"


def test_without_notify_socket_everything_is_a_quiet_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()


@pytest.mark.parametrize("address", ["relative.sock", "vsock:2:1234"])
def test_unsupported_addresses_turn_notifications_off_with_a_log_line(address: str) -> None:
    with capture_logs() as logs:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert not notifier.enabled and not notifier.ready()
    assert [entry["event"] for entry in logs] == ["notify.unsupported_socket"]


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with capture_logs() as logs:
        assert notifier.ready() is False
    assert logs[0]["event"] == "notify.failed" and logs[0]["message"] == "READY=1"


# ---------------------------------------------------------------- WATCHDOG_USEC / WATCHDOG_PID


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(env) == expected


def test_watchdog_pid_is_compared_with_the_given_pid() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "4242"}, pid=4242) == 0.5


# ---------------------------------------------------------------- heartbeat


def beat_for(heartbeat: Heartbeat, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        heartbeat.beat()
        time.sleep(0.02)


def test_heartbeat_pings_only_while_the_loop_beats(receiver: Receiver) -> None:
    """Interval 0.2 s: pings every tick (0.1 s) while the loop beats, none once the loop has been silent for
    longer than 0.2 s by the heartbeat's clock (which the test moves: no waiting for a stall)."""
    clock = TestClock(start=0.0)
    heartbeat = Heartbeat(Notifier(receiver.address), 0.2, clock=clock)
    alive: list[str] = []
    with capture_logs() as logs, heartbeat:
        wait_for(lambda: bool(alive.extend(receiver.drain())) or len(alive) >= 3, what="three pings")
        assert set(alive) == {"WATCHDOG=1"}
        clock.advance(10.0)                      # the loop "stalls": no beat for 10 s
        wait_for(lambda: receiver.drain() is not None               # pings sent before the tick that saw it
                 and any(e["event"] == "watchdog.loop_stalled" for e in logs), what="the stall")
        receiver.drain()
        clock.wait_looks(3, "the heartbeat thread to tick")
        assert receiver.drain() == []            # three ticks, no ping
        heartbeat.beat()                         # the loop comes back: so do the pings
        wait_for(lambda: receiver.drain() != [], what="a ping after the stall")
    events = [entry["event"] for entry in logs]
    assert events.count("watchdog.loop_stalled") == 1 and "watchdog.resumed" in events
    assert not [thread for thread in threading.enumerate() if thread.name == "sd-watchdog"]   # stopped with it


def test_heartbeat_without_a_watchdog_does_nothing(receiver: Receiver) -> None:
    with Heartbeat(Notifier(receiver.address), None) as heartbeat:
        beat_for(heartbeat, 0.3)
    with Heartbeat(Notifier(None), 0.1) as heartbeat:
        beat_for(heartbeat, 0.3)
    assert receiver.drain() == []
