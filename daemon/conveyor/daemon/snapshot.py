"""The daemon's status snapshot: `status.json` for `conveyor status` (another process) and systemd's STATUS=.

A typed record (`StatusSnapshot`) is what the daemon writes and what `conveyor status` reads back, so the
two cannot disagree on a key.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.core import yamlio
from conveyor.core.logs import get_logger
from conveyor.core.state_files import STATUS_FILE
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.service.notify import Notifier, status_line

if TYPE_CHECKING:   # `conveyor status` reads snapshots: importing the queue would import the whole pipeline
    from conveyor.daemon.ready_queue import ReadyQueue
    from conveyor.scheduling.queue import Waiting
    from conveyor.scheduling.tool_health import ToolHealth

log = get_logger("conveyor.daemon")
STATUS_INTERVAL_S = 0.5      # the status snapshot is rewritten at most this often while busy
STATUS_QUEUED_LIMIT = 200    # queued tasks listed in the snapshot (the count covers all)


@dataclass(frozen=True)
class StatusSnapshot:
    """What only the running daemon knows, as `status.json` holds it."""

    pid: int
    stopped: bool
    updated_at: str
    started_at: str
    running: list[dict[str, str]] = field(default_factory=list)
    queued: list[dict[str, str | None]] = field(default_factory=list)
    queued_count: int = 0
    waiting: list[dict[str, str]] = field(default_factory=list)
    paused_tools: dict[str, str] = field(default_factory=dict)
    pauses: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, str]] = field(default_factory=list)
    draining: bool = False
    drain_until: str | None = None      # while draining: when the running agents are stopped if still running

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> StatusSnapshot | None:
        """The snapshot on disk, or None when there is none or it cannot be read (a daemon mid-write)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        known = {name for name in cls.__dataclass_fields__}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError:
            return None


class SnapshotWriter:
    """Writes the snapshot at most every STATUS_INTERVAL_S while busy and tells systemd when its line changes."""

    def __init__(self, state_dir: Path, notifier: Notifier, health: ToolHealth, clock: Clock,
                 started_at: float) -> None:
        self._path = state_dir / STATUS_FILE
        self._notifier = notifier
        self._health = health
        self._clock = clock
        self._started_at = started_at
        self._last_line = ""
        self._written = -STATUS_INTERVAL_S

    def paused(self) -> dict[str, float]:
        """Tool → resume time of the tools paused now by a provider limit."""
        return {pause.tool: pause.until for pause in self._health.active()}

    def line(self, running: int, queued: int) -> str:
        now = self._clock()
        paused = sum(1 for until in self.paused().values() if until > now)
        return status_line(running=running, queued=queued, paused=paused)

    def notify(self, running: int, queued: int) -> None:
        """STATUS= for `systemctl status`, sent only when it changes."""
        line = self.line(running, queued)
        if line != self._last_line:
            self._last_line = line
            self._notifier.status(line)

    def write(self, running: Mapping[str, tuple[str, float]], ready: ReadyQueue, waiting: Sequence[Waiting],
              *, stopped: bool = False, draining: bool = False, drain_until: float | None = None,
              pid: Callable[[], int] = os.getpid) -> None:
        """`running` is task id → (agent, start time). The queued list is cut at STATUS_QUEUED_LIMIT entries,
        with the full count beside it (serialising a thousand queued tasks per pass was a real share of the
        daemon's time in a flood)."""
        now = self._clock()
        moment = time.monotonic()
        if not stopped and not draining and moment - self._written < STATUS_INTERVAL_S:
            return
        self._written = moment
        paused = self.paused()
        snapshot = StatusSnapshot(
            pid=pid(), stopped=stopped, draining=draining, updated_at=utc_iso(now),
            drain_until=utc_iso(drain_until) if draining and drain_until is not None else None,
            started_at=utc_iso(self._started_at),
            running=[{"id": task_id, "agent": agent, "started_at": utc_iso(started)}
                     for task_id, (agent, started) in running.items()],
            queued=[{"id": r.task.id, "agent": r.task.agent,
                     "not_before": utc_iso(r.not_before) if r.not_before > now else None}
                    for r in ready.first(STATUS_QUEUED_LIMIT)],
            queued_count=len(ready),
            waiting=[{"id": w.task.id, "reason": w.reason} for w in waiting],
            paused_tools={tool: utc_iso(until) for tool, until in paused.items() if until > now},
            pauses=[pause.as_status() for pause in self._health.active()],
            held=[{"id": task_id, "reason": reason} for task_id, reason in ready.held.items()],
        )
        try:
            yamlio.atomic_write(self._path, snapshot.to_json(), durable=False)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))
