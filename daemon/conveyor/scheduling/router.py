"""Which tool and model run a task: the task's pins, the agent's entry, its tier models and fallbacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.config import Config
from conveyor.config.models import AgentSettings, ToolSettings
from conveyor.core.errors import ConveyorError
from conveyor.core.task import Task

# Complexity estimate for a task that gives none: the size of what the agent must read (title, description,
# context and notes, in characters) and the number of artefacts it names. Small and focused → low; long or
# sprawling → high; anything between → medium.
LOW_MAX_CHARS = 1500
LOW_MAX_ARTEFACTS = 2
HIGH_MIN_CHARS = 6000
HIGH_MIN_ARTEFACTS = 8


class NoRoute(ConveyorError):
    """No agent entry serves this task's agent name (and there is no `default` entry)."""


@dataclass(frozen=True)
class Route:
    """One way to run a task: a tool, a model (None = the tool's default) and why it was chosen."""

    tool_name: str
    tool: ToolSettings
    model: str | None
    why: str


def agent_settings(task: Task, config: Config) -> AgentSettings:
    settings = config.agent(task.agent)
    if settings is None:
        raise NoRoute(f"no entry in agents.yaml serves agent '{task.agent}'; add one, or a `default` entry")
    return settings


def tier_for(task: Task, config: Config) -> str | None:
    """The model tier of a task from its `complexity`, or None when it gives none."""
    complexity = task.complexity
    for name, tier in config.policies.complexity_tiers.items():
        if name == complexity:
            return tier
    return None


def _fits(model: str, tool: str, config: Config) -> bool:
    """Whether `tool` can run `model`: models.yaml ties it to no tool, or to this one."""
    owner = config.models[model].tool if model in config.models else None
    return owner is None or owner == tool


def routes_for(task: Task, config: Config, tier: str | None = None) -> list[Route]:
    """The chosen route first, then the agent's fallbacks, in order; unknown tools are skipped."""
    settings = agent_settings(task, config)
    pinned_tool, pinned_model = task.get_str("tool"), task.get_str("model")
    tier = tier or tier_for(task, config)
    first_tool = pinned_tool or settings.tool
    first_model: str | None
    if pinned_model:
        first_model, why = pinned_model, "model pinned by the task"
    elif tier and tier in settings.models and not pinned_tool and _fits(settings.models[tier], first_tool, config):
        first_model, why = settings.models[tier], f"{tier} tier for complexity {task.complexity or 'estimate'}"
    else:   # no tier model, or the tier's model belongs to another CLI: the agent's own model
        first_model, why = settings.model, "agent default"
    entries: list[tuple[str, str | None, str]] = [(first_tool, first_model, why)]
    if not pinned_tool:
        for entry in settings.fallback:
            fallback_tool, _, fallback_model = entry.partition(":")
            entries.append((fallback_tool, fallback_model or None, f"fallback {entry}"))
    routes = []
    for tool_name, wanted, reason in entries:
        tool_settings = config.tools.get(tool_name)
        if tool_settings is None:
            continue
        # a model of another CLI (a tier model, say): let this CLI use its own default
        chosen = wanted if wanted is None or _fits(wanted, tool_name, config) else None
        routes.append(Route(tool_name, tool_settings, chosen, reason))
    if not routes:
        raise NoRoute(f"task pins tool '{first_tool}', which tools.yaml does not define")
    return routes


def task_text_size(task: Task) -> int:
    """Characters of the task's own words (title, description, context, notes): the prompt minus our rules."""
    size = len(task.title)
    for value in (task.data.get("description"), task.data.get("context"), task.data.get("notes")):
        if value:
            size += len(value) if isinstance(value, str) else len(json.dumps(value, default=str))
    return size


def estimate_complexity(task: Task) -> str:
    """low | medium | high from the task's size and artefact count (thresholds above)."""
    size, artefacts = task_text_size(task), len(task.artefacts)
    if size >= HIGH_MIN_CHARS or artefacts >= HIGH_MIN_ARTEFACTS:
        return "high"
    if size <= LOW_MAX_CHARS and artefacts <= LOW_MAX_ARTEFACTS:
        return "low"
    return "medium"


def complexity_of(task: Task, config: Config) -> tuple[str, str]:
    """(complexity, source): the task's own `complexity` when policies know it, else the estimate."""
    given = task.complexity
    if given and given in config.policies.complexity_tiers:
        return given, "task"
    return estimate_complexity(task), "estimate"


@dataclass(frozen=True)
class Skip:
    """A route not taken and why, in our own words (never the CLI's text: it may quote the prompt)."""

    tool: str
    model: str | None
    reason: str
    retry_at: float | None = None     # when the obstacle lifts by itself (pause, budget window); None: never

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "model": self.model, "reason": self.reason}


Check = Callable[[Route], Skip | None]
"""Whether a route can run now: None if so, else the Skip that says why not."""


@dataclass
class Routing:
    """The candidate routes of a task, the one chosen, and every one skipped on the way."""

    routes: list[Route]
    complexity: str
    complexity_source: str
    tier: str | None
    chosen: int | None = None
    skipped: list[Skip] = field(default_factory=list)

    @property
    def route(self) -> Route | None:
        return None if self.chosen is None else self.routes[self.chosen]

    def advance(self, check: Check, start: int = 0) -> Route | None:
        """Choose the first route from `start` that passes `check`; the others are recorded as skipped."""
        for index in range(start, len(self.routes)):
            skip = check(self.routes[index])
            if skip is None:
                self.chosen = index
                return self.routes[index]
            self.skipped.append(skip)
        self.chosen = None
        return None

    def advance_past(self, check: Check) -> Route | None:
        """Move on to the next usable route after the chosen one."""
        return None if self.chosen is None else self.advance(check, self.chosen + 1)

    def skip_current(self, reason: str, retry_at: float | None = None) -> None:
        """The chosen route failed to run (a provider limit, say): record it as skipped."""
        route = self.route
        if route is not None:
            self.skipped.append(Skip(route.tool_name, route.model, reason, retry_at))

    def retry_at(self) -> float | None:
        """With no route left: the earliest moment a skipped route may work again, or None if none will."""
        moments = [skip.retry_at for skip in self.skipped if skip.retry_at is not None]
        return min(moments) if moments else None

    def record(self) -> dict[str, Any]:
        """What the task's `result.routing` and the telemetry row say about the decision."""
        route = self.route
        return {
            "chosen": None if route is None else f"{route.tool_name}:{route.model or 'default'}",
            "why": None if route is None else route.why,
            "complexity": f"{self.complexity} ({'from the task' if self.complexity_source == 'task' else 'estimated'})",
            "tier": self.tier,
            "skipped": [skip.as_dict() for skip in self.skipped],
        }


def plan_routes(task: Task, config: Config, check: Check) -> Routing:
    """Candidate routes for the task's (given or estimated) complexity, with the first usable one chosen."""
    complexity, source = complexity_of(task, config)
    tier = config.policies.complexity_tiers.get(complexity)  # type: ignore[call-overload]
    routing = Routing(routes_for(task, config, tier=tier), complexity, source, tier)
    routing.advance(check)
    return routing
