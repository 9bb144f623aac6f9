"""Plain-text CLIs described only in tools.yaml: the final text is the end of stdout, the verdict comes
from the exit code and the limit patterns.

A text CLI has no result object, so "exited 0" is the only success signal. Limit words are looked for
in the stderr tail and the stdout tail when the CLI failed. When it exited 0, only its last stdout line
counts: stderr then holds warnings about retries that succeeded, and the agent's summary may mention
"429" in passing, but a CLI whose final word is "You've hit your limit" did nothing, and calling that
run "ok" would close the task as done with nothing done.
"""

from __future__ import annotations

from datetime import UTC, tzinfo

from conveyor.runner.parsers.base import (
    FINAL_TEXT_CAP,
    Clock,
    TailBuffer,
    describe_limit,
    quote,
    settle,
)
from conveyor.runner.parsers.limits import LimitPatterns, LimitVerdict, classify_text, extract_status
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult

SCAN_WINDOW = 8192                # bytes of the stdout tail checked for limits after a failure


class TextParser:
    """Keeps the last 64 KiB of stdout and judges the run by exit code and limit patterns."""

    name = "text"

    def __init__(self, *, limits: LimitPatterns, clock: Clock, tz: tzinfo = UTC) -> None:
        self._limits, self._clock, self._tz = limits, clock, tz
        self._tail = TailBuffer(FINAL_TEXT_CAP)

    def feed_line(self, line: str) -> None:
        self._tail.append(line)

    def live_limit(self) -> LimitVerdict | None:
        """Always None: plain text has no retry events, and acting on prose that merely mentions a limit
        would stop healthy runs. The verdict waits for the exit code."""
        return None

    def finish(self, process: ProcessResult) -> ParsedRun:
        stdout = self._tail.text()
        run = ParsedRun(final_text=stdout.strip())
        failed = process.exit_code != 0 or process.signal is not None
        if failed:
            evidence = f"{process.stderr_tail[-SCAN_WINDOW:]}\n{stdout[-SCAN_WINDOW:]}"
        else:
            evidence = self._tail.last_line()
        verdict = classify_text(evidence, self._limits, self._clock(), default_tz=self._tz)
        if verdict is not None and not (process.timed_out or process.idle_timed_out):
            run.outcome, run.reset_at = verdict
            run.api_error_status = extract_status(evidence)
            run.error_message = f"{describe_limit(*verdict)}: {quote(self._excerpt(evidence))}"
            return run
        if process.exit_code == 0 and process.signal is None:
            run.outcome = Outcome.OK
            return settle(run, process, has_result=True, live=None)
        return settle(run, process, has_result=False, live=verdict,
                      last_error=self._tail.last_line() or None)

    def _excerpt(self, evidence: str) -> str:
        """The line that matched, so the error sentence quotes the CLI rather than a screenful."""
        for line in reversed(evidence.splitlines()):
            if self._limits.first_match(line):
                return line
        return evidence
