"""Spending limits from policies.yaml, measured against telemetry in UTC days and months.

A budget's scope is `global`, an agent name, or `tool:<name>`. When a `hard` budget is spent, nothing in
its scope starts: the daemon leaves the scope's tasks in inbox/ untouched (an agent or global budget)
or routes around the tool (a tool budget) until the window rolls over or a reload raises the limit. A
spent `soft` budget only warns, in the log and in the task's `result.budget_warning`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from conveyor.core.timeutil import Clock, utc_iso

if TYPE_CHECKING:   # `conveyor status` weighs budgets without importing pydantic
    from conveyor.config.models import Budget

SpendFn = Callable[[float, float, str | None, str | None], float]
"""(since, until, agent, tool) → USD spent by invocations started in [since, until)."""
TOOL_SCOPE = "tool:"
RECHECK_S = 5.0       # the daemon re-reads spend at most this often (and after every finished task)


class BudgetLike(Protocol):
    """What is weighed of a budget: policies.yaml's `Budget`, or the copy `conveyor status` remembers."""

    @property
    def scope(self) -> str: ...
    @property
    def period(self) -> str: ...
    @property
    def usd(self) -> float: ...
    @property
    def limit(self) -> str: ...


def window_of(period: str, now: float) -> tuple[float, float]:
    """[start, end) of the UTC day or month that contains `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
        return start.timestamp(), end.timestamp()
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class BudgetState:
    budget: BudgetLike
    spent: float
    start: float
    resets_at: float

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.budget.usd

    @property
    def scope_label(self) -> str:
        scope = self.budget.scope
        if scope == "global":
            return "global"
        if scope.startswith(TOOL_SCOPE):
            return f"tool {scope.removeprefix(TOOL_SCOPE)}"
        return f"agent {scope}"

    def describe(self) -> str:
        verb = "reached" if self.exceeded else "at"
        return (f"{self.scope_label} {self.budget.period} budget of ${self.budget.usd:.2f} {verb} "
                f"(${self.spent:.2f} spent, {self.budget.limit} limit); the window resets at "
                f"{utc_iso(self.resets_at)}")


def evaluate(budgets: Sequence[BudgetLike], spend: SpendFn, now: float) -> list[BudgetState]:
    states = []
    for budget in budgets:
        start, end = window_of(budget.period, now)
        scope = budget.scope
        agent = None if scope == "global" or scope.startswith(TOOL_SCOPE) else scope
        tool = scope.removeprefix(TOOL_SCOPE) if scope.startswith(TOOL_SCOPE) else None
        states.append(BudgetState(budget, spend(start, end, agent, tool), start, end))
    return states


def _hard_block(states: Sequence[BudgetState], scopes: set[str]) -> BudgetState | None:
    """The spent hard budget of one of `scopes` that lifts last, if any."""
    blocking = [s for s in states if s.budget.limit == "hard" and s.exceeded and s.budget.scope in scopes]
    return max(blocking, key=lambda s: s.resets_at) if blocking else None


def task_block(states: Sequence[BudgetState], agent: str) -> BudgetState | None:
    """The spent hard budget that keeps a task of `agent` from starting (global or the agent's own)."""
    return _hard_block(states, {"global", agent})


def tool_block(states: Sequence[BudgetState], tool: str) -> BudgetState | None:
    """The spent hard budget of `tool` (scope `tool:<name>`), if any."""
    return _hard_block(states, {TOOL_SCOPE + tool})


def soft_warnings(states: Sequence[BudgetState], agent: str, tool: str | None) -> list[BudgetState]:
    """Spent soft budgets that cover a task of `agent` run by `tool`."""
    scopes = {"global", agent, *([TOOL_SCOPE + tool] if tool else [])}
    return [s for s in states if s.budget.limit == "soft" and s.exceeded and s.budget.scope in scopes]


class BudgetGuard:
    """Budget states, re-read from telemetry at most every RECHECK_S seconds (thread-safe)."""

    def __init__(self, spend: SpendFn, clock: Clock, recheck_s: float = RECHECK_S) -> None:
        self._spend = spend
        self._clock = clock
        self._recheck_s = recheck_s
        self._lock = threading.Lock()
        self._cached: tuple[tuple[Budget, ...], float, list[BudgetState]] | None = None

    def states(self, budgets: Sequence[Budget], *, fresh: bool = False) -> list[BudgetState]:
        if not budgets:
            return []
        now = self._clock()
        key = tuple(budgets)
        with self._lock:
            cached = self._cached
            if (not fresh and cached is not None and cached[0] == key and 0 <= now - cached[1] < self._recheck_s
                    and all(now < state.resets_at for state in cached[2])):
                return cached[2]
        states = evaluate(budgets, self._spend, now)
        with self._lock:
            self._cached = (key, now, states)
        return states

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None
