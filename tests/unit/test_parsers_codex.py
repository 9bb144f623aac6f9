"""codex exec --json output → ParsedRun, on the real captured output and on hand-made events."""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from tests.conftest import FIXTURES

from conveyor.runner.parsers import make_parser
from conveyor.runner.parsers.base import FINAL_TEXT_CAP, OutputParser
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult, Tokens

AGENT_OUTPUT = FIXTURES / "agent-output"
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()
EXITED_0 = ProcessResult(exit_code=0, signal=None, stderr_tail="Reading additional input from stdin...\n")
EXITED_1 = ProcessResult(exit_code=1, signal=None, stderr_tail="Reading additional input from stdin...\n")
THREAD = "01a20773-9439-73b2-af63-788f6724196f"


def feed(parser: OutputParser, lines: Iterable[str]) -> OutputParser:
    for line in lines:
        parser.feed_line(line)
    return parser


def parse(lines: Iterable[str], process: ProcessResult = EXITED_0, **kwargs: Any) -> ParsedRun:
    return feed(make_parser("codex-jsonl", now=NOW, **kwargs), lines).finish(process)


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def started() -> list[str]:
    return [event("thread.started", thread_id=THREAD), event("turn.started")]


def message(text: str) -> str:
    return event("item.completed", item={"id": "item_9", "type": "agent_message", "text": text})


def completed(input_tokens: int = 100, cached: int = 40, output: int = 30, reasoning: int = 10,
              cache_write: int = 0) -> str:
    return event("turn.completed", usage={
        "input_tokens": input_tokens, "cached_input_tokens": cached, "cache_write_input_tokens": cache_write,
        "output_tokens": output, "reasoning_output_tokens": reasoning})


def failed(text: str) -> str:
    return event("turn.failed", error={"message": text})


def error(text: str) -> str:
    return event("error", message=text)


# --- the real captured output --------------------------------------------------------------------

FIXTURE_CASES: dict[str, tuple[Outcome, Tokens, str, str, int | None, int, Outcome | None]] = {
    # file: outcome, tokens, thread id, final text, api status, retries, live signal at the end
    "codex-0.169.0-jsonl-success-command.jsonl": (
        Outcome.OK, Tokens(input=1981, output=100, cache_read=20, cache_write=0),
        "01a20773-9439-73b2-af63-788f6724196f", "Created hello.txt", None, 0, None),
    "codex-0.169.0-jsonl-401.jsonl": (
        Outcome.AUTH_EXPIRED, Tokens(), "01a20779-0af7-7763-984f-118ade6f52cf", "", 401, 1,
        Outcome.AUTH_EXPIRED),
    "codex-0.169.0-jsonl-429.jsonl": (
        Outcome.RATE_LIMITED, Tokens(), "01a20778-fefb-70e0-9a71-0f202ed793d7", "", 429, 0,
        Outcome.RATE_LIMITED),
    "codex-0.169.0-jsonl-500.jsonl": (
        Outcome.OVERLOADED, Tokens(), "01a20779-03f8-79b1-9f2d-4947cfd37f80", "", None, 1,
        Outcome.OVERLOADED),
}


@pytest.mark.parametrize("file_name", sorted(FIXTURE_CASES))
def test_real_output(file_name: str) -> None:
    outcome, tokens, thread, text, status, retries, live = FIXTURE_CASES[file_name]
    with (AGENT_OUTPUT / file_name).open(encoding="utf-8") as handle:
        parser = feed(make_parser("codex-jsonl", now=NOW), handle)
    assert parser.live_limit() == (None if live is None else (live, None))
    run = parser.finish(EXITED_0 if outcome is Outcome.OK else EXITED_1)
    assert run.outcome is outcome
    assert run.tokens == tokens
    assert run.session_id == thread
    assert run.final_text == text
    assert run.api_error_status == status
    assert run.retries == retries
    assert run.turns == 1
    assert run.cost_usd is None and run.model is None          # codex reports neither
    assert run.reset_at is None
    assert (run.error_message is None) == (outcome is Outcome.OK)


def test_every_fixture_file_is_covered() -> None:
    codex_files = {path.name for path in AGENT_OUTPUT.iterdir() if path.name.startswith("codex-")}
    assert codex_files == set(FIXTURE_CASES)


