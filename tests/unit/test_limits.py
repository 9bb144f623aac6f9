"""Provider-limit wording and reset times, against the real messages the CLIs print."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from conveyor.runner.parsers.limits import (
    DEFAULT_LIMITS,
    LimitPatterns,
    classify_text,
    extract_status,
    outcome_for_status,
    parse_reset_time,
)
from conveyor.runner.types import Outcome


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: str = "UTC") -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


NOW = ts(2026, 11, 23, 8, 0)          # a Monday, 08:00 UTC (09:00 in Berlin, 17:00 in Tokyo)
HOUR, DAY = 3600.0, 86400.0

RATE, OVER, AUTH = Outcome.RATE_LIMITED, Outcome.OVERLOADED, Outcome.AUTH_EXPIRED


@pytest.mark.parametrize(("text", "expected"), [
    # claude, captured (fixtures) and reported (anthropics/claude-code issues)
    ("API Error: Request rejected (429) · err 429", RATE),
    ("Claude AI usage limit reached|1762952400", RATE),
    ("Claude usage limit reached. Your limit will reset at 5pm (Europe/Warsaw).", RATE),
    ("5-hour limit reached ∙ resets 3pm", RATE),
    ("Weekly limit reached · resets 10am (Asia/Seoul) · /upgrade to Max or turn on /extra-usage", RATE),
    ("You've hit your limit · resets 5am (Europe/Berlin)", RATE),
    ("You've hit your session limit · resets 3:50pm (Asia/Tokyo)", RATE),
    ("You’ve hit your limit for Claude messages. Limits will reset at 9:30 AM.", RATE),
    ('Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"..."}}', RATE),
    ("API Error: 529 err 529. This is a server-side issue, usually temporary — try again in a moment.", OVER),
    ('API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"}}', OVER),
    ('{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', OVER),
    ("API Error: Connection error.", OVER),
    ("Failed to authenticate. API Error: 401 err 401", AUTH),
    ("Invalid API key · Please run /login", AUTH),
    ("OAuth token has expired. Please obtain a new token or refresh your existing token.", AUTH),
    ("API Error: 403 Forbidden", AUTH),
    # codex, captured (fixtures) and reported (openai/codex issues, codex-rs/core/src/error.rs)
    ("exceeded retry limit, last status: 429 Too Many Requests", RATE),
    ("You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in "
     "5 days 22 hours 11 minutes.", RATE),
    ("You've hit your usage limit. Try again later.", RATE),
    ('{"error":{"type":"usage_limit_reached","resets_at":1775317531,"resets_in_seconds":602705}}', RATE),
    ("Quota exceeded. Check your plan and billing details.", RATE),
    ("We’re currently experiencing high demand, which may cause temporary errors.", OVER),
    ("Reconnecting... 1/1 (We’re currently experiencing high demand, which may cause temporary errors.)",
     OVER),
    ("exceeded retry limit, last status: 503 Service Unavailable", OVER),
    ("Connection failed: error sending request for url (http://127.0.0.1:9/v1/responses)", OVER),
    ("stream disconnected before completion: idle timeout waiting for SSE", OVER),
    ("unexpected status 401 Unauthorized: err 401, url: http://127.0.0.1:33385/v1/responses", AUTH),
    ("Reconnecting... 1/1 (unexpected status 401 Unauthorized: err 401)", AUTH),
    ("Your access token could not be refreshed. Please log out and sign in again.", AUTH),
])
def test_classify_text_reads_the_real_wording(text: str, expected: Outcome) -> None:
    verdict = classify_text(text, DEFAULT_LIMITS, NOW)
    assert verdict is not None, text
    assert verdict[0] is expected


@pytest.mark.parametrize("text", [
    "",
    "Created hello.txt",
    "Added a rate limiter to the API client and changed 500 lines.",
    "All 429 tests passed.",
    "The status endpoint returns {'status': 'ok'}.",
    "Model metadata for `gpt-test` not found. Defaulting to fallback metadata.",
])
def test_classify_text_leaves_ordinary_text_alone(text: str) -> None:
    assert classify_text(text, DEFAULT_LIMITS, NOW) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("Claude AI usage limit reached|1762952400", RATE, ),
    ("You've hit your usage limit. Upgrade to Pro or try again in 2 days 3 hours 4 minutes.", RATE),
])
def test_classify_text_reads_the_reset_next_to_the_limit(text: str, expected: Outcome) -> None:
    verdict = classify_text(text, DEFAULT_LIMITS, NOW)
    assert verdict is not None and verdict[0] is expected
    assert verdict[1] == parse_reset_time(text, NOW)
    assert verdict[1] is not None


def test_auth_never_carries_a_reset_time() -> None:
    assert classify_text("API Error: 401 · resets 3pm", DEFAULT_LIMITS, NOW) == (AUTH, None)


def test_a_time_far_from_the_limit_words_is_not_its_reset() -> None:
    text = "resets 3pm " + "x" * 5000 + " exceeded retry limit, last status: 429 Too Many Requests"
    assert classify_text(text, DEFAULT_LIMITS, NOW) == (RATE, None)


@pytest.mark.parametrize(("text", "expected"), [
    # epochs
    ("Claude AI usage limit reached|1762952400", 1762952400.0),
    ('{"type":"usage_limit_reached","resets_at":1775317531,"resets_in_seconds":602705}', 1775317531.0),
    ('{"status":"rejected","resetsAt":1787590800}', 1787590800.0),
    # relative to now
    ('{"resets_in_seconds": 13872}', NOW + 13872),
    ("or try again in 5 days 22 hours 11\nminutes.", NOW + 5 * DAY + 22 * HOUR + 11 * 60),
    ("try again in 2 days 3 hours 4 minutes", NOW + 2 * DAY + 3 * HOUR + 4 * 60),
    ("Please try again in 1m30s.", NOW + 90),
    ("Please try again in 6ms.", NOW + 0.006),
    ("Please try again in 2.5s", NOW + 2.5),
    ("resets in 2h 1m", NOW + 2 * HOUR + 60),
    ("retry-after: 30", NOW + 30),
    ("Retry after 12 seconds", NOW + 12),
    # wall clock, no date: the next such time after now (in the named zone, else UTC)
    ("5-hour limit reached ∙ resets 3pm", ts(2026, 11, 23, 15)),
    ("resets 8am", ts(2026, 11, 24, 8)),                                   # exactly now → tomorrow
    ("resets 7:59am", ts(2026, 11, 24, 7, 59)),
    ("You've hit your limit · resets 5am (Europe/Berlin)", ts(2026, 11, 24, 5, tz="Europe/Berlin")),
    ("You've hit your limit · resets 4:50am (Europe/Rome)", ts(2026, 11, 24, 4, 50, tz="Europe/Rome")),
    ("resets 3:50pm (Asia/Tokyo)", ts(2026, 11, 24, 15, 50, tz="Asia/Tokyo")),
    ("Your limit will reset at 5pm (Europe/Warsaw).", ts(2026, 11, 23, 17, tz="Europe/Warsaw")),
    ("Limits will reset at 9:30 AM.", ts(2026, 11, 23, 9, 30)),
    ("Try again at 3:05 PM.", ts(2026, 11, 23, 15, 5)),
    ("resets 12am", ts(2026, 11, 24, 0)),
    ("resets 12pm", ts(2026, 11, 23, 12)),
    ("resets 3pm (Mars/Olympus_Mons)", ts(2026, 11, 23, 15)),              # unknown zone → UTC
    ("resets 3 times a day, resets 3pm", ts(2026, 11, 23, 15)),           # a bare number is not a time
    # wall clock with a date
    ("or try again at Jul 5th, 2027 8:19 PM.", ts(2027, 7, 5, 20, 19)),
    ("You've hit your weekly limit · resets Dec 1, 2am (UTC)", ts(2026, 12, 1, 2)),
    ("You've hit your limit · resets Apr 23 at 4pm (America/Recife)",
     ts(2027, 4, 23, 16, tz="America/Recife")),
    ("You've hit your weekly limit · resets Jan 2 at 4pm", ts(2027, 1, 2, 16)),  # year wraps
    ("You've hit your weekly limit · resets Sep 15 at 7pm", ts(2026, 9, 15, 19)),  # just past: lifted
    # nothing to go on
    ("", None),
    ("You've hit your usage limit. Try again later.", None),
    ("try again in a moment", None),
    ("resets 25:00", None),
    ("resets 13pm", None),
    ("resets Feb 30 at 3pm", None),
])
def test_parse_reset_time(text: str, expected: float | None) -> None:
    assert parse_reset_time(text, NOW) == (pytest.approx(expected) if expected is not None else None)


def test_a_time_without_a_zone_uses_the_default_zone() -> None:
    # codex prints the host's local time without naming the zone (codex-rs format_retry_timestamp)
    new_york = ZoneInfo("America/New_York")
    assert parse_reset_time("Try again at 3:05 PM.", NOW, default_tz=new_york) == ts(
        2026, 11, 23, 15, 5, tz="America/New_York")


def test_next_morning_across_a_daylight_saving_change_keeps_the_wall_clock_time() -> None:
    saturday_morning = ts(2026, 3, 7, 10, tz="America/New_York")   # clocks go forward on Sunday 03-08
    sunday_nine = ts(2026, 3, 8, 9, tz="America/New_York")
    assert sunday_nine - saturday_morning == 22 * HOUR                # 23 wall-clock hours, one skipped
    assert parse_reset_time("resets 9am (America/New_York)", saturday_morning) == sunday_nine


@pytest.mark.parametrize(("status", "expected"), [
    (429, RATE), (401, AUTH), (403, AUTH), (529, OVER), (500, OVER), (502, OVER), (503, OVER), (504, OVER),
    (400, None), (404, None), (413, None), (None, None),
])
def test_outcome_for_status(status: int | None, expected: Outcome | None) -> None:
    assert outcome_for_status(status) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ("exceeded retry limit, last status: 429 Too Many Requests", 429),
    ("unexpected status 401 Unauthorized: err 401", 401),
    ("API Error: 529 err 529", 529),
    ("API Error: Request rejected (429) · err 429", 429),
    ("upstream said 503 Service Unavailable", 503),
    ("We’re currently experiencing high demand", None),
    ("", None),
])
def test_extract_status(text: str, expected: int | None) -> None:
    assert extract_status(text) == expected


def test_custom_patterns_replace_the_defaults() -> None:
    patterns = LimitPatterns(rate_limited=("QUOTA-KAPUT",), overloaded=("busy, come back",), auth_expired=())
    assert classify_text("error: quota-kaput until tomorrow", patterns, NOW) == (RATE, None)
    assert classify_text("server busy, come back: retry in 20s", patterns, NOW) == (OVER, NOW + 20)
    assert classify_text("API Error: 401", patterns, NOW) is None


def test_extended_patterns_keep_the_defaults() -> None:
    patterns = DEFAULT_LIMITS.extended(rate_limited=["QUOTA-KAPUT"], auth_expired=["badge revoked"])
    assert classify_text("quota-kaput", patterns, NOW) == (RATE, None)
    assert classify_text("your badge revoked", patterns, NOW) == (AUTH, None)
    assert classify_text("API Error: Request rejected (429)", patterns, NOW) == (RATE, None)


def test_patterns_from_yaml_lists_become_immutable_and_comparable() -> None:
    patterns = LimitPatterns(rate_limited=["a+"], overloaded=["b"], auth_expired=["c"])  # type: ignore[arg-type]
    assert patterns.rate_limited == ("a+",)
    assert patterns == LimitPatterns(rate_limited=("a+",), overloaded=("b",), auth_expired=("c",))
    assert hash(patterns) == hash(LimitPatterns(rate_limited=("a+",), overloaded=("b",), auth_expired=("c",)))


def test_an_invalid_pattern_is_reported_by_kind_and_text() -> None:
    with pytest.raises(ValueError, match=r"invalid overloaded pattern '\(unclosed'"):
        LimitPatterns(overloaded=("(unclosed",))
