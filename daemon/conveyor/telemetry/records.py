"""The records a telemetry store keeps, shared by its SQLite and PostgreSQL implementations."""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.core.errors import ConveyorError
from conveyor.runner.types import Tokens

RUNNING = "running"
INTERRUPTED = "interrupted"
ROLES = ("author", "fixer", "reviewer")


class TelemetryError(ConveyorError):
    """The telemetry database cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class InvocationStart:
    task_id: str
    agent: str
    tool: str
    model: str | None
    attempt: int
    started_at: float
    branch: str | None = None
    prompt: str | None = None
    routing: str | None = None       # JSON of the routing decision (our own words only, never CLI text)
    round: int = 0                   # 0 = the agent's run; n = its n-th resume after a failing verify
    role: str = "author"             # author | fixer | reviewer (see ROLES)


@dataclass(frozen=True)
class InvocationEnd:
    finished_at: float
    duration_s: float
    outcome: str
    exit_code: int | None = None
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float = 0.0
    cost_source: str | None = None
    session_id: str | None = None
    turns: int | None = None
    model: str | None = None
    tool: str | None = None
    error: str | None = None
    final_text: str | None = None


class TelemetryUnreachable(TelemetryError):
    """The fleet's telemetry database did not answer in time: the machine's trouble, not the task's (the
    pipeline puts the task back without spending an attempt)."""
