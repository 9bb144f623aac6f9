"""Which agent CLIs are paused by a provider limit, until when, and why; kept across restarts.

A rate or usage limit pauses the tool until the reset time the CLI named; without one (and for overload
or expired auth) the pause grows by exponential backoff with jitter over consecutive limits of that tool,
and a successful run resets the count. Pauses end by themselves when their time comes. The state is a
small JSON file in the state directory, written atomically on every change, so a restarted daemon (and
`conveyor status` while no daemon runs) knows what is paused.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def backoff_delay(failures: int, backoff: Backoff, rng: random.Random) -> float:
    """initial × 2^(failures-1), capped at max, then spread by ± jitter so paused tools do not stampede."""
    base = min(backoff.initial_s * 2.0 ** max(failures - 1, 0), backoff.max_s)
    spread = 1.0 + backoff.jitter * (2.0 * rng.random() - 1.0)
    return max(min(base * spread, backoff.max_s), MIN_PAUSE_S)


class ToolHealth:
    """Thread-safe pause state of every tool (pipeline workers record limits, the daemon reads)."""

    def __init__(self, path: Path, backoff: Callable[[], Backoff], clock: Clock,
                 rng: random.Random | None = None) -> None:
        self.path = path
        self._backoff = backoff
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._pauses: dict[str, Pause] = {}
        self._failures: dict[str, int] = {}
        self._load()

    def paused_until(self, tool: str) -> float | None:
        """The tool's resume time if it is paused now, else None (an expired pause is dropped and logged)."""
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
        with self._lock:
            pause = self._pauses.get(tool)
        return pause if pause is not None and pause.until > self._clock() else None

    def active(self) -> list[Pause]:
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
        self._announce(pause)
        return pause

    def record_success(self, tool: str) -> None:
        """A run that reached the provider: any pause is over and the next limit starts the backoff anew."""
        with self._lock:
            dropped = self._pauses.pop(tool, None) is not None
            if self._failures.pop(tool, None) is not None or dropped:
                self._save()

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
