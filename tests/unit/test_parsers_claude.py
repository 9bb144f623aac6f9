"""Claude Code json / stream-json output → ParsedRun, on the real captured output and on hand-made lines."""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from tests.conftest import FIXTURES

from conveyor.runner.parsers import make_parser
from conveyor.runner.parsers.base import FINAL_TEXT_CAP, OutputParser
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult, Tokens

AGENT_OUTPUT = FIXTURES / "agent-output"
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()
EXITED_0 = ProcessResult(exit_code=0, signal=None)
EXITED_1 = ProcessResult(exit_code=1, signal=None)
SESSION = "0d8f3a52-1111-4222-8333-444455556666"


def feed(parser: OutputParser, lines: Iterable[str]) -> OutputParser:
    for line in lines:
        parser.feed_line(line)
    return parser


def parse(lines: Iterable[str], process: ProcessResult = EXITED_0,
          name: str = "claude-stream-json") -> ParsedRun:
    return feed(make_parser(name, now=NOW), lines).finish(process)


def fixture_lines(file_name: str) -> list[str]:
    with (AGENT_OUTPUT / file_name).open(encoding="utf-8") as handle:
        return list(handle)


def init(model: str = "claude-opus-5-5") -> str:
    return json.dumps({"type": "system", "subtype": "init", "session_id": SESSION, "model": model,
                       "cwd": "/tmp/x", "tools": ["Write"]})


def retry(status: int | None, error: str, attempt: int = 1) -> str:
    return json.dumps({"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 10,
                       "retry_delay_ms": 500, "error_status": status, "error": error, "session_id": SESSION})


def assistant(text: str, model: str = "claude-opus-5-5") -> str:
    return json.dumps({"type": "assistant", "session_id": SESSION, "message": {
        "model": model, "role": "assistant", "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": 1, "output_tokens": 1}}})


def rate_limit_event(status: str, resets_at: int) -> str:
    return json.dumps({"type": "rate_limit_event", "session_id": SESSION, "rate_limit_info": {
        "status": status, "resetsAt": resets_at, "rateLimitType": "five_hour"}})


def result(**fields: Any) -> str:
    obj: dict[str, Any] = {
        "type": "result", "subtype": "success", "is_error": False, "result": "All done.",
        "session_id": SESSION, "num_turns": 3, "total_cost_usd": 0.25, "terminal_reason": "completed",
        "api_error_status": None, "permission_denials": [],
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 30,
                  "cache_creation_input_tokens": 40},
        "modelUsage": {"claude-opus-5-5": {"inputTokens": 10, "outputTokens": 20, "costUSD": 0.25}}}
    obj.update(fields)
    return json.dumps(obj)


# --- the real captured output --------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    outcome: Outcome
    tokens: Tokens
    cost: float
    session: str
    turns: int
    final_text: str
    status: int | None
    retries: int
    live: Outcome | None


FIXTURE_CASES = {
    "claude-2.1.328-json-success.json": Expected(
        Outcome.OK, Tokens(input=2001, output=100, cache_read=20, cache_write=10), 0.010058000000000001,
        "7efcb0e8-acdd-4002-8a21-f5ccc51d5e2f", 2, "Created hello.txt", None, 0, None),
    "claude-2.1.328-stream-json-401-max-retries-1.jsonl": Expected(
        Outcome.AUTH_EXPIRED, Tokens(), 0.0, "0c28f819-7044-438b-ad46-6b03900f51db", 1,
        "Failed to authenticate. API Error: 401 err 401", 401, 1, Outcome.AUTH_EXPIRED),
    "claude-2.1.328-stream-json-429-max-retries-1.jsonl": Expected(
        Outcome.RATE_LIMITED, Tokens(), 0.0, "d0a15e6c-91dc-42b4-8ab1-522b1f16bba5", 1,
        "API Error: Request rejected (429) · err 429", 429, 1, Outcome.RATE_LIMITED),
    "claude-2.1.328-stream-json-529-max-retries-1.jsonl": Expected(
        Outcome.OVERLOADED, Tokens(), 0.0, "d101def6-7bba-48e4-acde-93b4d261a038", 1,
        "API Error: 529 err 529. This is a server-side issue, usually temporary — try again in a moment. "
        "If it persists, check your inference gateway (127.0.0.1:45047).", 529, 1, Outcome.OVERLOADED),
    "claude-2.1.328-stream-json-529-retries-then-success.jsonl": Expected(
        Outcome.OK, Tokens(input=1001, output=50, cache_read=10, cache_write=5), 0.005031,
        "3642f157-9c87-46b9-b1ed-9f9c765ec8a6", 1, "ok after overload", None, 2, None),
}