def test_live_signal_during_the_real_401_retries() -> None:
    parser = make_parser("codex-jsonl", now=NOW)
    seen = []
    with (AGENT_OUTPUT / "codex-0.169.0-jsonl-401.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            parser.feed_line(line)
            seen.append(parser.live_limit())
    auth = (Outcome.AUTH_EXPIRED, None)
    assert seen == [None, None, None, auth, auth, auth]


# --- tokens ----------------------------------------------------------------------------------------


def test_tokens_are_normalised_and_reasoning_is_not_counted_twice() -> None:
    usage = completed(input_tokens=2001, cached=20, output=100, reasoning=10, cache_write=7)
    run = parse([*started(), usage])
    assert run.tokens == Tokens(input=1981, output=100, cache_read=20, cache_write=7)


def test_tokens_sum_over_turns() -> None:
    lines = [*started(), message("first"), completed(100, 40, 30), event("turn.started"), message("second"),
             completed(50, 10, 5)]
    run = parse(lines)
    assert run.tokens == Tokens(input=100, output=35, cache_read=50, cache_write=0)
    assert (run.turns, run.final_text, run.outcome) == (2, "second", Outcome.OK)


@pytest.mark.parametrize("usage", [None, "lots", [], {"input_tokens": "9", "output_tokens": None},
                                   {"input_tokens": 5, "cached_input_tokens": 50}])
def test_odd_usage_never_raises_or_goes_negative(usage: object) -> None:
    run = parse([*started(), event("turn.completed", usage=usage)])
    assert run.outcome is Outcome.OK
    assert min(run.tokens.as_dict().values()) >= 0


# --- failures ---------------------------------------------------------------------------------------


def local(hour: int, minute: int, tz: str, month: int = 11, day: int = 23) -> float:
    return datetime(2026, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


@pytest.mark.parametrize(("text", "outcome", "reset_at", "status"), [
    ("You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in "
     "2 days 3 hours 4 minutes.", Outcome.RATE_LIMITED, NOW + 2 * 86400 + 3 * 3600 + 4 * 60, None),
    ("You've hit your usage limit. Try again at 3:05 PM.", Outcome.RATE_LIMITED, local(15, 5, "UTC"), None),
    ("You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase more credits "
     "or try again at Dec 5th, 2026 8:19 PM.", Outcome.RATE_LIMITED, local(20, 19, "UTC", month=12, day=5),
     None),
    ("exceeded retry limit, last status: 500 Internal Server Error", Outcome.OVERLOADED, None, 500),
    ("stream disconnected before completion: Rate limit reached for gpt-5 on tokens per min. "
     "Please try again in 1.5s.", Outcome.RATE_LIMITED, NOW + 1.5, None),
    ("Connection failed: error sending request for url (http://127.0.0.1:9/v1/responses)",
     Outcome.OVERLOADED, None, None),
    ("sandbox error: command was killed by a signal", Outcome.AGENT_ERROR, None, None),
    ("Codex ran out of room in the model's context window.", Outcome.AGENT_ERROR, None, None),
])
def test_turn_failed_verdicts(text: str, outcome: Outcome, reset_at: float | None,
                              status: int | None) -> None:
    run = parse([*started(), error(text), failed(text)], EXITED_1)
    assert run.outcome is outcome
    assert run.reset_at == (pytest.approx(reset_at) if reset_at is not None else None)
    assert run.api_error_status == status
    assert run.error_message is not None and text[:40] in run.error_message


def test_a_time_without_a_zone_is_read_in_the_zone_given_to_the_parser() -> None:
    text = "You've hit your usage limit. Try again at 3:05 PM."
    run = parse([*started(), failed(text)], EXITED_1, tz=ZoneInfo("America/New_York"))
    assert run.reset_at == local(15, 5, "America/New_York")


def test_turn_failed_without_a_message() -> None:
    for line in (event("turn.failed"), event("turn.failed", error="plain string"),
                 event("turn.failed", error={"message": 7})):
        run = parse([*started(), line], EXITED_1)
        assert run.outcome is Outcome.AGENT_ERROR
        assert run.error_message is not None and run.error_message.startswith("the agent's turn failed")


def test_a_later_successful_turn_replaces_a_failed_one() -> None:
    run = parse([*started(), failed("exceeded retry limit, last status: 429 Too Many Requests"),
                 event("turn.started"), message("recovered"), completed()])
    assert (run.outcome, run.final_text, run.turns) == (Outcome.OK, "recovered", 2)


# --- live signals -------------------------------------------------------------------------------------


def test_reconnecting_signals_then_progress_clears_them() -> None:
    parser = feed(make_parser("codex-jsonl", now=NOW), started())
    parser.feed_line(error("Reconnecting... 1/5 (exceeded retry limit, last status: 429 Too Many Requests)"))
    assert parser.live_limit() == (Outcome.RATE_LIMITED, None)
    parser.feed_line(error("Reconnecting... 2/5 (We’re currently experiencing high demand)"))
    assert parser.live_limit() == (Outcome.OVERLOADED, None)
    parser.feed_line(event("item.completed", item={"id": "item_0", "type": "error", "message": "warning"}))
    assert parser.live_limit() == (Outcome.OVERLOADED, None)     # warnings are not progress
    parser.feed_line(event("item.started", item={"id": "item_1", "type": "command_execution"}))
    assert parser.live_limit() is None
    parser.feed_line(error("some unrelated error"))
    assert parser.live_limit() is None
    run = feed(parser, [message("done"), completed()]).finish(EXITED_0)
    assert (run.outcome, run.retries) == (Outcome.OK, 2)


def test_usage_limit_error_event_signals_the_reset() -> None:
    parser = feed(make_parser("codex-jsonl", now=NOW), started())
    parser.feed_line(error("You've hit your usage limit. Try again in 5 days 22 hours 11 minutes."))
    assert parser.live_limit() == (Outcome.RATE_LIMITED, NOW + 5 * 86400 + 22 * 3600 + 11 * 60)


# --- process-level verdicts ---------------------------------------------------------------------------


def test_network_retries_until_the_idle_timeout_are_an_overload() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGTERM, idle_timed_out=True, duration_s=300)
    lines = [*started(), error("Reconnecting... 1/5 (stream disconnected before completion: "
                               "idle timeout waiting for SSE)")]
    run = parse(lines, process)
    assert run.outcome is Outcome.OVERLOADED
    assert run.error_message is not None and "idle timeout" in run.error_message


def test_plain_timeout() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGTERM, timed_out=True, duration_s=1799.6)
    run = parse([*started(), message("half way")], process)
    assert run.outcome is Outcome.TIMEOUT
    assert run.error_message == "timed out: the CLI hit the wall-clock timeout and was stopped after 1800 s"
    assert (run.session_id, run.final_text) == (THREAD, "half way")


