"""An agent's captured output as a person reads it: turns, tool calls and their results, the final result.

The logs hold what the CLI printed: claude's stream-json or json records, codex's JSONL events, or plain
text, with stderr lines prefixed `[stderr] `. `conveyor logs` shows them through `render_line` (one input
line → zero or more readable lines); `--raw` shows the bytes as captured. Unknown records are summarised
by their type, never dumped: a multi-kilobyte init record helps nobody reading what the agent did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from conveyor.runner.parsers.base import quote

SHOWN_CHARS = 400     # of a tool's input or result


def render_lines(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        yield from render_line(line.rstrip("\n"))


def render_line(line: str) -> list[str]:
    """Readable lines for one captured line (a JSON record, a stderr line or plain text)."""
    stripped = line.strip()
    if not stripped.startswith("{"):
        return [line] if stripped else []
    try:
        record = json.loads(stripped)
    except ValueError:
        return [line]
    if not isinstance(record, dict):
        return [line]
    kind = str(record.get("type", ""))
    if kind in ("system", "assistant", "user", "result"):
        return _claude(kind, record)
    if kind.startswith(("item.", "turn.", "thread.")) or kind == "error":
        return _codex(kind, record)
    return [f"· {kind or 'record'}"]


def _short(value: Any, limit: int = SHOWN_CHARS) -> str:
    return quote(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), limit)


def _claude(kind: str, record: dict[str, Any]) -> list[str]:
    if kind == "system":
        return _claude_system(record)
    if kind == "result":
        cost = record.get("total_cost_usd")
        parts = [str(record.get("subtype", "?")), f"{record.get('num_turns', '?')} turn(s)"]
        if isinstance(cost, int | float):
            parts.append(f"${cost:.4f}")
        if isinstance(record.get("duration_ms"), int | float):
            parts.append(f"{record['duration_ms'] / 1000:.1f} s")
        lines = [f"── result: {', '.join(parts)}"]
        if record.get("result"):
            lines.append(f"   {_short(record['result'], 2000)}")
        return lines
    message = record.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [f"{'agent' if kind == 'assistant' else 'user'}: {_short(content)}"]
    return [line for block in (content if isinstance(content, list) else []) if isinstance(block, dict)
            for line in _claude_block(kind, block)]


def _claude_block(kind: str, block: dict[str, Any]) -> list[str]:
    btype = block.get("type")
    if btype == "text" and block.get("text"):
        return [f"{'agent' if kind == 'assistant' else 'user'}: {_short(block['text'], 2000)}"]
    if btype == "tool_use":
        return [f"→ {block.get('name', 'tool')} {_short(block.get('input', {}))}"]
    if btype == "tool_result":
        return [f"{'✘' if block.get('is_error') else '←'} {_short(block.get('content', ''))}"]
    if btype == "thinking":
        return ["· (thinking)"]
    return []


def _claude_system(record: dict[str, Any]) -> list[str]:
    if record.get("subtype") == "init":
        tools = record.get("tools")
        count = f", {len(tools)} tools" if isinstance(tools, list) else ""
        return [f"── session {record.get('session_id', '?')} started (model {record.get('model', '?')}{count})"]
    return [f"· system: {record.get('subtype', '?')}"]


def _codex(kind: str, record: dict[str, Any]) -> list[str]:
    if kind == "thread.started":
        return [f"── session {record.get('thread_id', '?')} started"]
    if kind == "turn.completed":
        usage = record.get("usage")
        return [f"── turn completed ({_short(usage, 200)})" if usage else "── turn completed"]
    if kind == "turn.failed" or kind == "error":
        error = record.get("error") if isinstance(record.get("error"), dict) else record
        return [f"✘ {kind}: {_short(error.get('message', error) if isinstance(error, dict) else error)}"]
    item = record.get("item")
    if not isinstance(item, dict) or kind != "item.completed":
        return []
    itype = item.get("type")
    if itype == "agent_message":
        return [f"agent: {_short(item.get('text', ''), 2000)}"]
    if itype == "command_execution":
        return [f"→ shell {_short(item.get('command', ''))} (exit {item.get('exit_code', '?')})",
                *([f"← {_short(item['aggregated_output'])}"] if item.get("aggregated_output") else [])]
    if itype == "file_change":
        changes = item.get("changes")
        names = [f"{c.get('kind', '?')} {c.get('path', '?')}" for c in changes if isinstance(c, dict)] \
            if isinstance(changes, list) else []
        return [f"→ files: {', '.join(names) or '?'}"]
    if itype == "reasoning":
        return ["· (reasoning)"]
    return [f"· {itype}"]