@pytest.mark.parametrize("file_name", sorted(FIXTURE_CASES))
def test_real_output(file_name: str) -> None:
    expected = FIXTURE_CASES[file_name]
    name = "claude-json" if file_name.endswith(".json") else "claude-stream-json"
    process = EXITED_0 if expected.outcome is Outcome.OK else EXITED_1   # every failure exits 1
    parser = feed(make_parser(name, now=NOW), fixture_lines(file_name))
    assert parser.live_limit() == (None if expected.live is None else (expected.live, None))
    run = parser.finish(process)
    assert run.outcome is expected.outcome
    assert run.tokens == expected.tokens
    assert run.cost_usd == expected.cost
    assert run.session_id == expected.session
    assert run.turns == expected.turns
    assert run.final_text == expected.final_text
    assert run.api_error_status == expected.status
    assert run.retries == expected.retries
    assert run.model == "claude-opus-5-5"
    assert run.permission_denials == []
    assert run.reset_at is None
    assert (run.error_message is None) == (expected.outcome is Outcome.OK)


def test_real_output_survives_banners_garbage_and_blank_lines() -> None:
    noisy = ["Welcome to Claude Code!\n", "\n", "{not json\n", "\x00\x01\x02\n", "[1, 2, 3]\n", "42\n",
             '{"type": "system", "subtype": "init", "model": 7}\n', '"a string"\n', "{\"type\": \"result\"\n"]
    lines = fixture_lines("claude-2.1.328-stream-json-529-retries-then-success.jsonl")
    mixed = [item for i, line in enumerate(lines) for item in (noisy[i % len(noisy)], line)] + noisy
    run = parse(mixed)
    assert run.outcome is Outcome.OK
    assert run.tokens == Tokens(input=1001, output=50, cache_read=10, cache_write=5)
    assert run.final_text == "ok after overload"


def test_mid_run_signals_follow_the_real_retry_sequence() -> None:
    parser = make_parser("claude-stream-json", now=NOW)
    seen = []
    for line in fixture_lines("claude-2.1.328-stream-json-529-retries-then-success.jsonl"):
        parser.feed_line(line)
        seen.append(parser.live_limit())
    overloaded = (Outcome.OVERLOADED, None)
    assert seen == [None, overloaded, overloaded, None, None]   # the answer clears the retry episode


# --- verdicts from hand-made result objects ----------------------------------------------------------


@pytest.mark.parametrize(("fields", "outcome", "message_part"), [
    ({}, Outcome.OK, None),
    ({"subtype": "error_max_turns", "is_error": True, "num_turns": 7}, Outcome.AGENT_ERROR,
     "turn limit (--max-turns) after 7 turns"),
    ({"subtype": "error_max_turns", "is_error": False}, Outcome.AGENT_ERROR, "--max-turns"),
    ({"subtype": "error_max_budget_usd", "is_error": True, "terminal_reason": "budget_exhausted",
      "total_cost_usd": 1.234}, Outcome.AGENT_ERROR, "--max-budget-usd) after spending $1.23"),
    ({"subtype": "error_during_execution", "is_error": True, "result": "",
      "errors": ["tool crashed", "then gave up"]}, Outcome.AGENT_ERROR, "tool crashed; then gave up"),
    ({"is_error": True, "result": "I could not finish: the tests keep failing."}, Outcome.AGENT_ERROR,
     "I could not finish"),
    ({"is_error": True, "terminal_reason": "api_error", "api_error_status": 400,
      "result": "API Error: 400 prompt is too long"}, Outcome.AGENT_ERROR, "HTTP 400"),
    ({"is_error": False, "terminal_reason": "api_error", "result": "API Error: 404 model not found"},
     Outcome.AGENT_ERROR, "terminal_reason api_error"),
    ({"is_error": True, "terminal_reason": "api_error", "api_error_status": 500,
      "result": "API Error: 500 Internal server error"}, Outcome.OVERLOADED, "overloaded"),
    ({"is_error": True, "terminal_reason": "api_error", "api_error_status": 403,
      "result": "API Error: 403 Request not allowed"}, Outcome.AUTH_EXPIRED, "log the CLI in again"),
    ({"is_error": True, "terminal_reason": "api_error", "api_error_status": None,
      "result": "API Error: Connection error."}, Outcome.OVERLOADED, "Connection error"),
    ({"is_error": True, "result": "Invalid API key · Please run /login"}, Outcome.AUTH_EXPIRED, "/login"),
])
def test_result_verdicts(fields: dict[str, Any], outcome: Outcome, message_part: str | None) -> None:
    run = parse([init(), result(**fields)], EXITED_0 if outcome is Outcome.OK else EXITED_1)
    assert run.outcome is outcome
    if message_part is None:
        assert run.error_message is None
    else:
        assert run.error_message is not None and message_part in run.error_message


