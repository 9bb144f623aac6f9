"""Periodic jobs that talk to the network run off the loop's thread, one pass at a time.

The API may be slow or down: outcome detection and the publication retries run on the daemon's executor,
and a pass still running when the next one is due is not doubled.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future

REPUBLISH_EVERY_MIN = 5  # how often a push or pull request that failed after the commit is tried again


class OffLoop:
    """Callable for `Periodic.every`: submits `action` unless its previous pass is still running."""

    def __init__(self, executor: Executor, action: Callable[[], object]) -> None:
        self._executor = executor
        self._action = action
        self._running: Future[object] | None = None

    def __call__(self) -> None:
        if self._running is not None and not self._running.done():
            return
        self._running = self._executor.submit(self._action)
