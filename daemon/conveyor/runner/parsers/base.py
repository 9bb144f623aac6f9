"""What every output parser offers the supervisor, and the pieces they share.

A parser sees stdout one line at a time while the CLI runs (`feed_line`), can be asked mid-run whether a
provider limit has shown up (`live_limit`), and turns what it kept into a `ParsedRun` once the process has
ended (`finish`). It keeps summaries only, never the transcript, so memory stays flat however long the
agent talks, and it never raises on what the CLI prints: banners, garbage and cut-off JSON are skipped.
"""

from __future__ import annotations

import json
import signal
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from conveyor.core.timeutil import utc_iso
from conveyor.runner.parsers.limits import LimitVerdict
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult

Clock = Callable[[], float]

FINAL_TEXT_CAP = 64 * 1024        # bytes of final text kept for the task result and the pull request
MESSAGE_CAP = 1000                # characters of CLI text quoted in an error sentence
STDERR_QUOTE_CAP = 1500           # characters of stderr quoted in a crash sentence


class OutputParser(Protocol):
    """Turns one invocation's stdout into a `ParsedRun`, incrementally and in bounded memory."""

    name: str

    def feed_line(self, line: str) -> None:
        """Take one stdout line (without or with its newline); never raises."""

    def live_limit(self) -> LimitVerdict | None:
        """A rate-limit, overload or auth signal seen so far while the CLI is still retrying, if any."""

    def finish(self, process: ProcessResult) -> ParsedRun:
        """Everything learned, judged together with how the process ended."""


class JsonLinesParser:
    """The line loop of the JSON-per-line parsers (claude, codex): each object goes to `_handle`; a line
    that is not JSON, or an object `_handle` chokes on, is counted and skipped, never raised."""

    name: str
    _skipped: int = 0

    def feed_line(self, line: str) -> None:
        objects = json_objects(line)
        if not objects:
            self._skipped += bool(line.strip())
            return
        for obj in objects:
            try:
                self._handle(obj)
            except Exception:          # a parser must never take the supervisor down; keep what we have
                self._skipped += 1
                structlog.get_logger().warning("parser_line_failed", parser=self.name, exc_info=True)

    def _handle(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def _log_skipped(self) -> None:
        if self._skipped:
            structlog.get_logger().debug("parser_skipped_lines", parser=self.name, count=self._skipped)


def json_objects(line: str) -> list[dict[str, Any]]:
    """The JSON objects on one line: one object, the objects of an array, or none for anything else."""
    text = line.strip()
    if not text or text[0] not in "{[":
        return []
    try:
        value = json.loads(text)
    except ValueError:                 # cut-off or garbled JSON (json.JSONDecodeError is a ValueError)
        return []
    except RecursionError:             # absurdly nested input must not take the supervisor down
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def as_int(value: object) -> int:
    """A non-negative count from JSON, 0 for anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


def as_str(value: object) -> str | None:
    """A non-empty string from JSON, else None."""
    return value if isinstance(value, str) and value else None


def cap_tail(text: str, limit_bytes: int = FINAL_TEXT_CAP) -> str:
    """The last `limit_bytes` bytes of `text` (UTF-8), cut on a character boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit_bytes:
        return text
    return data[-limit_bytes:].decode("utf-8", errors="ignore")


def quote(text: str, limit: int = MESSAGE_CAP) -> str:
    """`text` on one line, shortened for an error sentence."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class TailBuffer:
    """The last `limit_bytes` of a stream of lines, without ever holding more."""

    def __init__(self, limit_bytes: int = FINAL_TEXT_CAP) -> None:
        self._limit = limit_bytes
        self._lines: deque[str] = deque()
        self._size = 0

    def append(self, line: str) -> None:
        line = cap_tail(line.rstrip("\r\n"), self._limit)
        size = len(line.encode("utf-8", errors="replace")) + 1
        self._lines.append(line)
        self._size += size
        while self._size > self._limit and len(self._lines) > 1:
            dropped = self._lines.popleft()
            self._size -= len(dropped.encode("utf-8", errors="replace")) + 1

    def text(self) -> str:
        return "\n".join(self._lines)

    def last_line(self) -> str:
        """The last line that is not blank."""
        for line in reversed(self._lines):
            if line.strip():
                return line
        return ""


def describe_limit(outcome: Outcome, reset_at: float | None) -> str:
    """A sentence naming the provider limit and when it lifts."""
    words = {Outcome.RATE_LIMITED: "rate or usage limit reached",
             Outcome.OVERLOADED: "provider overloaded or unreachable",
             Outcome.AUTH_EXPIRED: "authentication failed: log the CLI in again"}
    text = words.get(outcome, outcome.value)
    if reset_at is not None and outcome is not Outcome.AUTH_EXPIRED:
        text += f" (lifts at {utc_iso(reset_at)})"
    return text


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _with_stderr(message: str, process: ProcessResult) -> str:
    tail = process.stderr_tail.strip()
    if not tail:
        return message
    return f"{message}; stderr: {quote(tail[-STDERR_QUOTE_CAP:], STDERR_QUOTE_CAP)}"


def timeout_message(process: ProcessResult) -> str:
    """Which timeout stopped the CLI, and after how long."""
    if process.idle_timed_out:
        return (f"timed out: the CLI printed nothing for the idle timeout and was stopped after "
                f"{process.duration_s:.0f} s")
    return f"timed out: the CLI hit the wall-clock timeout and was stopped after {process.duration_s:.0f} s"


def crash_message(process: ProcessResult, last_error: str | None = None) -> str:
    """Why a run without a result counts as crashed, with the CLI's last words."""
    if process.stopped:
        message = "stopped by the daemon before the CLI printed a result"
    elif process.signal is not None or process.exit_code is None:
        name = _signal_name(process.signal) if process.signal is not None else "an unknown signal"
        message = f"the CLI was killed by {name} before it printed a result"
    elif process.exit_code != 0:
        message = f"the CLI exited with code {process.exit_code} without a result object"
    else:
        message = "the CLI exited 0 but printed no result object"
    if last_error:
        message += f"; last error: {quote(last_error)}"
    return _with_stderr(message, process)


def settle(run: ParsedRun, process: ProcessResult, *, has_result: bool, live: LimitVerdict | None,
           last_error: str | None = None) -> ParsedRun:
    """Judge the parser's reading of stdout together with how the process ended.

    A result object decides, unless we stopped the CLI for a timeout. A provider limit seen while the CLI
    was retrying wins over a timeout, a kill or a missing result: the CLI was stuck on the provider, which
    is not the task's fault (and the daemon may have stopped it for exactly that reason).
    """
    timed_out = process.timed_out or process.idle_timed_out
    if has_result and not timed_out:
        return run
    if has_result and run.outcome.is_provider_limit:
        return run
    if live is not None:
        outcome, reset_at = live
        run.outcome, run.reset_at = outcome, reset_at
        ended = timeout_message(process) if timed_out else crash_message(process, last_error)
        run.error_message = f"{describe_limit(outcome, reset_at)} while the CLI was retrying ({ended})"
        return run
    if timed_out:
        run.outcome, run.error_message = Outcome.TIMEOUT, timeout_message(process)
        return run
    run.outcome, run.error_message = Outcome.CRASHED, crash_message(process, last_error)
    return run
