"""Output parsers by name: tools.yaml says which one reads a CLI's stdout.

    parser = make_parser("claude-stream-json", limits=patterns)
    for line in stdout: parser.feed_line(line)        # parser.live_limit() may be asked in between
    run = parser.finish(process_result)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, tzinfo

from conveyor.config.models import PARSER_NAMES
from conveyor.core.errors import ConveyorError
from conveyor.runner.parsers.base import Clock, OutputParser
from conveyor.runner.parsers.claude import ClaudeParser
from conveyor.runner.parsers.codex import CodexParser
from conveyor.runner.parsers.limits import DEFAULT_LIMITS, LimitPatterns
from conveyor.runner.parsers.text import TextParser

__all__ = ["PARSER_NAMES", "LimitPatterns", "OutputParser", "UnknownParserError", "make_parser"]

_Factory = Callable[[LimitPatterns, Clock, tzinfo], OutputParser]

_FACTORIES: dict[str, _Factory] = {
    "claude-json": lambda limits, clock, tz: ClaudeParser("claude-json", limits=limits, clock=clock, tz=tz),
    "claude-stream-json": lambda limits, clock, tz: ClaudeParser("claude-stream-json", limits=limits,
                                                                 clock=clock, tz=tz),
    "codex-jsonl": lambda limits, clock, tz: CodexParser(limits=limits, clock=clock, tz=tz),
    "text": lambda limits, clock, tz: TextParser(limits=limits, clock=clock, tz=tz),
}

if set(_FACTORIES) != set(PARSER_NAMES):  # the configuration's vocabulary and this registry are one list
    raise ImportError(f"parsers {sorted(_FACTORIES)} differ from config PARSER_NAMES {sorted(PARSER_NAMES)}")


class UnknownParserError(ConveyorError):
    """A tool names an output parser that does not exist."""


def make_parser(name: str, *, limits: LimitPatterns | None = None, now: float | Clock | None = None,
                tz: tzinfo | None = None) -> OutputParser:
    """A fresh parser for one invocation.

    `now` is the moment relative reset times ("try again in 2 hours") count from: a fixed epoch (tests),
    a clock such as `time.time` (read each time a limit is classified, so a long run still counts from
    when the message arrived), or None for `time.time`. `tz` is the zone for wall-clock reset times
    that name none (codex prints its host's local time); UTC by default.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UnknownParserError(
            f"unknown output parser {name!r}; known parsers: {', '.join(PARSER_NAMES)}")
    clock: Clock
    if now is None:
        clock = time.time
    elif callable(now):
        clock = now
    else:
        fixed = float(now)
        clock = lambda: fixed  # noqa: E731 - a constant clock for a moment given by the caller
    return factory(limits or DEFAULT_LIMITS, clock, tz or UTC)
