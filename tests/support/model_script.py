"""What the fake model does: script steps, per-conversation cursors and usage, and the request log.

A conversation is chosen by a marker (say, the task id) found in a request's user content; the default
script serves the rest. Each request of a conversation serves its next step, so a CLI's retry sees the
step after the one that failed: `[Fail(529), Fail(529), Reply("ok")]` is "overloaded twice, then fine".
A script that runs out repeats its last step. The default script keeps one cursor per CLI session (the
session id header each CLI sends), so every run that matches no marker starts it from the top, and a
resumed session carries on where it stopped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.runner.types import Tokens


def _default_usage() -> Tokens:
    return Tokens(input=1000, output=50, cache_read=0, cache_write=0)


@dataclass(frozen=True)
class WriteFile:
    """The model asks the CLI to write `content` to `path` (relative to the agent's working directory).

    `usage` is in `Tokens` terms (input excludes cached input), like every step's usage.
    """

    path: str
    content: str
    usage: Tokens = field(default_factory=_default_usage)


@dataclass(frozen=True)
class RunCommand:
    """The model asks the CLI to run a shell command in its working directory."""

    cmd: str
    usage: Tokens = field(default_factory=_default_usage)


@dataclass(frozen=True)
class Reply:
    """The model's final answer: ends the run."""

    text: str
    usage: Tokens = field(default_factory=_default_usage)


@dataclass(frozen=True)
class Fail:
    """An HTTP error (429, 529, 401, 500...) with the provider's error body and optional headers."""

    status: int
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Accept the request and never answer (until the server stops)."""


@dataclass(frozen=True)
class Stall:
    """Send the response headers and the first event, then nothing (until the server stops)."""


Step = WriteFile | RunCommand | Reply | Fail | Hang | Stall
Action = WriteFile | RunCommand | Reply


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; secret header values are replaced by `<redacted>`."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    conversation: str | None      # marker of the conversation served ("" = default); None = not scripted
    step: str | None              # step kind served (`WriteFile`, `Fail`...), "side", or None
    session: str | None = None    # the CLI's session id (claude `x-claude-code-session-id`, codex `session-id`)

    @property
    def has_tools(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("tools"))


_SECRET_HEADER = re.compile(r"authorization|api-key|apikey|cookie|token|secret", re.IGNORECASE)


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with the values of credential-bearing ones hidden."""
    return {k.lower(): ("<redacted>" if _SECRET_HEADER.search(k) else v) for k, v in headers.items()}


_SESSION_HEADERS = ("x-claude-code-session-id", "session-id")


def session_id(headers: Mapping[str, str]) -> str | None:
    """The session id a CLI sends with every model request of one run (and of its resumptions)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return next((lowered[name] for name in _SESSION_HEADERS if lowered.get(name)), None)


@dataclass
class _Conversation:
    steps: list[Step]
    per_session: bool = False
    cursors: dict[str, int] = field(default_factory=dict)
    reported: Tokens = field(default_factory=Tokens)

    def next_step(self, session: str | None) -> Step:
        key = (session or "") if self.per_session else ""
        cursor = self.cursors.get(key, 0)
        self.cursors[key] = cursor + 1
        return self.steps[min(cursor, len(self.steps) - 1)]


def _checked(steps: Sequence[Step]) -> list[Step]:
    if not steps:
        raise ValueError("a script needs at least one step")
    return list(steps)


class ScriptBook:
    """Scripts, cursors, usage totals and the request log, shared by handler threads under one lock."""

    def __init__(self, default: Sequence[Step]) -> None:
        self._lock = threading.Lock()
        self._conversations: dict[str, _Conversation] = {"": _Conversation(_checked(default), per_session=True)}
        self._requests: list[RecordedRequest] = []

    def add_script(self, marker: str, steps: Sequence[Step]) -> None:
        if not marker:
            raise ValueError("a script marker must be a non-empty string")
        with self._lock:
            self._conversations[marker] = _Conversation(_checked(steps))

    def next_step(self, text: str, session: str | None = None) -> tuple[str, Step]:
        """The marker of the first script whose marker occurs in `text` ("" = default) and its next step."""
        with self._lock:
            marker = next((m for m in self._conversations if m and m in text), "")
            return marker, self._conversations[marker].next_step(session)

    def add_usage(self, marker: str, usage: Tokens) -> None:
        with self._lock:
            conversation = self._conversations[marker]
            conversation.reported = conversation.reported + usage

    def reported_usage(self, marker: str) -> Tokens:
        with self._lock:
            return Tokens(**self._conversations[marker].reported.as_dict())

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)


# ------------------------------------------------------------------------------------- request reading
def _texts(content: Any) -> Iterator[str]:
    """Every string inside a message's content, whatever its block structure."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for item in content:
            yield from _texts(item)
    elif isinstance(content, dict):
        for key in ("text", "content", "output"):
            yield from _texts(content.get(key))


def user_text(body: Any) -> str:
    """All user-role text of an Anthropic (`messages`) or OpenAI Responses (`input`) request body."""
    if not isinstance(body, dict):
        return ""
    items = body.get("messages") or body.get("input") or []
    if isinstance(items, str):
        return items
    parts: list[str] = []
    for item in items:
        if isinstance(item, dict) and item.get("role", "user") == "user":
            parts.extend(_texts(item.get("content")))
    return "\n".join(parts)


# claude 2.1.328 states " - Primary working directory: <dir>" in a system-reminder of the first user
# message for claude-sonnet-4-5, but in a `"role": "system"` entry of `messages` for its default model
# (claude-opus-5-5), and older releases put it in the system prompt; codex states "<cwd><dir></cwd>" in
# a user message. So every part of the request is searched.
_CWD_PATTERNS = (
    re.compile(r"Primary working directory:\s*(/\S+)"),
    re.compile(r"[Ww]orking directory:\s*(/\S+)"),
    re.compile(r"<cwd>\s*(/[^<\s]+)\s*</cwd>"),
)


def working_directory(body: Any) -> str | None:
    """The agent's cwd as the CLI states it to the model, or None."""
    if not isinstance(body, dict):
        return None
    items = body.get("messages") or body.get("input") or []
    parts = [body.get("system"), body.get("instructions"), *(i.get("content") for i in items if isinstance(i, dict))]
    haystack = "\n".join(text for part in parts for text in _texts(part))
    for pattern in _CWD_PATTERNS:
        found = pattern.search(haystack)
        if found:
            return found.group(1)
    return None


def tool_names(body: Any) -> set[str]:
    if not isinstance(body, dict):
        return set()
    return {str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict)}


# ------------------------------------------------------------------------------------------------ demo
def demo_script() -> list[Step]:
    """Write `hello.py` with a small function, then say what was done: a convincing offline demo."""
    source = (
        '"""A greeting, written by the fake model in Conveyor\'s offline demo."""\n\n\n'
        "def greet(name: str) -> str:\n"
        '    """Return a friendly greeting for `name`."""\n'
        '    return f"Hello, {name}!"\n\n\n'
        'if __name__ == "__main__":\n'
        '    print(greet("Conveyor"))\n'
    )
    return [
        WriteFile("hello.py", source, usage=Tokens(input=1800, output=160, cache_read=0, cache_write=1200)),
        Reply("Created hello.py with greet(name), which returns a friendly greeting; "
              "`python hello.py` prints \"Hello, Conveyor!\".",
              usage=Tokens(input=350, output=45, cache_read=1200, cache_write=0)),
    ]


def reply_script() -> list[Step]:
    """Answer every request with a final "Done." (no file changes)."""
    return [Reply("Done.")]
