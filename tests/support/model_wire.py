"""How a script step looks on the wire: Anthropic Messages API and OpenAI Responses API bodies and events.

Shapes follow what the pinned claude (2.1.328) and codex (0.169.0) accept, measured against the real
CLIs (their captured output: tests/fixtures/agent-output/). Usage given here is in `Tokens` terms; each
API's own convention is applied on the way out (OpenAI counts cached input inside `input_tokens`, Anthropic does not).
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from pathlib import PurePosixPath
from typing import Any

from conveyor.runner.types import Tokens
from tests.support.model_script import Action, Reply, RunCommand, tool_names, working_directory

Event = tuple[str, dict[str, Any]]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def shell_write_command(path: str, content: str) -> str:
    """A POSIX shell command that writes `content` to `path` exactly, creating parent directories."""
    parent = str(PurePosixPath(path).parent)
    mkdir = f"mkdir -p {shlex.quote(parent)} && " if parent not in ("", ".") else ""
    return f"{mkdir}printf '%s' {shlex.quote(content)} > {shlex.quote(path)}"


# ------------------------------------------------------------------------------------------- anthropic
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                          500: "api_error", 529: "overloaded_error"}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message or kind}}


def anthropic_usage(usage: Tokens) -> dict[str, int]:
    return {"input_tokens": usage.input, "cache_creation_input_tokens": usage.cache_write,
            "cache_read_input_tokens": usage.cache_read, "output_tokens": usage.output}


def anthropic_blocks(action: Action, body: Any) -> tuple[list[dict[str, Any]], str]:
    """Content blocks and stop reason that carry out `action` in claude.

    A file is written with the `Write` tool, which needs an absolute path (the cwd is read from the
    request), or else with a `Bash` printf, which runs in the cwd. Raises ValueError when neither works.
    """
    if isinstance(action, Reply):
        return [{"type": "text", "text": action.text}], "end_turn"
    if isinstance(action, RunCommand):
        return [_tool_use("Bash", {"command": action.cmd, "description": "Run a command"})], "tool_use"
    path = _absolute(action.path, body)
    offered = tool_names(body)
    if path is not None and ("Write" in offered or "Bash" not in offered):
        return [_tool_use("Write", {"file_path": path, "content": action.content})], "tool_use"
    if "Bash" not in offered:
        raise ValueError(f"cannot write {action.path!r}: the request states no working directory and "
                         "offers no Bash tool")
    command = shell_write_command(path or action.path, action.content)
    return [_tool_use("Bash", {"command": command, "description": "Write a file"})], "tool_use"


def _tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": new_id("toolu"), "name": name, "input": tool_input}


def _absolute(path: str, body: Any) -> str | None:
    if path.startswith("/"):
        return path
    cwd = working_directory(body)
    return None if cwd is None else str(PurePosixPath(cwd) / path)


def anthropic_message(blocks: list[dict[str, Any]], stop_reason: str, model: str,
                      usage: Tokens) -> dict[str, Any]:
    return {"id": new_id("msg"), "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": anthropic_usage(usage)}


def anthropic_events(message: dict[str, Any]) -> list[Event]:
    """The SSE events of a streamed Messages API answer, in the real API's order.

    As the real API does, `message_start` carries the input usage and a token of output, and
    `message_delta` the final usage; claude keeps the last value (it does not add them up).
    """
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": min(1, usage["output_tokens"])}}
    events: list[Event] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        events.extend(_block_events(index, block))
    events.append(("message_delta", {"type": "message_delta", "usage": usage,
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: dict[str, Any]) -> list[Event]:
    if block["type"] == "text":
        empty: dict[str, Any] = {"type": "text", "text": ""}
        delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
    else:
        empty = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    return [("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index})]


# ---------------------------------------------------------------------------------------------- openai
_OPENAI_ERROR_CODES = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    code = _OPENAI_ERROR_CODES.get(status, "server_error")
    return {"error": {"message": message or f"err {status}", "type": code, "param": None, "code": code}}


def openai_usage(usage: Tokens) -> dict[str, Any]:
    """Responses API usage: `input_tokens` includes the cached part (codex 0.169.0 also reads
    `input_tokens_details.cache_write_tokens` into its `cache_write_input_tokens`)."""
    total_input = usage.input + usage.cache_read
    return {"input_tokens": total_input,
            "input_tokens_details": {"cached_tokens": usage.cache_read, "cache_write_tokens": usage.cache_write},
            "output_tokens": usage.output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": total_input + usage.output}


def openai_item(action: Action) -> dict[str, Any]:
    """The output item that carries out `action` in codex: an `exec_command` call, or a message."""
    if isinstance(action, Reply):
        return {"id": new_id("msg"), "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": action.text, "annotations": []}]}
    cmd = action.cmd if isinstance(action, RunCommand) else shell_write_command(action.path, action.content)
    return {"id": new_id("fc"), "type": "function_call", "status": "completed", "call_id": new_id("call"),
            "name": "exec_command", "arguments": json.dumps({"cmd": cmd, "login": False})}


def openai_response(model: str, status: str, output: list[dict[str, Any]],
                    usage: Tokens | None) -> dict[str, Any]:
    return {"id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": status,
            "model": model, "output": output, "usage": openai_usage(usage) if usage else None}


def openai_created(model: str) -> Event:
    return ("response.created", {"type": "response.created", "sequence_number": 0,
                                 "response": openai_response(model, "in_progress", [], None)})


def openai_events(model: str, item: dict[str, Any], usage: Tokens) -> list[Event]:
    """The SSE events of a streamed Responses API answer with one output item."""
    name, created = openai_created(model)
    pending = {**item, "status": "in_progress"}
    if item["type"] == "message":
        pending["content"] = []
    else:
        pending["arguments"] = ""
    events: list[Event] = [(name, created), ("response.output_item.added", {
        "type": "response.output_item.added", "output_index": 0, "item": pending})]
    if item["type"] == "message":
        events.append(("response.output_text.delta", {
            "type": "response.output_text.delta", "item_id": item["id"], "output_index": 0, "content_index": 0,
            "delta": item["content"][0]["text"]}))
    events.append(("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                                 "item": item}))
    done = {**created["response"], "status": "completed", "output": [item], "usage": openai_usage(usage)}
    events.append(("response.completed", {"type": "response.completed", "response": done}))
    for number, (_, data) in enumerate(events):
        data["sequence_number"] = number
    return events
