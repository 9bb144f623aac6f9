"""structlog set-up: JSON lines when not on a TTY (journald, files), a readable console on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the moment of writing (test runners swap it and close the old)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, level: str = "info", json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog once per process (the CLI calls this; tests may call it with a stream).

    Without a stream, every line goes to the `sys.stderr` of the moment, so a configuration made while a
    test runner had swapped stderr never writes to a closed stream later.
    """
    out: TextIO = stream or sys.stderr
    use_json = json if json is not None else not out.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out if stream is not None else _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