@pytest.mark.parametrize(("lines", "process", "parts"), [
    ([], EXITED_0, ["exited 0 but printed no result object"]),
    (["Reading additional input from stdin..."], EXITED_1, ["exited with code 1", "stderr: Reading"]),
    ([*started(), error("internal error; agent loop died unexpectedly")], EXITED_1,
     ["last error: internal error; agent loop died unexpectedly"]),
    ([*started(), message("writing")], ProcessResult(exit_code=None, signal=signal.SIGSEGV),
     ["killed by SIGSEGV"]),
])
def test_no_turn_end_is_a_crash(lines: list[str], process: ProcessResult, parts: list[str]) -> None:
    run = parse(lines, process)
    assert run.outcome is Outcome.CRASHED
    for part in parts:
        assert run.error_message is not None and part in run.error_message


def test_status_of_the_last_error_is_kept_on_a_crash() -> None:
    run = parse([*started(), error("unexpected status 400 Bad Request: nope")], EXITED_1)
    assert (run.outcome, run.api_error_status) == (Outcome.CRASHED, 400)


def test_a_truncated_final_line_is_no_turn_end() -> None:
    full = completed()
    run = parse([*started(), message("done"), full[:-5]], EXITED_0)
    assert run.outcome is Outcome.CRASHED


def test_final_text_is_capped() -> None:
    run = parse([*started(), message("a" * (FINAL_TEXT_CAP * 2) + "END"), completed()])
    assert len(run.final_text.encode()) <= FINAL_TEXT_CAP
    assert run.final_text.endswith("END")


def test_random_garbage_never_raises() -> None:
    rng = random.Random(99)
    samples = [completed(), failed("x"), error("Reconnecting... 1/5 (429)"), message("hi"), *started()]
    parser = make_parser("codex-jsonl", now=NOW)
    for _ in range(3000):
        base = rng.choice(samples)
        cut = base[: rng.randrange(len(base) + 1)]
        noise = "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(8)))
        parser.feed_line(rng.choice([cut, noise, noise + cut, '{"type": "item.completed", "item": 5}',
                                     '{"type": "error", "message": null}', "null", "[" * 100_000]))
    parser.live_limit()
    assert isinstance(parser.finish(EXITED_1), ParsedRun)
