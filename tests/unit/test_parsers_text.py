"""Plain-text CLIs → ParsedRun (exit code + limit patterns), and the parser registry."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from conveyor.core.errors import ConveyorError
from conveyor.runner.parsers import PARSER_NAMES, LimitPatterns, UnknownParserError, make_parser
from conveyor.runner.parsers.base import FINAL_TEXT_CAP
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult, Tokens

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()
EXITED_0 = ProcessResult(exit_code=0, signal=None)


def parse(lines: Iterable[str], process: ProcessResult = EXITED_0,
          limits: LimitPatterns | None = None) -> ParsedRun:
    parser = make_parser("text", now=NOW, limits=limits)
    for line in lines:
        parser.feed_line(line)
    return parser.finish(process)


def exited(code: int, stderr: str = "") -> ProcessResult:
    return ProcessResult(exit_code=code, signal=None, stderr_tail=stderr)


def test_exit_0_is_ok_and_the_final_text_is_stdout() -> None:
    run = parse(["Thinking...\n", "Wrote src/app.py\n", "Done: added the endpoint.\n", "\n"])
    assert run.outcome is Outcome.OK
    assert run.final_text == "Thinking...\nWrote src/app.py\nDone: added the endpoint."
    assert (run.session_id, run.turns, run.cost_usd, run.model) == (None, None, None, None)
    assert run.tokens == Tokens()
    assert run.error_message is None


def test_final_text_is_the_last_64_kib_of_stdout() -> None:
    lines = [f"line {i:06d} " + "x" * 100 + "\n" for i in range(3000)]     # ~330 KiB
    run = parse(lines)
    assert len(run.final_text.encode()) <= FINAL_TEXT_CAP
    assert run.final_text.endswith(lines[-1].strip())
    assert "line 000000" not in run.final_text


def test_one_huge_line_is_cut_to_the_cap() -> None:
    run = parse(["y" * (FINAL_TEXT_CAP * 3) + "END\n"])
    assert len(run.final_text.encode()) <= FINAL_TEXT_CAP
    assert run.final_text.endswith("END")


def berlin_5am_tomorrow() -> float:
    return datetime(2026, 11, 24, 5, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


@pytest.mark.parametrize(("lines", "process", "outcome", "reset_at", "status"), [
    (["partial work\n"], exited(1, "Error: 429 Too Many Requests\n"), Outcome.RATE_LIMITED, None, 429),
    (["You've hit your limit · resets 5am (Europe/Berlin)\n"], exited(1), Outcome.RATE_LIMITED,
     berlin_5am_tomorrow(), None),
    (["Claude AI usage limit reached|1795500000\n"], exited(1), Outcome.RATE_LIMITED, 1795500000.0, None),
    (["working\n"], exited(2, "API Error: 529 Overloaded\n"), Outcome.OVERLOADED, None, 529),
    (["working\n"], exited(1, "Invalid API key · Please run /login\n"), Outcome.AUTH_EXPIRED, None, None),
    # exit 0 with a limit message as the last word: the CLI did nothing, so it must not count as done
    (["You've hit your usage limit. Try again in 3 hours.\n"], EXITED_0, Outcome.RATE_LIMITED,
     NOW + 3 * 3600, None),
])
def test_limits_from_the_tails(lines: list[str], process: ProcessResult, outcome: Outcome,
                               reset_at: float | None, status: int | None) -> None:
    run = parse(lines, process)
    assert run.outcome is outcome
    assert run.reset_at == (pytest.approx(reset_at) if reset_at is not None else None)
    assert run.api_error_status == status
    assert run.error_message is not None


def test_an_ok_run_may_mention_limits_in_its_summary() -> None:
    lines = ["Added retry handling for 429 Too Many Requests and rate limit exceeded errors.\n",
             "All tests pass.\n"]
    assert parse(lines).outcome is Outcome.OK


def test_retry_warnings_on_stderr_do_not_fail_a_run_that_exited_0() -> None:
    process = ProcessResult(exit_code=0, signal=None,
                            stderr_tail="warning: 529 overloaded, retrying\nwarning: rate limit exceeded\n")
    assert parse(["Done.\n"], process).outcome is Outcome.OK


def test_the_error_sentence_quotes_the_matching_line() -> None:
    run = parse(["step 1\n", "step 2\n", "Error: exceeded retry limit, last status: 429 Too Many Requests\n",
                 "bye\n"], exited(1))
    assert run.error_message == ("rate or usage limit reached: "
                                 "Error: exceeded retry limit, last status: 429 Too Many Requests")


def test_tool_specific_patterns() -> None:
    limits = LimitPatterns(rate_limited=("QUOTA-KAPUT",), overloaded=(), auth_expired=())
    run = parse(["QUOTA-KAPUT retry in 90 seconds\n"], exited(4), limits)
    assert (run.outcome, run.reset_at) == (Outcome.RATE_LIMITED, NOW + 90)
    assert parse(["429 Too Many Requests\n"], exited(4), limits).outcome is Outcome.CRASHED


@pytest.mark.parametrize(("process", "outcome", "parts"), [
    (exited(2, "Traceback ...\nValueError: bad flag\n"), Outcome.CRASHED,
     ["exited with code 2", "ValueError: bad flag", "last error: half way"]),
    (ProcessResult(exit_code=None, signal=signal.SIGKILL), Outcome.CRASHED, ["killed by SIGKILL"]),
    (ProcessResult(exit_code=None, signal=signal.SIGTERM, timed_out=True, duration_s=90),
     Outcome.TIMEOUT, ["wall-clock timeout", "90 s"]),
    (ProcessResult(exit_code=None, signal=signal.SIGTERM, idle_timed_out=True, duration_s=300),
     Outcome.TIMEOUT, ["printed nothing", "300 s"]),
    (ProcessResult(exit_code=None, signal=signal.SIGTERM, idle_timed_out=True, duration_s=300,
                   stderr_tail="Retrying: 503 Service Unavailable\n"), Outcome.OVERLOADED,
     ["while the CLI was retrying", "printed nothing"]),
    (ProcessResult(exit_code=0, signal=None, timed_out=True, duration_s=5), Outcome.TIMEOUT,
     ["wall-clock"]),
])
def test_process_level_verdicts(process: ProcessResult, outcome: Outcome, parts: list[str]) -> None:
    run = parse(["half way\n"], process)
    assert run.outcome is outcome
    for part in parts:
        assert run.error_message is not None and part in run.error_message
    assert run.final_text == "half way"


def test_no_live_signal_from_prose() -> None:
    parser = make_parser("text", now=NOW)
    parser.feed_line("You've hit your limit · resets 5am (Europe/Berlin)\n")
    assert parser.live_limit() is None


def test_garbage_never_raises() -> None:
    parser = make_parser("text", now=NOW)
    for line in ["\x00\xff", "", "\r\n", "{" * 10_000, "é" * 10, "\ud800 lone surrogate"]:
        parser.feed_line(line)
    assert parser.finish(exited(1)).outcome is Outcome.CRASHED


# --- the registry ---------------------------------------------------------------------------------------


def test_parser_names() -> None:
    assert PARSER_NAMES == ("claude-json", "claude-stream-json", "codex-jsonl", "text")
    for name in PARSER_NAMES:
        parser = make_parser(name)
        assert parser.name == name
        assert parser.live_limit() is None


def test_unknown_parser_names_the_known_ones() -> None:
    with pytest.raises(UnknownParserError) as caught:
        make_parser("claud-json")
    assert isinstance(caught.value, ConveyorError)
    assert str(caught.value) == ("unknown output parser 'claud-json'; known parsers: claude-json, "
                                 "claude-stream-json, codex-jsonl, text")


def test_now_may_be_a_clock_read_when_the_limit_arrives() -> None:
    moments = iter([1000.0, 5000.0])
    parser = make_parser("text", now=lambda: next(moments))
    parser.feed_line("You've hit your usage limit. Try again in 10 seconds.\n")
    assert parser.finish(exited(1)).reset_at == 1010.0


def test_without_now_the_parser_uses_the_real_clock() -> None:
    parser = make_parser("codex-jsonl")
    parser.feed_line('{"type": "error", "message": "You\'ve hit your usage limit. Try again in 2 hours."}')
    live = parser.live_limit()
    assert live is not None and live[1] is not None
    assert abs(live[1] - (datetime.now(UTC).timestamp() + 7200)) < 600
