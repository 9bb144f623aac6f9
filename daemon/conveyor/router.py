"""Which tool and model run a task: the task's pins, the agent's entry, its tier models and fallbacks."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.config import Config
from conveyor.config.models import AgentSettings, ToolSettings
from conveyor.errors import ConveyorError
from conveyor.task import Task


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


def routes_for(task: Task, config: Config, tier: str | None = None) -> list[Route]:
    """The chosen route first, then the agent's fallbacks, in order; unknown tools are skipped."""
    settings = agent_settings(task, config)
    pinned_tool, pinned_model = task.get_str("tool"), task.get_str("model")
    tier = tier or tier_for(task, config)
    first_tool = pinned_tool or settings.tool
    first_model: str | None
    if pinned_model:
        first_model, why = pinned_model, "model pinned by the task"
    elif tier and tier in settings.models and not pinned_tool:
        first_model, why = settings.models[tier], f"{tier} tier for complexity {task.complexity or 'estimate'}"
    else:
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
        chosen = wanted
        if wanted is not None and wanted in config.models:
            owner = config.models[wanted].tool
            if owner is not None and owner != tool_name:
                chosen = None  # a tier model of another CLI: let this CLI use its own default
        routes.append(Route(tool_name, tool_settings, chosen, reason))
    if not routes:
        raise NoRoute(f"task pins tool '{first_tool}', which tools.yaml does not define")
    return routes
