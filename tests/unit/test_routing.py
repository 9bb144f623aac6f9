"""Routing decisions: complexity (given or estimated) → tier → model, pins, and every skipped route with why."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.config import Config, load_config
from conveyor.config.models import Backoff, Budget
from conveyor.core.task import Task
from conveyor.runner.types import Outcome
from conveyor.scheduling.availability import RouteCheck, credentials_problem
from conveyor.scheduling.budgets import BudgetState
from conveyor.scheduling.router import (
    HIGH_MIN_ARTEFACTS,
    HIGH_MIN_CHARS,
    LOW_MAX_ARTEFACTS,
    LOW_MAX_CHARS,
    Route,
    complexity_of,
    estimate_complexity,
    plan_routes,
)
from conveyor.scheduling.tool_health import ToolHealth

AGENTS = """\
agents:
  default:
    tool: locked
    fallback: [ghost, present]
    models: {economy: m-low, standard: m-mid, premium: m-high}
"""
MODELS = """\
models:
  m-low:  {tool: locked, tier: economy}
  m-mid:  {tool: locked, tier: standard}
  m-high: {tool: locked, tier: premium}
"""


def tools_yaml(binary: Path) -> str:
    return f"""\
tools:
  present:
    binary: {binary}
    argv: ["{{prompt}}"]
  locked:
    binary: {binary}
    argv: ["{{prompt}}"]
    env_allowlist: [PATH, HOME, "ROUTING_*"]
    credentials_env: [ROUTING_TEST_KEY, ROUTING_HIDDEN_KEY]
    credentials_files: ["~/.locked/credentials.json"]
  hidden:
    binary: {binary}
    argv: ["{{prompt}}"]
    credentials_env: [OTHER_SECRET]
  ghost:
    binary: conveyor-test-no-such-agent-cli
    argv: ["{{prompt}}"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    binary = tmp_path / "bin" / "agent"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    (repo / "config" / "agents.yaml").write_text(AGENTS)
    (repo / "config" / "models.yaml").write_text(MODELS)
    (repo / "config" / "tools.yaml").write_text(tools_yaml(binary))
    return load_config(repo, repo / ".git")


def task(**extra: Any) -> Task:
    return Task(path=Path("/x.yaml"), data={"id": "t", "agent": "dev", "title": "T", **extra})


def allow_all(route: Route) -> None:
    return None


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), **extra}


# ------------------------------------------------------------------ complexity
def test_small_focused_tasks_are_estimated_low_and_large_ones_high() -> None:
    assert estimate_complexity(task(description="x" * (LOW_MAX_CHARS - 10))) == "low"
    assert estimate_complexity(task(artefacts=[f"f{i}" for i in range(LOW_MAX_ARTEFACTS)])) == "low"
    assert estimate_complexity(task(description="x" * (LOW_MAX_CHARS + 10))) == "medium"
    assert estimate_complexity(task(artefacts=[f"f{i}" for i in range(LOW_MAX_ARTEFACTS + 1)])) == "medium"
    assert estimate_complexity(task(description="x" * HIGH_MIN_CHARS)) == "high"
    assert estimate_complexity(task(artefacts=[f"f{i}" for i in range(HIGH_MIN_ARTEFACTS)])) == "high"


def test_context_and_notes_count_towards_the_size() -> None:
    notes = {"notes": ["y" * (LOW_MAX_CHARS + 1)]}
    assert estimate_complexity(task(context=notes)) == "medium"
    assert estimate_complexity(task(notes="z" * HIGH_MIN_CHARS)) == "high"


def test_a_given_complexity_wins_over_the_estimate(config: Config) -> None:
    assert complexity_of(task(complexity="high"), config) == ("high", "task")
    assert complexity_of(task(complexity="enormous"), config) == ("low", "estimate")
    assert complexity_of(task(), config) == ("low", "estimate")


# ------------------------------------------------------------------ tier, pins
def test_the_estimated_tier_picks_the_agents_model(config: Config) -> None:
    routing = plan_routes(task(description="x" * (LOW_MAX_CHARS + 100)), config, allow_all)
    assert routing.route is not None
    assert (routing.route.tool_name, routing.route.model) == ("locked", "m-mid")
    record = routing.record()
    assert record["chosen"] == "locked:m-mid" and record["tier"] == "standard"
    assert record["complexity"] == "medium (estimated)" and record["skipped"] == []


def test_the_given_complexity_picks_the_tier(config: Config) -> None:
    routing = plan_routes(task(complexity="high"), config, allow_all)
    assert routing.route is not None and routing.route.model == "m-high"
    assert routing.record()["complexity"] == "high (from the task)"


def test_a_model_pin_wins_over_the_tier(config: Config) -> None:
    routing = plan_routes(task(complexity="high", model="pinned-model"), config, allow_all)
    assert routing.route is not None and routing.route.model == "pinned-model"
    assert routing.record()["why"] == "model pinned by the task"


