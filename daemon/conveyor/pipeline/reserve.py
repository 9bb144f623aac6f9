"""Reserve a task's spend with the fleet before its run starts (coordination.spend says why).

The estimate is the most the run may cost when the task or its agent sets `max_cost_usd` (a cap the CLI
is given), else policies.yaml `run_estimate_usd`. The caps are the hard budgets that cover the task: the
global one, its agent's, and its chosen tool's. A single host reserves nothing (`NoReservations`).
"""

from __future__ import annotations

from conveyor.config import Config
from conveyor.coordination.spend import Cap, Refusal, SpendLedger
from conveyor.core.task import Task
from conveyor.scheduling.budgets import TOOL_SCOPE, window_of
from conveyor.scheduling.router import agent_settings


def estimate(task: Task, config: Config) -> float:
    """What the run is assumed to cost until it ends (then its real cost counts instead)."""
    capped = task.get_number("max_cost_usd") or agent_settings(task, config).max_cost_usd
    return float(capped) if capped else config.policies.run_estimate_usd


def caps(task: Task, tool: str | None, config: Config, now: float) -> list[Cap]:
    """Every hard budget covering a run of `task` by `tool`, with its current window."""
    found = []
    for budget in config.policies.budgets:
        if budget.limit != "hard":
            continue
        scope = budget.scope
        if scope == "global":
            agent, scoped_tool, label = None, None, "global"
        elif scope.startswith(TOOL_SCOPE):
            if scope.removeprefix(TOOL_SCOPE) != tool:
                continue
            agent, scoped_tool, label = None, tool, f"tool {tool}"
        elif scope == task.agent:
            agent, scoped_tool, label = scope, None, f"agent {scope}"
        else:
            continue
        since, until = window_of(budget.period, now)
        found.append(Cap(f"{label} {budget.period} budget", since, until, agent, scoped_tool, budget.usd))
    return found


def reserve(ledger: SpendLedger, task: Task, tool: str | None, config: Config, now: float) -> Refusal | None:
    """Admit the run (None, its estimate reserved) or say why it waits and until when."""
    return ledger.reserve(task.id, agent=task.agent, tool=tool, usd=estimate(task, config),
                          caps=caps(task, tool, config, now), now=now)
