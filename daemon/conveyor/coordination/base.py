"""The one small interface between the daemon and whatever decides who does what: a host lock or a database.

The daemon asks four questions and the pipeline two; the single-host answers are the ones Conveyor always
gave (this process leads, runs what it claimed, and every write is its own), so that mode needs no server.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from conveyor.core.errors import ConveyorError
from conveyor.core.task import Task


class Unreachable(ConveyorError):
    """The coordination database did not answer (down, restarting, or the network between). Defined here,
    not beside the driver, so code that only catches it does not load psycopg on a single host."""


@dataclass(frozen=True)
class Grant:
    """A task this node now holds a lease on; `fence` grows with every grant of the task, and `takeover` says
    the previous holder died with the lease (a crash is not the task's attempt)."""

    task_id: str
    path: str          # relative to the board root
    fence: int
    takeover: bool
    document: str | None = None   # the task file as the leader read it (a fleet node writes it to its clone)
    base_tip: str | None = None   # the base branch's commit the leader read it at (the node's base catches up)


@dataclass(frozen=True)
class Asked:
    """A task the board leader took from the inbox, offered to the fleet with its file's text."""

    task_id: str
    path: str          # relative to the board root: assigned/<agent>/<file>
    agent: str
    priority: int
    document: str
    base_tip: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished task's file as its node recorded it under its fence, for the leader's board commit."""

    task_id: str
    path: str
    agent: str
    status: str
    document: str


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

    def commit(self, task_id: str, status: str, outcome: Path | None = None) -> bool: ...


class BoardLedger(Protocol):
    """The board leader's side of the database: what was offered, what finished, and its own epoch."""

    epoch: int

    def still_leading(self) -> bool: ...

    def offer(self, asked: Sequence[Asked]) -> None: ...

    def known(self, task_ids: Sequence[str]) -> set[str]: ...

    def unapplied(self, limit: int = 200) -> list[Outcome]: ...

    def roadmap_rows(self) -> list[tuple[str, str, str | None, str | None]]: ...

    def applied(self, task_ids: Sequence[str]) -> None: ...


class Coordinator(Fence, Protocol):
    """Membership, the board leader, the exactly-once claim and the fence; see local.py and postgres.py."""

    shared: bool          # True: other nodes serve the same board (recovery leaves their tasks alone)
    poll_s: float | None  # how often the loop must turn to take work and keep leadership; None: never

    @property
    def ledger(self) -> BoardLedger | None:
        """A fleet's: the board lives on a branch of the remote (daemon/board_keeper.py); None on one host."""

    def hold(self) -> AbstractContextManager[object]: ...

    def is_leader(self) -> bool: ...

    def enqueue(self, task: Task) -> bool: ...

    def reconcile(self) -> None: ...

    def take(self, limit: int) -> list[Grant]: ...

    def decline(self, task_id: str) -> bool: ...

    def drop(self, task_id: str) -> None: ...

    def nodes(self) -> list[NodeInfo]: ...

    def task_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class Unfenced:
    """The single host's fence: nobody else can hold the task, so every write is ours."""

    def still_mine(self, task_id: str) -> bool:
        return True

    def commit(self, task_id: str, status: str, outcome: Path | None = None) -> bool:
        return True
