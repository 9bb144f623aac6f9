"""The clock a test hands the product (`clock=`) instead of sleeping: it moves when the test says so, and it
counts how often the product looked at it, so a test can wait for the product's next turns (a pass of the
loop, a tick of a thread) and then check that nothing happened, without guessing a duration."""

from __future__ import annotations

import threading
import time

from tests.support.waiting import wait_for


class TestClock:
    """Unix time plus an offset the test moves (`advance`); frozen at `start` when one is given."""

    __test__ = False          # not a test class, whatever pytest thinks of the name

    def __init__(self, start: float | None = None) -> None:
        self._start, self._offset, self.looks = start, 0.0, 0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.looks += 1
            return (time.time() if self._start is None else self._start) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def wait_looks(self, count: int, what: str = "the product to look at its clock") -> None:
        """Wait until the product has read the clock `count` more times (its next turns have run)."""
        seen = self.looks
        wait_for(lambda: self.looks >= seen + count, what=f"{what} {count} more times")
