"""structlog set-up: JSON lines when not on a TTY (journald, files), a readable console on a TTY.

structlog is imported when something first logs, not when a module is imported: structlog loads rich and
asyncio with it (~80 ms), and `conveyor status` must start in well under a second on a machine that
is busy running agents. Modules that a quick command imports take their logger from `get_logger` here;
the CLI asks for its default with `configure_logging_when_used`, applied at the first log call (or at
once if structlog is already loaded).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from structlog.typing import Processor


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
    import logging

    import structlog

    _WHEN_USED.clear()   # an explicit configuration replaces the one the CLI deferred
    out: TextIO = stream or sys.stderr
    use_json = json if json is not None else not out.isatty()
    renderer: Processor = (
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


# The configuration the CLI asked for and that waits for structlog to be needed (at most one entry). This is
# the one piece of process-global state here, and only because structlog's own configuration is global.
_WHEN_USED: dict[str, Any] = {}


def configure_logging_when_used(*, level: str = "warning") -> None:
    """Configure now if structlog is already loaded (a module imported it), else at the first log call."""
    _WHEN_USED.clear()
    _WHEN_USED["level"] = level
    apply_deferred_logging(if_loaded=True)


def apply_deferred_logging(*, if_loaded: bool = False) -> None:
    """Apply the configuration `configure_logging_when_used` deferred, if any is still waiting (with
    `if_loaded`, only when structlog is already imported: a module that logs through structlog directly
    was loaded, and its first log line must already see the configuration)."""
    if _WHEN_USED and (not if_loaded or "structlog" in sys.modules):
        configure_logging(level=str(_WHEN_USED["level"]))


class _Logger:
    """structlog's logger, looked up at each call: importing a module costs nothing until it logs."""

    __slots__ = ("_name",)

    def __init__(self, name: str | None) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        import structlog

        apply_deferred_logging()
        return getattr(structlog.get_logger(self._name) if self._name else structlog.get_logger(), attribute)


def get_logger(name: str | None = None) -> Any:
    """A logger with structlog's API (`log.warning("event", key=value)`, `bind`) that imports structlog at
    its first use; each call reads the configuration of the moment, as `structlog.get_logger()` does."""
    return _Logger(name)
