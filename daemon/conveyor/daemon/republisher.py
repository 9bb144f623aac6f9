"""The periodic job that finishes owed publications (see `pipeline.republish`), off the loop's thread.

The API may be slow or down, so each pass runs on the daemon's executor, and a pass still running when the
next one is due is not doubled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future

from conveyor.config import Config
from conveyor.pipeline import republish

REPUBLISH_EVERY_MIN = 5  # how often a push or pull request that failed after the commit is tried again


class Republisher:
    """Callable for `Periodic.every`: one retry pass at a time, with the daemon's current config."""

    def __init__(self, executor: Executor, config: Callable[[], Config], env: Mapping[str, str]) -> None:
        self._executor = executor
        self._config = config
        self._env = env
        self._running: Future[list[str]] | None = None

    def __call__(self) -> None:
        if self._running is not None and not self._running.done():
            return
        self._running = self._executor.submit(republish.retry_publications, self._config(), self._env)
