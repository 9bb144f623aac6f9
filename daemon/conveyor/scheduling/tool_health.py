"""Which agent CLIs are paused by a provider limit, until when, and why; kept across restarts.

A rate or usage limit pauses the tool until the reset time the CLI named; without one (and for overload
or expired auth) the pause grows by exponential backoff with jitter over consecutive limits of that tool,
and a successful run resets the count. Pauses end by themselves when their time comes. The state is a
small JSON file in the state directory, written atomically on every change, so a restarted daemon (and
`conveyor status` while no daemon runs) knows what is paused.

In a fleet the pauses are also shared (`PauseBoard`, kept in PostgreSQL by `coordination.shared_pauses`):
a limit one node hits is published, and every node reads the fleet's pauses at most every `refresh_s`,
so a 429 seen on one machine pauses that tool on all of them until the reset it named.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.core import yamlio
from conveyor.core.logs import get_logger
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.runner.types import Outcome

if TYPE_CHECKING:   # `conveyor status` reads the pauses without importing pydantic
    from conveyor.config.models import Backoff

log = get_logger("conveyor.scheduling.tool_health")
PAUSES_FILE = "tool_pauses.json"
MIN_PAUSE_S = 1.0          # a reset time already past still pauses this long (clock skew, a racing limit)


@dataclass(frozen=True)
class Pause:
    """One tool's pause: until when, the limit that caused it, and how many limits in a row it has hit."""

    tool: str
    until: float
    outcome: str
    reason: str
    failures: int
    since: float

    def as_status(self) -> dict[str, Any]:
        return {"tool": self.tool, "until": utc_iso(self.until), "outcome": self.outcome, "reason": self.reason,
                "failures": self.failures, "since": utc_iso(self.since)}


class PauseBoard(Protocol):
    """Where a fleet's nodes share their pauses (rows are `Pause` fields as plain values)."""

    def publish(self, pause: dict[str, Any]) -> None: ...

    def clear(self, tool: str) -> None: ...

    def fetch(self, now: float) -> list[dict[str, Any]] | None: ...


def backoff_delay(failures: int, backoff: Backoff, rng: random.Random) -> float:
    """initial × 2^(failures-1), capped at max, then spread by ± jitter so paused tools do not stampede."""
    base = min(backoff.initial_s * 2.0 ** max(failures - 1, 0), backoff.max_s)
    spread = 1.0 + backoff.jitter * (2.0 * rng.random() - 1.0)
    return max(min(base * spread, backoff.max_s), MIN_PAUSE_S)