def test_a_tool_pin_allows_only_that_tool(config: Config, tmp_path: Path) -> None:
    routing = plan_routes(task(tool="ghost"), config, RouteCheck(env(tmp_path)))
    assert routing.route is None and [s.tool for s in routing.skipped] == ["ghost"]
    assert routing.retry_at() is None          # a missing binary does not fix itself: no retry time


# ------------------------------------------------------------------ availability: what is skipped and why
def test_missing_and_logged_out_tools_are_skipped_with_reasons(config: Config, tmp_path: Path) -> None:
    routing = plan_routes(task(), config, RouteCheck(env(tmp_path)))
    assert routing.route is not None and routing.route.tool_name == "present"
    skipped = routing.record()["skipped"]
    assert [s["tool"] for s in skipped] == ["locked", "ghost"]
    assert skipped[0]["reason"].startswith("not logged in") and "ROUTING_TEST_KEY" in skipped[0]["reason"]
    assert skipped[0]["model"] == "m-low"
    assert skipped[1]["reason"].startswith("not installed")
    assert "conveyor-test-no-such-agent-cli" in skipped[1]["reason"]
    assert routing.record()["chosen"] == "present:default" and "fallback" in str(routing.record()["why"])


def test_a_credential_variable_counts_only_if_it_reaches_the_agent(config: Config, tmp_path: Path) -> None:
    locked = config.tools["locked"]
    assert credentials_problem("locked", locked, env(tmp_path, ROUTING_TEST_KEY="k")) is None
    hidden = config.tools["hidden"]       # OTHER_SECRET is set but not in the allowlist: the CLI never sees it
    assert credentials_problem("hidden", hidden, env(tmp_path, OTHER_SECRET="s")) is not None
    assert credentials_problem("present", config.tools["present"], env(tmp_path)) is None   # lists none


def test_a_credentials_file_in_home_counts(config: Config, tmp_path: Path) -> None:
    (tmp_path / ".locked").mkdir()
    (tmp_path / ".locked" / "credentials.json").write_text("{}")
    routing = plan_routes(task(), config, RouteCheck(env(tmp_path)))
    assert routing.route is not None and routing.route.tool_name == "locked"


def test_a_paused_tool_is_skipped_until_its_resume_time(config: Config, tmp_path: Path) -> None:
    now = [1_000_000.0]
    health = ToolHealth(tmp_path / "pauses.json", Backoff, lambda: now[0])
    health.record_limit("present", Outcome.RATE_LIMITED, reset_at=now[0] + 120)
    routing = plan_routes(task(), config, RouteCheck(env(tmp_path), health))
    assert routing.route is None
    assert "paused until" in routing.skipped[-1].reason and routing.retry_at() == now[0] + 120
    now[0] += 121
    assert plan_routes(task(), config, RouteCheck(env(tmp_path), health)).route is not None


def test_a_tool_over_its_hard_budget_is_skipped_until_the_window_resets(config: Config, tmp_path: Path) -> None:
    spent = BudgetState(Budget(scope="tool:present", period="daily", usd=1.0, limit="hard"), 1.5, 0.0, 86400.0)
    routing = plan_routes(task(), config, RouteCheck(env(tmp_path), None, [spent]))
    assert routing.route is None
    assert routing.skipped[-1].reason.startswith("over budget") and routing.retry_at() == 86400.0
    soft = BudgetState(Budget(scope="tool:present", period="daily", usd=1.0, limit="soft"), 1.5, 0.0, 86400.0)
    assert plan_routes(task(), config, RouteCheck(env(tmp_path), None, [soft])).route is not None


def test_one_check_answers_once_per_tool(config: Config, tmp_path: Path) -> None:
    check = RouteCheck(env(tmp_path))
    assert plan_routes(task(), config, check).route is not None
    (tmp_path / ".locked").mkdir()
    (tmp_path / ".locked" / "credentials.json").write_text("{}")   # logged in after the pass began
    assert plan_routes(task(), config, check).route.tool_name == "present"     # type: ignore[union-attr]
    assert plan_routes(task(), config, RouteCheck(env(tmp_path))).route.tool_name == "locked"  # type: ignore[union-attr]


def test_advancing_past_a_limited_route_records_it(config: Config, tmp_path: Path) -> None:
    routing = plan_routes(task(), config, allow_all)
    routing.skip_current("rate_limited (HTTP 429); paused until later", retry_at=time.time() + 60)
    assert routing.advance_past(allow_all) is not None and routing.route.tool_name == "ghost"  # type: ignore[union-attr]
    assert routing.record()["skipped"][0]["reason"].startswith("rate_limited")


def test_a_tier_model_of_another_cli_gives_way_to_the_agents_own_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "config" / "agents.yaml").write_text(
        "agents:\n  default: {tool: codex, model: gpt-5.5, models: {economy: haiku, premium: gpt-5}}\n")
    config = load_config(repo, repo / ".git")
    low = plan_routes(task(), config, allow_all).route           # economy → haiku, a claude-code model
    assert low is not None and (low.model, low.why) == ("gpt-5.5", "agent default")
    high = plan_routes(task(complexity="high"), config, allow_all).route
    assert high is not None and high.model == "gpt-5"
