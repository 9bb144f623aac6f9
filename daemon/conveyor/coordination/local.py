"""Single-host mode, Conveyor's default: one daemon per repository, held by an flock on a file in the state
folder; tasks are claimed by the hard-link move into assigned/ (board.layout.claim), so nothing else is
needed: this node always leads, runs everything it claimed, and every write is its own."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from conveyor.coordination.base import Grant, NodeInfo, Unfenced
from conveyor.core.task import Task


class LocalCoordinator(Unfenced):
    shared = False
    poll_s: float | None = None

    @property
    def ledger(self) -> None:
        return None

    def __init__(self, host_lock: Callable[[], AbstractContextManager[object]]) -> None:
        self._host_lock = host_lock

    def hold(self) -> AbstractContextManager[object]:
        return self._host_lock()

    def is_leader(self) -> bool:
        return True

    def enqueue(self, task: Task) -> bool:
        return False      # run it here: intake puts it in this daemon's ready queue

    def reconcile(self) -> None:
        return None       # start-up recovery already owns assigned/

    def take(self, limit: int) -> list[Grant]:
        return []

    def decline(self, task_id: str) -> bool:
        return False      # no other node: run it here (the pipeline says why it cannot)

    def drop(self, task_id: str) -> None:
        return None

    def nodes(self) -> list[NodeInfo]:
        return []

    def task_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None