def berlin(year: int, month: int, day: int, hour: int) -> float:
    return datetime(year, month, day, hour, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


@pytest.mark.parametrize(("text", "status", "reset_at"), [
    ("You've hit your limit · resets 5am (Europe/Berlin)", 429, berlin(2026, 11, 24, 5)),
    ("You've hit your limit · resets 5am (Europe/Berlin)", None, berlin(2026, 11, 24, 5)),
    ("Claude AI usage limit reached|1795500000", None, 1795500000.0),
    ("5-hour limit reached ∙ resets 3pm", 429, datetime(2026, 11, 23, 15, tzinfo=UTC).timestamp()),
    ("Weekly limit reached · resets Dec 1, 10am (Asia/Seoul) · /upgrade to Max", None,
     datetime(2026, 12, 1, 10, tzinfo=ZoneInfo("Asia/Seoul")).timestamp()),
])
def test_usage_window_results_carry_the_reset_time(text: str, status: int | None, reset_at: float) -> None:
    line = result(is_error=True, terminal_reason="api_error", api_error_status=status, result=text,
                  total_cost_usd=0, modelUsage={})
    run = parse([init(), line], EXITED_1)
    assert run.outcome is Outcome.RATE_LIMITED
    assert run.reset_at == pytest.approx(reset_at)
    assert run.error_message is not None and "lifts at" in run.error_message
    assert run.final_text == text


def test_rejected_rate_limit_event_is_a_live_signal_and_supplies_the_reset() -> None:
    parser = feed(make_parser("claude-stream-json", now=NOW),
                  [init(), rate_limit_event("allowed_warning", 1795400000)])
    assert parser.live_limit() is None                  # a warning is not a stop
    parser.feed_line(rate_limit_event("rejected", 1795412345))
    assert parser.live_limit() == (Outcome.RATE_LIMITED, 1795412345.0)
    parser.feed_line(retry(429, "rate_limit"))
    assert parser.live_limit() == (Outcome.RATE_LIMITED, 1795412345.0)
    parser.feed_line(result(is_error=True, api_error_status=429, terminal_reason="api_error",
                            result="API Error: Request rejected (429)"))
    run = parser.finish(EXITED_1)
    assert run.outcome is Outcome.RATE_LIMITED
    assert run.reset_at == 1795412345.0


@pytest.mark.parametrize(("status", "error", "expected"), [
    (429, "rate_limit", Outcome.RATE_LIMITED),
    (401, "authentication_failed", Outcome.AUTH_EXPIRED),
    (403, "unknown", Outcome.AUTH_EXPIRED),
    (529, "overloaded", Outcome.OVERLOADED),
    (503, "server_error", Outcome.OVERLOADED),
    (None, "overloaded", Outcome.OVERLOADED),
    (None, "rate_limit", Outcome.RATE_LIMITED),
    (None, "connection_refused", None),
    (400, "invalid_request", None),
])
def test_api_retry_live_signals(status: int | None, error: str, expected: Outcome | None) -> None:
    parser = feed(make_parser("claude-stream-json", now=NOW), [init(), retry(status, error)])
    assert parser.live_limit() == (None if expected is None else (expected, None))
    assert parser.finish(EXITED_0).retries == 1


def test_permission_denials_are_listed_but_do_not_fail_the_run() -> None:
    denials = [{"tool_name": "Write", "tool_use_id": "t1",
                "tool_input": {"file_path": "/repo/a.txt", "content": "x"}},
               {"tool_name": "Bash", "tool_input": {"command": "node --version"}},
               {"tool_name": "mcp__x__y", "tool_input": {"query": "q"}},
               {"tool_name": "Task"}, "odd entry"]
    run = parse([init(), result(permission_denials=denials)])
    assert run.outcome is Outcome.OK
    assert run.permission_denials == ["Write: /repo/a.txt", "Bash: node --version",
                                      'mcp__x__y: {"query": "q"}', "Task", "odd entry"]


def test_permission_denials_join_the_error_sentence_of_a_failed_run() -> None:
    denials = [{"tool_name": "Write", "tool_input": {"file_path": "/repo/a.txt"}}]
    run = parse([init(), result(is_error=True, result="Gave up.", permission_denials=denials)], EXITED_1)
    assert run.outcome is Outcome.AGENT_ERROR
    assert run.error_message is not None
    assert run.error_message.endswith("denied tool calls: Write: /repo/a.txt")


# --- model, cost and text details ----------------------------------------------------------------


def test_model_is_the_busiest_model_usage_entry() -> None:
    usage = {"claude-haiku-4-5": {"inputTokens": 9000, "outputTokens": 10},
             "claude-opus-5-5": {"inputTokens": 100, "outputTokens": 9000, "cacheReadInputTokens": 5}}
    assert parse([init("claude-sonnet-5"), result(modelUsage=usage)]).model == "claude-opus-5-5"


@pytest.mark.parametrize(("lines", "expected"), [
    ([init("claude-sonnet-5"), result(modelUsage={})], "claude-sonnet-5"),
    ([assistant("hi", model="claude-sonnet-5"), result(modelUsage={})], "claude-sonnet-5"),
    ([assistant("hi", model="<synthetic>"), result(modelUsage={})], None),
    ([result(modelUsage="nonsense")], None),
])
def test_model_falls_back_to_what_the_stream_said(lines: list[str], expected: str | None) -> None:
    assert parse(lines).model == expected


def test_json_array_output_of_verbose_json_mode() -> None:
    array = "[" + ",".join([init(), assistant("working"), result(result="Finished.")]) + "]"
    run = parse([array], name="claude-json")
    assert (run.outcome, run.final_text, run.session_id, run.model) == (
        Outcome.OK, "Finished.", SESSION, "claude-opus-5-5")


def test_bad_field_types_never_raise_and_count_as_missing() -> None:
    line = result(usage={"input_tokens": "12", "output_tokens": True, "cache_read_input_tokens": -5,
                         "cache_creation_input_tokens": 2.0},
                  num_turns="3", total_cost_usd="0.1", result=["not", "text"], api_error_status="429",
                  permission_denials={"not": "a list"}, errors="nope", session_id=12)
    run = parse([line])
    assert run.outcome is Outcome.OK
    assert run.tokens == Tokens(cache_write=2)
    assert (run.turns, run.cost_usd, run.final_text, run.session_id) == (None, None, "", None)


def test_final_text_is_capped() -> None:
    text = "start " + "é" * FINAL_TEXT_CAP + " the end"
    run = parse([result(result=text)])
    assert len(run.final_text.encode("utf-8")) <= FINAL_TEXT_CAP
    assert run.final_text.endswith(" the end")


def test_the_last_result_wins_and_earlier_text_is_not_kept() -> None:
    lines = [assistant(f"step {i}") for i in range(2000)] + [result(result="first")]
    lines += [result(result="second", num_turns=9)]
    run = parse(lines)
    assert (run.final_text, run.turns) == ("second", 9)


# --- process-level verdicts ----------------------------------------------------------------------


def test_timeout_keeps_what_was_seen() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGTERM, timed_out=True, duration_s=1800.4)
    run = parse([init(), assistant("half way")], process)
    assert run.outcome is Outcome.TIMEOUT
    assert run.error_message == ("timed out: the CLI hit the wall-clock timeout and was stopped after 1800 s")
    assert (run.session_id, run.final_text, run.model) == (SESSION, "half way", "claude-opus-5-5")


