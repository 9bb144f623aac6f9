"""Can a route run right now? Its CLI is installed, logged in, not paused by a provider limit, and its
tool is not over a hard budget. The answer is a `Skip` in our own words, or None.

One check serves one dispatch pass: answers are remembered per tool, because a flood of queued tasks
mostly asks about the same two or three CLIs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from conveyor.config.models import ToolSettings
from conveyor.core.errors import ToolUnavailable
from conveyor.core.timeutil import utc_iso
from conveyor.runner.env import build_env
from conveyor.runner.invoke import resolve_binary
from conveyor.scheduling import budgets
from conveyor.scheduling.budgets import BudgetState
from conveyor.scheduling.router import Route, Skip
from conveyor.scheduling.tool_health import ToolHealth


def credentials_problem(tool_name: str, tool: ToolSettings, env: Mapping[str, str]) -> str | None:
    """None when the tool lists no credentials or one is present (a variable reaching the agent, or a
    file); else a sentence naming what was looked for (names only, never values)."""
    if not tool.credentials_env and not tool.credentials_files:
        return None
    agent_env = build_env(env, tool.env_allowlist, tool.env)
    if any(agent_env.get(name) for name in tool.credentials_env):
        return None
    home = agent_env.get("HOME") or env.get("HOME") or os.path.expanduser("~")
    for name in tool.credentials_files:
        path = Path(home + name[1:]) if name.startswith("~/") else Path(name)
        if path.exists():
            return None
    wanted = ", ".join([*tool.credentials_env, *tool.credentials_files])
    return f"not logged in: found none of {wanted}; log in with the {tool_name} CLI or set one of those"


class RouteCheck:
    """The availability of each route's tool, remembered for the life of this object."""

    def __init__(self, env: Mapping[str, str], health: ToolHealth | None = None,
                 budget_states: Sequence[BudgetState] = (), *, login_retry_at: float | None = None) -> None:
        """`login_retry_at`: when to look again for a missing login. A missing login is the set-up's fault,
        not the task's: with it the task waits (saying which login is missing) instead of failing."""
        self._env = env
        self._login_retry_at = login_retry_at
        self._health = health
        self._budget_states = budget_states
        self._memo: dict[str, tuple[str, float | None] | None] = {}

    def __call__(self, route: Route) -> Skip | None:
        if route.tool_name not in self._memo:
            self._memo[route.tool_name] = self._problem(route)
        problem = self._memo[route.tool_name]
        return None if problem is None else Skip(route.tool_name, route.model, problem[0], problem[1])

    def _problem(self, route: Route) -> tuple[str, float | None] | None:
        try:
            resolve_binary(route.tool_name, route.tool, self._env)
        except ToolUnavailable:
            return (f"not installed: '{route.tool.binary}' was not found on the agents' PATH; install it or set "
                    f"tools.{route.tool_name}.binary to its absolute path in config/tools.yaml"), None
        missing = credentials_problem(route.tool_name, route.tool, self._env)
        if missing:
            return missing, self._login_retry_at
        if self._health is not None:
            pause = self._health.pause(route.tool_name)
            if pause is not None and self._health.paused_until(route.tool_name) is not None:
                return f"paused until {utc_iso(pause.until)} after {pause.reason}", pause.until
        spent = budgets.tool_block(self._budget_states, route.tool_name)
        if spent is not None:
            return f"over budget: {spent.describe()}", spent.resets_at
        return None
