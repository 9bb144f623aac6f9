"""The notification thread: the daemon's loop only puts events on a queue; this thread batches, posts and
retries them. A dead or slow receiver costs this thread time, never the loop's; a failure is logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import re
import threading
import time
from collections.abc import Mapping, Sequence

import httpx
import structlog

from conveyor.config.models import ChannelSettings, NotificationSettings
from conveyor.notify.channels import post, request_of
from conveyor.notify.events import Event

log = structlog.get_logger("conveyor.notify")
_STOP = object()
BACKOFF_S = 0.5          # first retry after this, doubling
SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of variables named like secrets (8+ characters): blanked out of any text we send."""
    return sorted({value for name, value in env.items() if SECRET_NAME.search(name) and len(value) >= 8},
                  key=len, reverse=True)


class Notifications:
    """Queue events with `emit` (never blocks); a worker thread sends them to the configured channels."""

    def __init__(self, settings: NotificationSettings, repo: str, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.repo = repo
        self._env = dict(env)
        self._secrets = secret_values(env)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_max)
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._abandon = threading.Event()     # close() gave up waiting: drop the rest, send nothing more

    @property
    def enabled(self) -> bool:
        return bool(self.settings.channels)

    def emit(self, event: Event) -> None:
        """Queue an event for the channels that want it; a full queue drops it (counted, logged)."""
        if not self.enabled:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="conveyor-notify", daemon=True)
            self._thread.start()
        for secret in self._secrets:
            if secret in event.text or secret in event.title:
                event = dataclasses.replace(event, text=event.text.replace(secret, "***"),
                                            title=event.title.replace(secret, "***"))
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("notify.dropped", task_id=event.task_id, dropped=self.dropped,
                            why="the notification queue is full (a receiver is down or slow)")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within `timeout` seconds, then stop the thread (what is left is dropped)."""
        if self._thread is None:
            return
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            log.warning("notify.abandoned", dropped=self._queue.qsize(),
                        why=f"notifications still unsent after {timeout:.0f} s at stop")
        self._thread = None

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        with httpx.Client(timeout=self.settings.timeout_s, follow_redirects=False, trust_env=False) as client:
            while True:
                batch, stopping = self._collect()
                if self._abandon.is_set():
                    return
                if batch:
                    self._deliver(client, batch)
                if stopping:
                    return

    def _collect(self) -> tuple[list[Event], bool]:
        """The next batch: the first event, then whatever arrives within the batch window."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, Event)
        batch = [first]
        deadline = time.monotonic() + (0.0 if self._stop.is_set() else self.settings.batch_window_s)
        while True:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(left, 0.0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if item is _STOP:
                return batch, True
            assert isinstance(item, Event)
            batch.append(item)

    def _deliver(self, client: httpx.Client, batch: Sequence[Event]) -> None:
        for channel in self.settings.channels:
            wanted = [event for event in batch if event.kind in channel.events]
            if not wanted:
                continue
            groups = [wanted] if len(wanted) > self.settings.batch_max else [[event] for event in wanted]
            for group in groups:
                if self._abandon.is_set():
                    return
                self._send(client, channel, group)

    def _send(self, client: httpx.Client, channel: ChannelSettings, events: Sequence[Event]) -> None:
        request = request_of(channel, events, self.repo, self._env)
        for attempt in range(self.settings.retries + 1):
            try:
                post(client, channel, request)
            except httpx.HTTPError as exc:
                if attempt == self.settings.retries or self._abandon.is_set():
                    self.failed += 1
                    # the URL is not logged: a Slack webhook's URL is itself a secret
                    log.warning("notify.failed", channel=channel.name, kind=channel.kind, events=len(events),
                                task_id=events[0].task_id, error=type(exc).__name__, attempts=attempt + 1)
                    return
                time.sleep(BACKOFF_S * 2 ** attempt)
                continue
            self.sent += 1
            return