def test_idle_timeout_says_which_timeout() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGKILL, idle_timed_out=True, duration_s=301)
    run = parse([init()], process)
    assert run.outcome is Outcome.TIMEOUT
    assert run.error_message is not None and "printed nothing for the idle timeout" in run.error_message
    assert "301 s" in run.error_message


def test_timeout_after_a_result_is_still_a_timeout() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGTERM, timed_out=True, duration_s=60)
    run = parse([result()], process)
    assert run.outcome is Outcome.TIMEOUT
    assert run.tokens == Tokens(10, 20, 30, 40)


def test_a_limit_result_before_a_timeout_stays_a_limit() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGTERM, timed_out=True, duration_s=60)
    line = result(is_error=True, api_error_status=429, terminal_reason="api_error",
                  result="You've hit your limit · resets 3pm")
    run = parse([line], process, name="claude-json")
    assert run.outcome is Outcome.RATE_LIMITED
    assert run.reset_at == datetime(2026, 11, 23, 15, tzinfo=UTC).timestamp()


def test_stuck_in_rate_limit_retries_until_the_idle_timeout_is_a_rate_limit() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGTERM, idle_timed_out=True, duration_s=300)
    run = parse([init(), retry(429, "rate_limit", 1), retry(429, "rate_limit", 2)], process)
    assert run.outcome is Outcome.RATE_LIMITED
    assert run.retries == 2
    assert run.error_message is not None and "while the CLI was retrying" in run.error_message


