"""Every periodic job of the daemon, in one place, decided by the injected clock and run on the loop's thread.

APScheduler is only the wall-clock timer that wakes a sleeping loop when a job's period has passed; whether a
job runs is decided here, by `clock()`. So tests advance their clock and wake the loop (or call `run_due`)
instead of setting flags, and every job sees the daemon's state from the one thread that owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from conveyor.core.errors import ConveyorError
from conveyor.core.timeutil import Clock

log = structlog.get_logger("conveyor.daemon")


@dataclass
class _Job:
    name: str
    every_s: float
    action: Callable[[], object]
    due_at: float


class Periodic:
    """Named jobs with a period; `run_due` runs those whose time has come (a failure is logged, never raised)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._timer: Any = None

    def every(self, name: str, seconds: float, action: Callable[[], object], *, at_start: bool = False) -> None:
        """Run `action` every `seconds`; with `at_start` also on the first pass."""
        now = self._clock()
        self._jobs[name] = _Job(name, seconds, action, now if at_start else now + seconds)

    def soon(self, name: str, seconds: float) -> None:
        """Run a job again `seconds` from now rather than a full period later (a sliced job with work left)."""
        job = self._jobs.get(name)
        if job is not None:
            job.due_at = min(job.due_at, self._clock() + seconds)

    def run_due(self) -> list[str]:
        now = self._clock()
        ran = []
        for job in list(self._jobs.values()):
            if job.due_at > now:
                continue
            job.due_at = now + job.every_s
            ran.append(job.name)
            try:
                job.action()
            except (ConveyorError, OSError) as exc:
                log.error("periodic.failed", job=job.name, error=str(exc))
            except Exception:  # a job must never take the loop down; the traceback goes to the log
                log.exception("periodic.internal_error", job=job.name)
        return ran

    def next_in(self) -> float | None:
        """Seconds until the next job is due (for the loop's sleep), or None without jobs."""
        if not self._jobs:
            return None
        return max(min(job.due_at for job in self._jobs.values()) - self._clock(), 0.0)

    def start_timer(self, wake: Callable[[], None]) -> None:
        """Wake the loop on each job's period in real time (a loop asleep on an event sees no clock)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
        for job in self._jobs.values():
            scheduler.add_job(wake, "interval", seconds=job.every_s, id=job.name)
        scheduler.start()
        self._timer = scheduler

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.shutdown(wait=False)
            self._timer = None
