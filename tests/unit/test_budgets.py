"""Budgets against real telemetry: UTC windows, scopes (global, agent, tool), hard blocks and soft warnings."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.config import load_config
from conveyor.config.models import Budget
from conveyor.core.errors import ConfigError
from conveyor.scheduling.budgets import BudgetGuard, evaluate, soft_warnings, task_block, tool_block, window_of
from conveyor.telemetry.store import InvocationEnd, InvocationStart, Telemetry


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = ts("2026-11-23T15:30:00")


def spend(telemetry: Telemetry, agent: str, tool: str, cost: float, at: float) -> None:
    row = telemetry.start(InvocationStart("t", agent, tool, None, 1, at))
    telemetry.finish(row, InvocationEnd(at + 1, 1.0, "ok", cost_usd=cost))


@pytest.fixture
def telemetry(tmp_path: Path) -> Telemetry:
    db = Telemetry(tmp_path / "telemetry.db")
    spend(db, "backend-dev", "claude-code", 3.00, ts("2026-11-23T01:00:00"))
    spend(db, "frontend-dev", "codex", 1.50, ts("2026-11-23T14:00:00"))
    spend(db, "backend-dev", "codex", 2.00, ts("2026-11-22T23:59:59"))      # yesterday: this month only
    spend(db, "backend-dev", "claude-code", 9.00, ts("2026-10-31T12:00:00"))  # last month: never counted
    return db


def test_windows_are_utc_days_and_months() -> None:
    assert window_of("daily", NOW) == (ts("2026-11-23T00:00:00"), ts("2026-11-24T00:00:00"))
    assert window_of("monthly", NOW) == (ts("2026-11-01T00:00:00"), ts("2026-12-01T00:00:00"))
    assert window_of("monthly", ts("2026-12-31T23:59:59")) == (ts("2026-12-01T00:00:00"), ts("2027-01-01T00:00:00"))
    assert window_of("daily", ts("2026-12-31T23:59:59"))[1] == ts("2027-01-01T00:00:00")


def test_spend_per_scope_and_window(telemetry: Telemetry) -> None:
    budgets = [Budget(scope="global", period="daily", usd=100), Budget(scope="backend-dev", period="daily", usd=100),
               Budget(scope="backend-dev", period="monthly", usd=100), Budget(scope="tool:codex", period="monthly",
                                                                              usd=100)]
    spent = [round(state.spent, 6) for state in evaluate(budgets, telemetry.spend, NOW)]
    assert spent == [4.50, 3.00, 5.00, 3.50]


def test_a_spent_hard_budget_blocks_its_scope_only(telemetry: Telemetry) -> None:
    budgets = [Budget(scope="backend-dev", period="daily", usd=3.0, limit="hard")]
    states = evaluate(budgets, telemetry.spend, NOW)
    block = task_block(states, "backend-dev")
    assert block is not None and block.resets_at == ts("2026-11-24T00:00:00")
    assert "agent backend-dev daily budget of $3.00 reached ($3.00 spent" in block.describe()
    assert "2026-11-24T00:00:00Z" in block.describe()
    assert task_block(states, "frontend-dev") is None


def test_a_global_hard_budget_blocks_everyone_and_the_latest_reset_wins(telemetry: Telemetry) -> None:
    budgets = [Budget(scope="global", period="daily", usd=1.0, limit="hard"),
               Budget(scope="global", period="monthly", usd=1.0, limit="hard")]
    block = task_block(evaluate(budgets, telemetry.spend, NOW), "anyone")
    assert block is not None and block.resets_at == ts("2026-12-01T00:00:00")


def test_soft_budgets_only_warn(telemetry: Telemetry) -> None:
    budgets = [Budget(scope="global", period="daily", usd=1.0, limit="soft"),
               Budget(scope="tool:codex", period="daily", usd=1.0, limit="soft")]
    states = evaluate(budgets, telemetry.spend, NOW)
    assert task_block(states, "backend-dev") is None and tool_block(states, "codex") is None
    assert [s.budget.scope for s in soft_warnings(states, "backend-dev", "codex")] == ["global", "tool:codex"]
    assert [s.budget.scope for s in soft_warnings(states, "backend-dev", "claude-code")] == ["global"]


def test_a_hard_tool_budget_blocks_the_tool(telemetry: Telemetry) -> None:
    states = evaluate([Budget(scope="tool:claude-code", period="daily", usd=2.0, limit="hard")], telemetry.spend, NOW)
    assert tool_block(states, "claude-code") is not None and tool_block(states, "codex") is None
    assert task_block(states, "backend-dev") is None       # tasks are routed around it, not held


def test_the_guard_rereads_after_rollover_and_after_new_spend(telemetry: Telemetry) -> None:
    now = [NOW]
    guard = BudgetGuard(telemetry.spend, lambda: now[0], recheck_s=3600)
    budgets = [Budget(scope="global", period="daily", usd=5.0, limit="hard")]
    assert not guard.states(budgets)[0].exceeded
    spend(telemetry, "x", "codex", 1.0, NOW)
    assert not guard.states(budgets)[0].exceeded            # cached within recheck_s
    guard.invalidate()
    assert guard.states(budgets)[0].exceeded                  # 5.50 ≥ 5.00
    now[0] = ts("2026-11-24T00:00:01")                        # the day rolled over: cache is stale at once
    assert guard.states(budgets)[0].spent == 0
    raised = [Budget(scope="global", period="daily", usd=50.0, limit="hard")]
    now[0] = NOW
    assert not guard.states(raised)[0].exceeded               # a reload with a new limit is seen at once


def test_a_budget_for_an_unknown_tool_is_a_config_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "config" / "policies.yaml").write_text(
        "budgets:\n  - {scope: global, period: daily, usd: 5}\n  - {scope: 'tool:claud', period: daily, usd: 5}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(repo, repo / ".git")
    problem = caught.value.problems[0]
    assert "unknown tool 'claud'" in problem.message and problem.field == "budgets.1.scope" and problem.line == 3