def test_stopped_by_the_daemon_over_a_live_overload() -> None:
    process = ProcessResult(exit_code=None, signal=signal.SIGTERM, stopped=True)
    run = parse([init(), retry(529, "overloaded")], process)
    assert run.outcome is Outcome.OVERLOADED
    assert run.error_message is not None and "stopped by the daemon" in run.error_message


@pytest.mark.parametrize(("process", "message_parts"), [
    (ProcessResult(exit_code=None, signal=signal.SIGKILL, stderr_tail="boom\n"),
     ["killed by SIGKILL", "stderr: boom"]),
    (ProcessResult(exit_code=None, signal=None), ["killed by an unknown signal"]),
    (ProcessResult(exit_code=None, signal=200), ["killed by signal 200"]),
    (ProcessResult(exit_code=1, signal=None, stderr_tail="Error: Input must be provided\n"),
     ["exited with code 1 without a result object", "Input must be provided"]),
    (ProcessResult(exit_code=0, signal=None), ["exited 0 but printed no result object"]),
    (ProcessResult(exit_code=0, signal=None, stopped=True), ["stopped by the daemon"]),
])
def test_no_result_is_a_crash(process: ProcessResult, message_parts: list[str]) -> None:
    run = parse([init(), assistant("working")], process)
    assert run.outcome is Outcome.CRASHED
    for part in message_parts:
        assert run.error_message is not None and part in run.error_message


def test_a_truncated_final_line_is_no_result() -> None:
    full = result(result="Finished.")
    run = parse([init(), full[: len(full) // 2]], EXITED_0)
    assert run.outcome is Outcome.CRASHED
    assert run.error_message is not None and "no result object" in run.error_message


def test_an_ok_result_clears_an_earlier_api_error_status() -> None:
    error_message = json.dumps({"type": "assistant", "is_api_error_message": True, "api_error_status": 529,
                                "message": {"model": "<synthetic>", "content": [
                                    {"type": "text", "text": "API Error: 529"}]}})
    run = parse([init(), error_message, assistant("recovered"), result()])
    assert (run.outcome, run.api_error_status, run.error_message) == (Outcome.OK, None, None)


def test_crash_quotes_the_last_api_error() -> None:
    error_message = json.dumps({"type": "assistant", "is_api_error_message": True, "api_error_status": 400,
                                "message": {"model": "<synthetic>", "content": [
                                    {"type": "text", "text": "API Error: 400 bad request"}]}})
    run = parse([init(), error_message], ProcessResult(exit_code=None, signal=signal.SIGKILL))
    assert run.outcome is Outcome.CRASHED
    assert run.api_error_status == 400
    assert run.error_message is not None and "last error: API Error: 400 bad request" in run.error_message


def test_stderr_in_a_crash_message_is_bounded() -> None:
    process = ProcessResult(exit_code=3, signal=None, stderr_tail="x" * 100_000 + "LAST WORDS")
    run = parse([], process)
    assert run.error_message is not None and run.error_message.endswith("LAST WORDS")
    assert len(run.error_message) < 2000


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1234)
    samples = [result(), init(), retry(429, "rate_limit"), assistant("x"), rate_limit_event("rejected", 1)]
    parser = make_parser("claude-stream-json", now=NOW)
    for _ in range(3000):
        base = rng.choice(samples)
        cut = base[: rng.randrange(len(base) + 1)]
        noise = "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(8)))
        parser.feed_line(rng.choice([cut, noise, cut + noise, "[" + cut + "]", "[" * 100_000]))
    parser.live_limit()
    assert isinstance(parser.finish(EXITED_1), ParsedRun)


def test_every_fixture_file_is_covered() -> None:
    claude_files = {path.name for path in Path(AGENT_OUTPUT).iterdir() if path.name.startswith("claude-")}
    assert claude_files == set(FIXTURE_CASES)
