"""A small sd_notify client and a watchdog heartbeat that stops when the main loop stalls.

The protocol (sd_notify(3)) is one datagram of newline-separated `KEY=VALUE` lines sent to the AF_UNIX
socket named by `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace). Hand-written on purpose:
the PyPI `sdnotify` package has been unmaintained since 2017 and has no watchdog helpers, and systemd's
own Python binding needs libsystemd headers to build. Without `$NOTIFY_SOCKET` (not under systemd, or
under launchd) every call is a no-op, so the daemon never branches on how it was started.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from conveyor.core.logs import get_logger

log = get_logger()


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog interval systemd expects pings within (`WATCHDOG_USEC`), or None when not asked.

    `WATCHDOG_PID`, when set, names the process the watchdog is meant for; in any other process (a child
    that inherited the environment) there is no watchdog to serve.
    """
    raw, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if owner and owner.strip() != str(pid if pid is not None else os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def status_line(running: int, queued: int, paused: int) -> str:
    """The STATUS= text `systemctl status` shows: what the daemon is doing right now."""
    return f"running {running}, queued {queued}, paused {paused}"


class Notifier:
    """Sends sd_notify messages; never raises (a lost message is logged, the daemon keeps working)."""

    def __init__(self, address: str | None) -> None:
        self.address = _socket_address(address) if address else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message; True when it left. Newlines in values are flattened (they would split lines)."""
        if self.address is None:
            return False
        text = "\n".join(f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(text.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            log.warning("notify.failed", message=text.split("\n", 1)[0], error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (recovery included) is complete: systemd marks the unit active."""
        return self.send(READY=1, **({"STATUS": status} if status is not None else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        """Configuration reload began; send `ready()` when done. systemd >= 253 wants MONOTONIC_USEC too."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (a long recovery or drain) than TimeoutStartSec/StopSec."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))


def _socket_address(address: str) -> str | None:
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    log.warning("notify.unsupported_socket", address=address,
                hint="only AF_UNIX paths and @abstract names are supported; notifications are off")
    return None


class Heartbeat:
    """Pings WATCHDOG=1 every interval/2 from a thread, but only while the main loop keeps calling `beat()`.

    A thread that pinged on its own would keep a wedged daemon alive forever; tying the pings to `beat()`
    means a loop stalled for longer than `stall_after_s` (default: the watchdog interval) goes silent and
    systemd restarts it. With no interval (no watchdog configured) it does nothing.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None, *, stall_after_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.interval_s = interval_s if notifier.enabled else None
        self.stall_after_s = stall_after_s if stall_after_s is not None else interval_s
        self.clock = clock
        self._last_beat = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled = False

    def beat(self) -> None:
        """Called by the main loop on every turn: proof of life."""
        self._last_beat = self.clock()

    def start(self) -> Heartbeat:
        if self.interval_s is None or self._thread is not None:
            return self
        self.beat()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        assert self.interval_s is not None and self.stall_after_s is not None
        while not self._stop.wait(self.interval_s / 2):
            silent_for = self.clock() - self._last_beat
            if silent_for <= self.stall_after_s:
                if self._stalled:
                    log.info("watchdog.resumed")
                    self._stalled = False
                self.notifier.watchdog()
            elif not self._stalled:
                self._stalled = True
                log.error("watchdog.loop_stalled", silent_for_s=round(silent_for, 1),
                          hint="watchdog pings stopped; systemd will restart the daemon")

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
