"""Spend reserved before a run starts, so that several nodes together never pass a hard budget.

Each node checks budgets against spend it can see; without reservations two nodes that both see $0.90 of a
$1.00 budget would both start a run. A `SpendLedger` admits a run only when what is spent, plus what runs
elsewhere have reserved, plus this run's estimate stays within every hard budget that covers it, and it
does so in one transaction for the whole fleet. Single host: nothing to share (`NoReservations`), the
daemon's dispatch check against its own telemetry is what it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Cap:
    """One hard budget that covers a run: [since, until) its window, agent/tool its scope (None: any)."""

    label: str
    since: float
    until: float
    agent: str | None
    tool: str | None
    usd: float


@dataclass(frozen=True)
class Refusal:
    """Why a run may not start yet, and when to ask again."""

    reason: str
    retry_at: float


class SpendLedger(Protocol):
    def reserve(self, task_id: str, *, agent: str, tool: str | None, usd: float, caps: list[Cap],
                now: float) -> Refusal | None: ...

    def release(self, task_id: str) -> None: ...

    def spend(self, since: float, until: float | None = None, agent: str | None = None,
              tool: str | None = None) -> float: ...


class NoReservations:
    """The single host's ledger: every run is admitted here (dispatch already checked the budgets)."""

    def reserve(self, task_id: str, *, agent: str, tool: str | None, usd: float, caps: list[Cap],
                now: float) -> Refusal | None:
        return None

    def release(self, task_id: str) -> None:
        return None

    def spend(self, since: float, until: float | None = None, agent: str | None = None,
              tool: str | None = None) -> float:
        raise NotImplementedError("a single host reads spend from its own telemetry")
