"""Per-tool pacing: how many runs of one agent CLI at once, and how many starts per minute.

The daemon asks before it dispatches (`try_start`), pipeline workers ask before a fallback, and each run
gives its slot back (`finish`) when its invocation ends; one lock makes the count exact under a flood.
`starts_per_minute: r` allows at most max(1, ⌊r⌋) starts in any window of 60 × max(1, ⌊r⌋) / r seconds
(r = 6 → 6 per minute; r = 0.5 → one per two minutes).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping

from conveyor.config.models import ToolLimits
from conveyor.core.timeutil import Clock, utc_iso


def rate_window(rate: float) -> tuple[int, float]:
    """(starts allowed, window in seconds) for `rate` starts per minute."""
    allowed = max(1, math.floor(rate))
    return allowed, 60.0 * allowed / rate


class ToolGate:
    """Counts running invocations and recent starts per tool against `policies.tools`."""

    def __init__(self, limits: Callable[[], Mapping[str, ToolLimits]], clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._starts: dict[str, deque[float]] = {}

    def try_start(self, tool: str) -> str | None:
        """Take a slot for one run of `tool`: None when taken, else why not (the caller waits)."""
        limits = self._limits().get(tool)
        now = self._clock()
        with self._lock:
            running = self._running.get(tool, 0)
            if limits is not None and limits.max_parallel is not None and running >= limits.max_parallel:
                return f"{tool} is at its limit of {limits.max_parallel} runs at once"
            opening = self._opening(tool, limits, now)
            if opening is not None:
                return f"{tool} may start again at {utc_iso(opening)} (starts_per_minute)"
            self._running[tool] = running + 1
            self._starts.setdefault(tool, deque()).append(now)
        return None

    def finish(self, tool: str) -> None:
        with self._lock:
            self._running[tool] = max(self._running.get(tool, 0) - 1, 0)

    def next_opening(self, tool: str) -> float | None:
        """When the start rate next allows `tool` to start (None: now, or not rate-limited)."""
        with self._lock:
            return self._opening(tool, self._limits().get(tool), self._clock())

    def running(self) -> dict[str, int]:
        with self._lock:
            return {tool: count for tool, count in self._running.items() if count}

    def _opening(self, tool: str, limits: ToolLimits | None, now: float) -> float | None:
        if limits is None or limits.starts_per_minute is None:
            return None
        allowed, window = rate_window(limits.starts_per_minute)
        starts = self._starts.setdefault(tool, deque())
        while starts and starts[0] <= now - window:
            starts.popleft()
        if len(starts) < allowed:
            return None
        return starts[0] + window
