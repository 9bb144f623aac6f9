"""Routing: the task's pins, the agent's entry (or `default`), tier models from complexity, then fallbacks."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from conveyor.config import Config, load_config
from conveyor.core.task import Task
from conveyor.scheduling.router import NoRoute, agent_settings, routes_for, tier_for

AGENTS = """\
agents:
  default:
    tool: claude-code
    fallback: [codex]
    models: {economy: haiku, standard: sonnet, premium: opus}
  backend-dev:
    tool: codex
    model: gpt-5
    fallback: ["claude-code:sonnet", codex]
  pinned:
    tool: claude-code
    model: opus
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "config" / "agents.yaml").write_text(AGENTS)
    return load_config(repo, repo / ".git")


def task(agent: str = "someone", **extra: Any) -> Task:
    return Task(path=Path("/x.yaml"), data={"id": "t", "agent": agent, **extra})


def routes(config: Config, the_task: Task) -> list[tuple[str, str | None]]:
    return [(route.tool_name, route.model) for route in routes_for(the_task, config)]


def test_unknown_agent_names_use_the_default_entry(config: Config) -> None:
    assert agent_settings(task("curator-claire"), config).tool == "claude-code"
    assert routes(config, task("curator-claire")) == [("claude-code", None), ("codex", None)]


def test_an_agent_entry_wins_over_default(config: Config) -> None:
    assert routes(config, task("backend-dev")) == [("codex", "gpt-5"), ("claude-code", "sonnet"), ("codex", None)]
    first = routes_for(task("backend-dev"), config)[0]
    assert first.why == "agent default"
    assert first.tool is config.tools["codex"]


@pytest.mark.parametrize(("complexity", "tier", "model"), [("low", "economy", "haiku"),
                                                           ("MEDIUM", "standard", "sonnet"),
                                                           ("high", "premium", "opus")])
def test_complexity_picks_the_tier_model(config: Config, complexity: str, tier: str, model: str) -> None:
    the_task = task(complexity=complexity)
    assert tier_for(the_task, config) == tier
    first = routes_for(the_task, config)[0]
    assert (first.tool_name, first.model) == ("claude-code", model)
    assert tier in first.why


def test_a_tier_model_of_another_cli_is_not_passed_to_the_fallback(config: Config) -> None:
    # haiku belongs to claude-code in models.yaml; the codex fallback gets its own default instead.
    assert routes(config, task(complexity="low"))[1] == ("codex", None)


def test_no_complexity_means_no_tier(config: Config) -> None:
    assert tier_for(task(), config) is None
    assert tier_for(task(complexity="enormous"), config) is None


def test_an_explicit_tier_argument_overrides_complexity(config: Config) -> None:
    first = routes_for(task(complexity="low"), config, tier="premium")[0]
    assert first.model == "opus"


def test_the_task_can_pin_a_model(config: Config) -> None:
    first = routes_for(task("backend-dev", model="gpt-5-mini", complexity="high"), config)[0]
    assert (first.tool_name, first.model, first.why) == ("codex", "gpt-5-mini", "model pinned by the task")


def test_the_task_can_pin_a_tool_and_then_gets_no_fallbacks(config: Config) -> None:
    assert routes(config, task(tool="codex")) == [("codex", None)]
    assert routes(config, task(tool="codex", model="gpt-5")) == [("codex", "gpt-5")]


def test_pinning_a_tool_ignores_tier_models_of_another_cli(config: Config) -> None:
    assert routes(config, task(tool="codex", complexity="high")) == [("codex", None)]


def test_pinning_an_unknown_tool_names_it(config: Config) -> None:
    with pytest.raises(NoRoute, match=r"task pins tool 'nope', which tools\.yaml does not define"):
        routes_for(task(tool="nope"), config)


def test_agent_model_is_used_when_no_tier_applies(config: Config) -> None:
    assert routes(config, task("pinned"))[0] == ("claude-code", "opus")
