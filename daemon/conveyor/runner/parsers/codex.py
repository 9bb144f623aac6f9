"""OpenAI Codex `codex exec --json` output (JSONL events, measured on 0.169.0; see tests/fixtures/agent-output/).

`thread.started` names the session, `item.completed` carries the agent's messages, `turn.completed` the
usage, and a failure is `error` events (one per retry: "Reconnecting... N/M (...)") then `turn.failed`.

Tokens: OpenAI's `input_tokens` includes the cached part, so full-rate input is `input_tokens -
cached_input_tokens`. `output_tokens` already includes the reasoning tokens (OpenAI Responses API: the
reasoning count is a breakdown of the output count, and `max_output_tokens` caps "both reasoning and final
output tokens"; codex's own `TokenUsage::blended_total` is non-cached input + `output_tokens`, never adding
`reasoning_output_tokens`), so `reasoning_output_tokens` is not added again. Codex reports no cost and no
model: both stay None for the caller to fill from models.yaml and its own argv.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any

from conveyor.runner.parsers.base import (
    Clock,
    JsonLinesParser,
    as_int,
    as_str,
    cap_tail,
    describe_limit,
    quote,
    settle,
)
from conveyor.runner.parsers.limits import LimitPatterns, LimitVerdict, classify_text, extract_status
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult, Tokens

_PROGRESS_ITEMS = {"agent_message", "command_execution", "file_change", "reasoning", "mcp_tool_call",
                   "web_search", "todo_list"}


def _tokens(usage: object) -> Tokens:
    if not isinstance(usage, dict):
        return Tokens()
    cached = as_int(usage.get("cached_input_tokens"))
    return Tokens(input=max(as_int(usage.get("input_tokens")) - cached, 0),
                  output=as_int(usage.get("output_tokens")), cache_read=cached,
                  cache_write=as_int(usage.get("cache_write_input_tokens")))


def _failure_message(obj: dict[str, Any]) -> str:
    error = obj.get("error")
    if isinstance(error, dict):
        return as_str(error.get("message")) or "turn failed without a message"
    return as_str(error) or as_str(obj.get("message")) or "turn failed without a message"


class CodexParser(JsonLinesParser):
    """Parses `codex exec --json` stdout."""

    name = "codex-jsonl"

    def __init__(self, *, limits: LimitPatterns, clock: Clock, tz: tzinfo = UTC) -> None:
        self._limits, self._clock, self._tz = limits, clock, tz
        self._thread_id: str | None = None
        self._tokens = Tokens()
        self._turns = 0
        self._last_message = ""
        self._failure: str | None = None          # message of the last turn.failed, if that ended the run
        self._last_error: str | None = None
        self._ended = False
        self._live: LimitVerdict | None = None
        self._retries = 0

    def _handle(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "thread.started":
            self._thread_id = as_str(obj.get("thread_id")) or self._thread_id
        elif kind in ("item.started", "item.completed"):
            self._on_item(obj, completed=kind == "item.completed")
        elif kind == "turn.completed":
            self._tokens = self._tokens + _tokens(obj.get("usage"))
            self._turns += 1
            self._ended, self._failure, self._live = True, None, None
        elif kind == "turn.failed":
            self._turns += 1
            self._ended, self._failure = True, _failure_message(obj)
        elif kind == "error":
            self._on_error(as_str(obj.get("message")) or "")

    def _on_item(self, obj: dict[str, Any], *, completed: bool) -> None:
        item = obj.get("item")
        if not isinstance(item, dict) or item.get("type") not in _PROGRESS_ITEMS:
            return                     # `error` items ("Model metadata ... not found") are only warnings
        self._live = None              # the model is producing work again: any retry episode has passed
        if completed and item.get("type") == "agent_message" and isinstance(item.get("text"), str):
            self._last_message = cap_tail(item["text"])

    def _on_error(self, message: str) -> None:
        self._last_error = message or self._last_error
        if message.startswith("Reconnecting"):
            self._retries += 1
        verdict = classify_text(message, self._limits, self._clock(), default_tz=self._tz)
        if verdict is not None:
            self._live = verdict

    def live_limit(self) -> LimitVerdict | None:
        return self._live

    def finish(self, process: ProcessResult) -> ParsedRun:
        run = ParsedRun(final_text=self._last_message, session_id=self._thread_id,
                        turns=self._turns or None, tokens=self._tokens, retries=self._retries)
        if self._ended:
            self._judge(run)
        self._log_skipped()
        if not self._ended and self._last_error:
            run.api_error_status = extract_status(self._last_error)
        return settle(run, process, has_result=self._ended, live=self._live, last_error=self._last_error)

    def _judge(self, run: ParsedRun) -> None:
        if self._failure is None:
            run.outcome = Outcome.OK
            return
        run.api_error_status = extract_status(self._failure)
        verdict = classify_text(self._failure, self._limits, self._clock(), default_tz=self._tz)
        if verdict is None:
            run.outcome = Outcome.AGENT_ERROR
            run.error_message = f"the agent's turn failed: {quote(self._failure)}"
            return
        run.outcome, run.reset_at = verdict
        run.error_message = f"{describe_limit(*verdict)}: {quote(self._failure)}"
