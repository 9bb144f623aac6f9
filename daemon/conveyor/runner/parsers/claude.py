"""Claude Code's `--output-format json` and `stream-json` output.

Both end with the same `result` object; stream-json adds `system/init`, `system/api_retry`, messages and
`rate_limit_event` lines on the way, which is how limits show up while the CLI is still retrying.
A failed run keeps `subtype: "success"` (measured on 2.1.328: tests/fixtures/agent-output/), so the verdict comes from
`is_error`, `api_error_status` and `terminal_reason`; the only subtypes that matter are the error ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
from conveyor.runner.parsers.limits import LimitPatterns, LimitVerdict, classify_text, outcome_for_status
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult, Tokens

# api_retry `error` values (captured in tests/fixtures/agent-output/) for retries that report no HTTP status.
_RETRY_ERRORS = {"rate_limit": Outcome.RATE_LIMITED, "overloaded": Outcome.OVERLOADED,
                 "server_error": Outcome.OVERLOADED, "authentication_failed": Outcome.AUTH_EXPIRED}
_SYNTHETIC_MODEL = "<synthetic>"          # the model name claude puts on its own error messages
_DENIAL_KEYS = ("file_path", "command", "path", "url", "pattern", "notebook_path")


@dataclass
class _Result:
    """The fields of a `result` object that a verdict needs (the object itself is dropped)."""

    is_error: bool
    subtype: str | None
    text: str
    num_turns: int | None
    cost_usd: float | None
    tokens: Tokens
    model: str | None
    terminal_reason: str | None
    api_error_status: int | None
    denials: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _tokens(usage: object) -> Tokens:
    if not isinstance(usage, dict):
        return Tokens()
    return Tokens(input=as_int(usage.get("input_tokens")), output=as_int(usage.get("output_tokens")),
                  cache_read=as_int(usage.get("cache_read_input_tokens")),
                  cache_write=as_int(usage.get("cache_creation_input_tokens")))


def _busiest_model(model_usage: object) -> str | None:
    """The `modelUsage` key with the most tokens (a run can use a small model for side jobs)."""
    if not isinstance(model_usage, dict):
        return None
    best, best_total = None, -1
    for name, stats in model_usage.items():
        if not isinstance(stats, dict) or not isinstance(name, str):
            continue
        total = sum(as_int(stats.get(key)) for key in
                    ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens"))
        if total > best_total:
            best, best_total = name, total
    return best


def _denial(item: object) -> str:
    """One permission denial as `Tool: what` (e.g. `Write: /repo/a.txt`)."""
    if not isinstance(item, dict):
        return quote(str(item), 200)
    tool = as_str(item.get("tool_name")) or "tool"
    tool_input = item.get("tool_input")
    if isinstance(tool_input, dict):
        for key in _DENIAL_KEYS:
            target = as_str(tool_input.get(key))
            if target:
                return quote(f"{tool}: {target}", 200)
        return quote(f"{tool}: {json.dumps(tool_input, sort_keys=True, default=str)}", 200)
    return tool


def _cost(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _read_result(obj: dict[str, Any]) -> _Result:
    denials = obj.get("permission_denials")
    errors = obj.get("errors")
    status = obj.get("api_error_status")
    turns = obj.get("num_turns")
    return _Result(
        is_error=obj.get("is_error") is True, subtype=as_str(obj.get("subtype")),
        text=cap_tail(obj["result"]) if isinstance(obj.get("result"), str) else "",
        num_turns=as_int(turns) if isinstance(turns, int) and not isinstance(turns, bool) else None,
        cost_usd=_cost(obj.get("total_cost_usd")), tokens=_tokens(obj.get("usage")),
        model=_busiest_model(obj.get("modelUsage")), terminal_reason=as_str(obj.get("terminal_reason")),
        api_error_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
        denials=[_denial(item) for item in denials] if isinstance(denials, list) else [],
        errors=[quote(str(e), 300) for e in errors] if isinstance(errors, list) else [])


class ClaudeParser(JsonLinesParser):
    """Parses `claude -p --output-format json|stream-json [--verbose]` stdout."""

    def __init__(self, name: str, *, limits: LimitPatterns, clock: Clock, tz: tzinfo = UTC) -> None:
        self.name = name
        self._limits, self._clock, self._tz = limits, clock, tz
        self._session_id: str | None = None
        self._init_model: str | None = None
        self._message_model: str | None = None
        self._last_text = ""
        self._result: _Result | None = None
        self._live: LimitVerdict | None = None
        self._window_reset: float | None = None
        self._api_error: tuple[int | None, str] | None = None
        self._retries = 0

    # --- feeding ---------------------------------------------------------------------------------

    def _handle(self, obj: dict[str, Any]) -> None:
        session_id = as_str(obj.get("session_id"))
        if session_id:
            self._session_id = session_id
        kind = obj.get("type")
        if kind == "system":
            self._on_system(obj)
        elif kind == "assistant":
            self._on_assistant(obj)
        elif kind == "rate_limit_event":
            self._on_rate_limit_event(obj)
        elif kind == "result":
            self._result = _read_result(obj)

    def _on_system(self, obj: dict[str, Any]) -> None:
        if obj.get("subtype") == "init":
            self._init_model = as_str(obj.get("model")) or self._init_model
        elif obj.get("subtype") == "api_retry":
            self._retries += 1
            status = obj.get("error_status")
            outcome = outcome_for_status(status if isinstance(status, int) else None)
            outcome = outcome or _RETRY_ERRORS.get(str(obj.get("error")))
            if outcome is not None:
                self._live = (outcome, self._window_reset if outcome is Outcome.RATE_LIMITED else None)

    def _on_assistant(self, obj: dict[str, Any]) -> None:
        message = obj.get("message")
        if not isinstance(message, dict):
            return
        text = "\n".join(block["text"] for block in message.get("content") or []
                         if isinstance(block, dict) and isinstance(block.get("text"), str))
        if obj.get("is_api_error_message") is True:
            status = obj.get("api_error_status")
            self._api_error = (status if isinstance(status, int) else None, text)
            return
        model = as_str(message.get("model"))
        if model and model != _SYNTHETIC_MODEL:
            self._message_model = model
        if text:
            self._last_text = cap_tail(text)
        self._live = None              # the model answered: whatever the CLI was retrying has passed

    def _on_rate_limit_event(self, obj: dict[str, Any]) -> None:
        """`{"rate_limit_info": {"status": "allowed|allowed_warning|rejected", "resetsAt": epoch}}`.

        Only `rejected` stops work; the others are warnings (nanocoai/nanoclaw#3016,
        framework/the-framework#517 describe the shape).
        """
        info = obj.get("rate_limit_info")
        if not isinstance(info, dict) or info.get("status") != "rejected":
            return
        resets_at = info.get("resetsAt")
        self._window_reset = float(as_int(resets_at)) if as_int(resets_at) > 0 else None
        self._live = (Outcome.RATE_LIMITED, self._window_reset)

    # --- asking ----------------------------------------------------------------------------------

    def live_limit(self) -> LimitVerdict | None:
        return self._live

    def finish(self, process: ProcessResult) -> ParsedRun:
        run = ParsedRun(session_id=self._session_id, retries=self._retries,
                        model=self._init_model or self._message_model, final_text=self._last_text)
        if self._api_error is not None:
            run.api_error_status, run.error_message = self._api_error[0], quote(self._api_error[1]) or None
        if self._result is not None:
            self._apply_result(run, self._result)
        self._log_skipped()
        last_error = self._api_error[1] if self._api_error else None
        return settle(run, process, has_result=self._result is not None, live=self._live,
                      last_error=last_error)

    def _apply_result(self, run: ParsedRun, result: _Result) -> None:
        run.final_text = result.text
        run.turns, run.cost_usd, run.tokens = result.num_turns, result.cost_usd, result.tokens
        run.model = result.model or run.model
        run.permission_denials = result.denials
        status = result.api_error_status or run.api_error_status
        run.outcome, run.error_message, run.reset_at = self._verdict(result, status)
        run.api_error_status = None if run.outcome is Outcome.OK else status
        if run.error_message and result.denials:
            run.error_message += f"; denied tool calls: {', '.join(result.denials)}"

    def _verdict(self, result: _Result, status: int | None) -> tuple[Outcome, str | None, float | None]:
        if result.subtype == "error_max_turns":
            return Outcome.AGENT_ERROR, (f"the agent stopped at the turn limit (--max-turns) after "
                                         f"{result.num_turns} turns without finishing"), None
        if result.subtype == "error_max_budget_usd":
            spent = f"${result.cost_usd:.2f}" if result.cost_usd is not None else "its budget"
            return Outcome.AGENT_ERROR, (f"the agent stopped at the spending limit (--max-budget-usd) "
                                         f"after spending {spent}"), None
        failed = (result.is_error or result.api_error_status is not None
                  or result.terminal_reason == "api_error"
                  or (result.subtype or "success") != "success")
        if not failed:
            return Outcome.OK, None, None
        limit = self._limit(result, status)
        if limit is not None:
            outcome, reset_at = limit
            reason = quote(result.text) or result.terminal_reason or "no details"
            return outcome, f"{describe_limit(outcome, reset_at)}: {reason}", reset_at
        return Outcome.AGENT_ERROR, self._error_sentence(result, status), None

    def _limit(self, result: _Result, status: int | None) -> LimitVerdict | None:
        """A provider limit behind a failed result: the HTTP status first, then the words."""
        by_text = classify_text(" ".join([result.text, *result.errors]), self._limits, self._clock(),
                                default_tz=self._tz)
        outcome = outcome_for_status(status) or (by_text[0] if by_text else None)
        if outcome is None:
            return None
        reset_at = by_text[1] if by_text and by_text[0] is outcome else None
        if outcome is Outcome.RATE_LIMITED and reset_at is None:
            reset_at = self._window_reset
        return outcome, reset_at

    @staticmethod
    def _error_sentence(result: _Result, status: int | None) -> str:
        parts = [f"the agent reported an error ({result.subtype or 'no subtype'}"
                 + (f", terminal_reason {result.terminal_reason}" if result.terminal_reason else "")
                 + (f", HTTP {status}" if status is not None else "") + ")"]
        if result.text:
            parts.append(quote(result.text))
        if result.errors:
            parts.append("; ".join(result.errors))
        return ": ".join(parts)
