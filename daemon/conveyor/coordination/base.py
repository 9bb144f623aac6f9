"""The one small interface between the daemon and whatever decides who does what: a host lock or a database.

The daemon asks four questions and the pipeline two; the single-host answers are the ones Conveyor always
gave (this process leads, runs what it claimed, and every write is its own), so that mode needs no server.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from conveyor.core.task import Task


@dataclass(frozen=True)
class Grant:
    """A task this node now holds a lease on; `fence` grows with every grant of the task, and `takeover` says
    the previous holder died with the lease (a crash is not the task's attempt)."""

    task_id: str
    path: str          # relative to the board root
    fence: int
    takeover: bool


@dataclass(frozen=True)
class NodeInfo:
    """A daemon of the fleet as the database last heard of it (for `conveyor status`)."""

    node: str
    leader: bool
    heartbeat_age_s: float
    alive: bool
    tasks: tuple[str, ...]


class Fence(Protocol):
    """What the pipeline asks before it writes for a task: is the lease still ours (and extended)? Does the
    database take our result? A node whose lease passed to another changes nothing."""

    def still_mine(self, task_id: str) -> bool: ...

    def commit(self, task_id: str, status: str) -> bool: ...


class Coordinator(Fence, Protocol):
    """Membership, the board leader, the exactly-once claim and the fence; see local.py and postgres.py."""

    shared: bool          # True: other nodes serve the same board (recovery leaves their tasks alone)
    poll_s: float | None  # how often the loop must turn to take work and keep leadership; None: never

    def hold(self) -> AbstractContextManager[object]: ...

    def is_leader(self) -> bool: ...

    def enqueue(self, task: Task) -> bool: ...

    def reconcile(self, tasks: list[Task]) -> None: ...

    def take(self, limit: int) -> list[Grant]: ...

    def drop(self, task_id: str) -> None: ...

    def nodes(self) -> list[NodeInfo]: ...

    def close(self) -> None: ...


class Unfenced:
    """The single host's fence: nobody else can hold the task, so every write is ours."""

    def still_mine(self, task_id: str) -> bool:
        return True

    def commit(self, task_id: str, status: str) -> bool:
        return True