class ToolHealth:
    """Thread-safe pause state of every tool (pipeline workers record limits, the daemon reads)."""

    def __init__(self, path: Path, backoff: Callable[[], Backoff], clock: Clock,
                 rng: random.Random | None = None, *, shared: PauseBoard | None = None,
                 refresh_s: float = 1.0) -> None:
        self.path = path
        self._shared = shared
        self._refresh_s = refresh_s
        self._fetched_at = float("-inf")
        self._seen_shared: set[str] = set()   # tools whose pause the fleet knew: gone there = cleared there
        self._backoff = backoff
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._pauses: dict[str, Pause] = {}
        self._failures: dict[str, int] = {}
        self._load()

    def paused_until(self, tool: str) -> float | None:
        """The tool's resume time if it is paused now, else None (an expired pause is dropped and logged)."""
        self._sync()
        with self._lock:
            pause = self._pauses.get(tool)
            if pause is None:
                return None
            if pause.until > self._clock():
                return pause.until
            del self._pauses[tool]
            self._save()
        log.info("tool.resumed", tool=tool, after=pause.outcome)
        return None

    def pause(self, tool: str) -> Pause | None:
        self._sync()
        with self._lock:
            pause = self._pauses.get(tool)
        return pause if pause is not None and pause.until > self._clock() else None

    def active(self) -> list[Pause]:
        self._sync()
        now = self._clock()
        with self._lock:
            return sorted((p for p in self._pauses.values() if p.until > now), key=lambda p: p.tool)

    def record_limit(self, tool: str, outcome: Outcome, reset_at: float | None,
                     status: int | None = None) -> Pause:
        """Pause `tool` after a provider limit; returns the pause (its `until` is when to try again)."""
        now = self._clock()
        with self._lock:
            failures = self._failures.get(tool, 0) + 1
            self._failures[tool] = failures
            if reset_at is not None and outcome is not Outcome.AUTH_EXPIRED:
                until, how = max(reset_at, now + MIN_PAUSE_S), "until the reset time the CLI named"
            else:
                until, how = now + backoff_delay(failures, self._backoff(), self._rng), f"backoff #{failures}"
            reason = f"{outcome.value}" + (f" (HTTP {status})" if status else "") + f", {how}"
            previous = self._pauses.get(tool)
            if previous is not None and previous.until > until:
                until = previous.until
            pause = Pause(tool, until, outcome.value, reason, failures, now)
            self._pauses[tool] = pause
            self._save()
        if self._shared is not None:
            self._shared.publish(asdict(pause))
        self._announce(pause)
        return pause

    def record_success(self, tool: str, started_at: float | None = None) -> None:
        """A run that reached the provider: any pause is over and the next limit starts the backoff anew.
        In a fleet, a run that started before another node's pause proves nothing about the limit: such a
        pause stays (`started_at`, when the run began)."""
        with self._lock:
            pause = self._pauses.get(tool)
            if (self._shared is not None and pause is not None and started_at is not None
                    and pause.since > started_at):
                return
            dropped = self._pauses.pop(tool, None) is not None
            if self._failures.pop(tool, None) is not None or dropped:
                self._save()
        if dropped and self._shared is not None:
            self._shared.clear(tool)

    @property
    def shared(self) -> bool:
        """Whether the pauses are the fleet's (True) or this node's own."""
        return self._shared is not None

    def fresh_pause(self, tool: str) -> Pause | None:
        """The tool's pause as the fleet knows it this moment (asked right before an agent starts)."""
        self._fetched_at = float("-inf")
        return self.pause(tool)

    def _sync(self) -> None:
        """Take in the fleet's pauses (at most every refresh_s); a database that does not answer leaves this
        node's own view as it was."""
        if self._shared is None:
            return
        now = self._clock()
        if 0 <= now - self._fetched_at < self._refresh_s:
            return
        self._fetched_at = now
        rows = self._shared.fetch(now)
        if rows is None:
            return
        fleet: dict[str, Pause] = {}
        for row in rows:
            try:
                fleet[str(row["tool"])] = Pause(**row)
            except TypeError:
                continue
        unshared: list[Pause] = []
        with self._lock:
            learned = [p for tool, p in fleet.items() if self._pauses.get(tool) != p]
            for tool, pause in list(self._pauses.items()):
                if tool not in fleet and tool in self._seen_shared:   # cleared, or run out, on the fleet
                    del self._pauses[tool]
                elif tool not in fleet and pause.until > now:         # never reached the fleet: share it now
                    unshared.append(pause)
            self._pauses.update(fleet)
            self._seen_shared = set(fleet)
            if learned:
                self._save()
        for pause in unshared:
            self._shared.publish(asdict(pause))
        for pause in learned:
            log.info("tool.paused_by_fleet", tool=pause.tool, until=utc_iso(pause.until), reason=pause.reason)

    def _announce(self, pause: Pause) -> None:
        if pause.outcome == Outcome.AUTH_EXPIRED.value:
            log.error("tool.auth_expired", tool=pause.tool, until=utc_iso(pause.until),
                      action=f"log in to the '{pause.tool}' CLI again (or renew its API key); it is paused "
                             "and will be tried again at the time shown")
        else:
            log.warning("tool.paused", tool=pause.tool, outcome=pause.outcome, until=utc_iso(pause.until),
                        reason=pause.reason)

    # ---------------------------------------------------------------- persistence
    def _load(self) -> None:
        document = _read(self.path)
        self._failures = {str(k): int(v) for k, v in (document.get("failures") or {}).items()}
        self._pauses.update((pause.tool, pause) for pause in _pauses_in(document))

    def _save(self) -> None:
        document = {"pauses": [asdict(p) for p in self._pauses.values()], "failures": self._failures}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            yamlio.atomic_write(self.path, json.dumps(document, indent=1), durable=False)
        except OSError as exc:
            log.warning("tool_health.save_failed", path=str(self.path), error=exc.strerror)


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def read_pauses(path: Path, now: float) -> list[dict[str, Any]]:
    """The pauses still in force according to the persisted file (for `conveyor status` with no daemon)."""
    found = [pause.as_status() for pause in _pauses_in(_read(path)) if pause.until > now]
    return sorted(found, key=lambda item: str(item["tool"]))


def _pauses_in(document: dict[str, Any]) -> list[Pause]:
    """The well-formed pauses of the persisted file; an entry that is not one is skipped."""
    pauses = []
    for entry in document.get("pauses") or []:
        with contextlib.suppress(TypeError):
            pauses.append(Pause(**entry))
    return pauses
