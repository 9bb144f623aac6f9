"""Provider-limit pauses: reset times, backoff with jitter per tool, persistence, and resuming by themselves."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conveyor.config.models import Backoff
from conveyor.runner.types import Outcome
from conveyor.scheduling.tool_health import MIN_PAUSE_S, PAUSES_FILE, ToolHealth, backoff_delay, read_pauses

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def health_at(path: Path, clock: Clock, backoff: Backoff | None = None, seed: int = 7) -> ToolHealth:
    chosen = backoff or Backoff(initial_s=10, max_s=100, jitter=0.2)
    return ToolHealth(path / PAUSES_FILE, lambda: chosen, clock, random.Random(seed))


def test_a_reset_time_from_the_cli_is_used_as_is(tmp_path: Path, clock: Clock) -> None:
    health = health_at(tmp_path, clock)
    pause = health.record_limit("claude", Outcome.RATE_LIMITED, reset_at=NOW + 3600, status=429)
    assert pause.until == NOW + 3600 and "HTTP 429" in pause.reason
    assert health.paused_until("claude") == NOW + 3600
    assert health.paused_until("codex") is None            # only the affected tool is paused


def test_a_reset_time_in_the_past_still_pauses_briefly(tmp_path: Path, clock: Clock) -> None:
    pause = health_at(tmp_path, clock).record_limit("claude", Outcome.RATE_LIMITED, reset_at=NOW - 50)
    assert pause.until == NOW + MIN_PAUSE_S


def test_without_a_reset_time_backoff_doubles_per_limit_in_a_row_and_is_capped(tmp_path: Path, clock: Clock) -> None:
    health = health_at(tmp_path, clock, Backoff(initial_s=10, max_s=100, jitter=0.0))
    delays = []
    for _ in range(6):
        pause = health.record_limit("codex", Outcome.OVERLOADED, reset_at=None, status=529)
        delays.append(pause.until - clock.now)
        clock.now = pause.until + 1          # the pause ran out; the next try hits the limit again
    assert delays == [10, 20, 40, 80, 100, 100]


def test_a_success_resets_the_backoff(tmp_path: Path, clock: Clock) -> None:
    health = health_at(tmp_path, clock, Backoff(initial_s=10, max_s=100, jitter=0.0))
    health.record_limit("codex", Outcome.OVERLOADED, None)
    health.record_limit("codex", Outcome.OVERLOADED, None)
    health.record_success("codex")
    assert health.record_limit("codex", Outcome.OVERLOADED, None).until == NOW + 10


def test_jitter_spreads_delays_within_its_bounds() -> None:
    backoff = Backoff(initial_s=100, max_s=10_000, jitter=0.2)
    rng = random.Random(1)
    delays = [backoff_delay(1, backoff, rng) for _ in range(200)]
    assert all(80 <= d <= 120 for d in delays)
    assert max(delays) - min(delays) > 20          # really spread, not one value


def test_auth_expired_pauses_and_says_to_log_in_again(tmp_path: Path, clock: Clock) -> None:
    with capture_logs() as logs:
        pause = health_at(tmp_path, clock).record_limit("claude", Outcome.AUTH_EXPIRED, reset_at=NOW + 5,
                                                        status=401)
    assert pause.until > NOW and pause.outcome == "auth_expired"
    event = next(e for e in logs if e["event"] == "tool.auth_expired")
    assert event["tool"] == "claude" and "log in" in event["action"]


def test_pauses_survive_a_restart_and_end_by_themselves(tmp_path: Path, clock: Clock) -> None:
    health_at(tmp_path, clock).record_limit("claude", Outcome.RATE_LIMITED, reset_at=NOW + 60)
    document = json.loads((tmp_path / PAUSES_FILE).read_text())
    assert document["pauses"][0]["tool"] == "claude"
    restarted = health_at(tmp_path, clock)
    assert restarted.paused_until("claude") == NOW + 60
    assert [p["tool"] for p in read_pauses(tmp_path / PAUSES_FILE, NOW)] == ["claude"]
    clock.now = NOW + 61
    with capture_logs() as logs:
        assert restarted.paused_until("claude") is None
    assert [e["event"] for e in logs] == ["tool.resumed"]
    assert read_pauses(tmp_path / PAUSES_FILE, clock.now) == []
    assert json.loads((tmp_path / PAUSES_FILE).read_text())["pauses"] == []


def test_a_corrupt_pause_file_is_ignored(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / PAUSES_FILE).write_text("{not json")
    assert health_at(tmp_path, clock).active() == []
    assert read_pauses(tmp_path / PAUSES_FILE, NOW) == []


def test_a_later_pause_is_not_shortened_by_an_earlier_reset(tmp_path: Path, clock: Clock) -> None:
    health = health_at(tmp_path, clock)
    health.record_limit("claude", Outcome.RATE_LIMITED, reset_at=NOW + 600)
    assert health.record_limit("claude", Outcome.RATE_LIMITED, reset_at=NOW + 60).until == NOW + 600
