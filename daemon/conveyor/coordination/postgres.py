"""A fleet through PostgreSQL: task leases with heartbeats and fencing tokens, and the board leader elected
with a session-level advisory lock (ARCHITECTURE.md, "Coordination", says why plain SQL and not a queue
library).

- The leader (whoever holds LEADER_LOCK; its epoch grows in `conveyor_leader`) reads what was asked from the
  remote's base branch and board branch and enqueues a row for each task, with its document
  (daemon/board_keeper.py); it turns finished rows' outcomes into board commits pushed to the board branch.
- Every node, the leader too, takes rows with `SELECT ... FOR UPDATE SKIP LOCKED`: exactly one gets each,
  with a lease of `lease_timeout_s` and a fence one higher than the last grant's.
- A heartbeat thread extends this node's leases; a node that dies or freezes stops extending them, and
  once they expire the next `take` of any node grants the task again (flagged `takeover`).
- The pipeline asks `still_mine` before it pushes and `commit` records the finished file as the outcome in
  the statement that checks the fence, so a late writer whose lease passed to another node changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import psycopg
import structlog

from conveyor.coordination import schema
from conveyor.coordination.base import Asked, Grant, NodeInfo, Outcome
from conveyor.coordination.link import Link, Row, Unreachable, retrying
from conveyor.core.task import Task

log = structlog.get_logger("conveyor.coordination")


def node_name() -> str:
    """Unique per daemon process: a restarted daemon is a new node, so it never mistakes old leases for its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class PostgresCoordinator:
    shared = True

    def __init__(self, url: str, *, lease_timeout_s: float, poll_s: float,
                 host_lock: AbstractContextManager[object], node: str | None = None) -> None:
        self.node = node or node_name()
        self.lease_timeout_s = lease_timeout_s
        self.poll_s: float | None = poll_s
        self._host_lock = host_lock
        self._work = Link(url, f"conveyor {self.node}")
        # the leader's session: its advisory lock is the leadership; a frozen node's session times out
        self._leader_link = Link(url, f"conveyor leader {self.node}", session_timeout_s=lease_timeout_s)
        self._leader_generation = -1
        self.epoch = 0                             # this node's leader epoch while it leads (the board's fence)
        self._held: dict[str, int] = {}          # task id → fence, for the tasks this node holds
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._beat_thread: threading.Thread | None = None

    @property
    def ledger(self) -> PostgresCoordinator:
        return self

    # ------------------------------------------------------------------ lifecycle
    @contextlib.contextmanager
    def hold(self) -> Iterator[object]:
        """This node's membership: the host lock on its state folder, the schema, the heartbeat thread; on the
        way out its leases go back to the queue (others run them now, not after a timeout)."""
        with self._host_lock:
            self.prepare()
            self._beat()
            self._beat_thread = threading.Thread(target=self._beat_loop, name="fleet-heartbeat", daemon=True)
            self._beat_thread.start()
            log.info("fleet.joined", node=self.node, lease_timeout_s=self.lease_timeout_s)
            try:
                yield self
            finally:
                self._stop.set()
                self._beat_thread.join(10)
                with contextlib.suppress(Unreachable):
                    self._work.run(schema.RELEASE, {"node": self.node, "task_id": None})
                    self._work.run(schema.STOPPED, {"node": self.node})
                self.close()
                log.info("fleet.left", node=self.node)

    def close(self) -> None:
        """End both sessions; the leader session's end passes the leadership on at once."""
        self._leader_link.close()
        self._work.close()

    def prepare(self) -> None:
        """The tables, made by whichever node comes first (waiting out a database that is still starting)."""
        retrying(lambda: self._work.transaction(_create_schema), self.lease_timeout_s)

    # ------------------------------------------------------------------ leadership
    def is_leader(self) -> bool:
        """Hold or try to take the leader lock. A lost session (server restart, idle timeout of a frozen
        node) loses the lock with it: then this node follows until it wins the lock again."""
        try:
            if self._leader_generation >= 0 and self._leader_generation == self._leader_link.generation:
                self._leader_link.run("SELECT 1")
                if self._leader_generation == self._leader_link.generation:
                    return True
            self._leader_generation = -1
            won = self._leader_link.run("SELECT pg_try_advisory_lock(%s)", (schema.LEADER_LOCK,))
        except Unreachable as exc:
            if self._leader_generation >= 0:
                log.warning("fleet.leadership_lost", node=self.node, error=str(exc))
            self._leader_generation = -1
            return False
        if won and won[0][0]:
            try:
                epoch = self._leader_link.run(schema.LEAD, {"node": self.node})
            except Unreachable:
                return False
            self.epoch = int(epoch[0][0])
            self._leader_generation = self._leader_link.generation
            log.info("fleet.leader", node=self.node, epoch=self.epoch)
            return True
        return False

    def still_leading(self) -> bool:
        """Before a board push: this node's session still holds the lock and its epoch is the newest."""
        if not self.is_leader():
            return False
        try:
            return bool(self._leader_link.run(schema.LEADING, {"epoch": self.epoch, "node": self.node}))
        except Unreachable:
            return False

    # ------------------------------------------------------------------ the queue
    def enqueue(self, task: Task) -> bool:
        """Offer a task in this node's assigned/ to the fleet (its file is the document)."""
        board_root = task.path.parent.parent.parent   # <board>/assigned/<agent>/<file>
        self.offer([Asked(task.id, str(task.path.relative_to(board_root)), task.agent, -task.priority_rank,
                          task.path.read_text(encoding="utf-8"))])
        return True

    def offer(self, asked: Sequence[Asked]) -> None:
        """Rows for tasks the leader took from the inbox (a task already known keeps its row); raises
        Unreachable: the board commit that moves them waits for the database."""
        if asked:
            self._work.many(schema.ENQUEUE, [(a.task_id, a.path, a.agent, a.priority, a.document, a.base_tip)
                                             for a in asked])

    def known(self, task_ids: Sequence[str]) -> set[str]:
        rows = self._work.run(schema.KNOWN, {"ids": list(task_ids)}) if task_ids else []
        return {str(r[0]) for r in rows}

    def roadmap_rows(self) -> list[tuple[str, str, str | None, str | None]]:
        """(task id, state, document, outcome) of every task made from ROADMAP.md items."""
        return [(str(r[0]), str(r[1]), r[2], r[3]) for r in self._work.run(schema.ROADMAP_ROWS)]

    def unapplied(self, limit: int = 200) -> list[Outcome]:
        """Finished tasks whose outcome the board branch does not show yet."""
        rows = self._work.run(schema.UNAPPLIED, {"limit": limit})
        return [Outcome(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    def applied(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            self._work.run(schema.APPLIED, {"ids": list(task_ids)})

    def reconcile(self) -> None:
        """A row finished without an outcome (its node died in between, on an older version) is reopened."""
        try:
            self._work.run(schema.REOPEN, {"lease": self.lease_timeout_s})
        except Unreachable as exc:
            log.warning("fleet.reconcile_failed", error=str(exc))

    def take(self, limit: int) -> list[Grant]:
        """Lease up to `limit` tasks, none that this node declined."""
        if limit <= 0:
            return []
        try:
            rows = self._work.run(schema.TAKE, {"limit": limit, "node": self.node, "lease": self.lease_timeout_s})
        except Unreachable as exc:
            log.warning("fleet.take_failed", error=str(exc))
            return []
        grants = [Grant(str(r[0]), str(r[1]), int(r[2]), bool(r[3]), None if r[4] is None else str(r[4]),
                        None if r[5] is None else str(r[5])) for r in rows]
        with self._held_lock:
            for grant in grants:
                self._held[grant.task_id] = grant.fence
        for grant in grants:
            log.info("fleet.granted", task_id=grant.task_id, node=self.node, fence=grant.fence,
                     takeover=grant.takeover)
        return grants

    def decline(self, task_id: str) -> bool:
        """This node cannot run the task (its CLI is missing here): give the lease back, and never be granted
        it again, unless every other live node declined it too: then False, and this node runs it (the
        pipeline fails it, saying why, as a single host does). An unreachable database: the lease expires."""
        params = {"node": self.node, "task_id": task_id, "lease": self.lease_timeout_s}

        def give_back(conn: psycopg.Connection[Row]) -> bool:
            row = conn.execute(schema.OTHERS_TO_ASK, params).fetchone()
            if not row or not row[0]:
                return False
            conn.execute(schema.DECLINE, params)
            return True

        try:
            declined = self._work.transaction(give_back)
        except Unreachable as exc:
            log.warning("fleet.decline_failed", task_id=task_id, error=str(exc), note="its lease expires instead")
            declined = True
        if declined:
            with self._held_lock:
                self._held.pop(task_id, None)
        return declined

    def drop(self, task_id: str) -> None:
        """Give a task's lease back (it waits in assigned/ for any node)."""
        with self._held_lock:
            self._held.pop(task_id, None)
        with contextlib.suppress(Unreachable):
            self._work.run(schema.RELEASE, {"node": self.node, "task_id": task_id})

    # ------------------------------------------------------------------ the fence
    def still_mine(self, task_id: str) -> bool:
        """Before publishing: extend the lease if this node still holds it under its fence."""
        return self._fenced(task_id, schema.EXTEND, {"lease": self.lease_timeout_s}, forget=False)

    def commit(self, task_id: str, status: str, outcome: Path | None = None) -> bool:
        """The task's end and its finished file (`outcome`), recorded in the statement that checks the fence;
        False: another node has the task, and nothing of this node's lands on the board."""
        try:
            text = outcome.read_text(encoding="utf-8") if outcome is not None else None
        except OSError as exc:
            log.error("fleet.outcome_unreadable", task_id=task_id, file=str(outcome), error=str(exc))
            text = None
        return self._fenced(task_id, schema.COMMIT, {"status": status, "outcome": text}, forget=True)

    def _fenced(self, task_id: str, sql: str, params: dict[str, object], *, forget: bool) -> bool:
        with self._held_lock:
            fence = self._held.get(task_id)
        if fence is None:
            log.warning("fleet.fenced", task_id=task_id, node=self.node, reason="this node holds no lease on it")
            return False
        query = {**params, "task_id": task_id, "node": self.node, "fence": fence}
        try:
            confirmed = bool(retrying(lambda: self._work.run(sql, query), self.lease_timeout_s))
        except Unreachable as exc:
            log.error("fleet.fence_unconfirmed", task_id=task_id, fence=fence, error=str(exc),
                      note="nothing written; the lease expires and another node takes the task over")
            confirmed = False
        if not confirmed or forget:
            with self._held_lock:
                self._held.pop(task_id, None)
        if not confirmed:
            log.warning("fleet.fenced", task_id=task_id, node=self.node, fence=fence,
                        reason="the lease passed to another node: this node's write is refused")
        return confirmed

    # ------------------------------------------------------------------ heartbeat and status
    def _beat_loop(self) -> None:
        while not self._stop.wait(self.lease_timeout_s / 3):
            try:
                self._beat()
            except Unreachable as exc:
                log.warning("fleet.heartbeat_failed", node=self.node, error=str(exc))

    def _beat(self) -> None:
        leader = self._leader_generation >= 0
        self._work.run(schema.BEAT, {"node": self.node, "host": socket.gethostname(), "pid": os.getpid(),
                                     "leader": leader})
        with self._held_lock:
            held = dict(self._held)
        if held:
            rows = self._work.run(schema.EXTEND_ALL, {"node": self.node, "ids": list(held),
                                                      "lease": self.lease_timeout_s})
            kept = {str(r[0]): int(r[1]) for r in rows}
            with self._held_lock:
                for task_id, fence in held.items():
                    if kept.get(task_id) != fence and self._held.get(task_id) == fence:
                        del self._held[task_id]
                        log.warning("fleet.lease_lost", task_id=task_id, node=self.node, fence=fence)
        if leader:
            with contextlib.suppress(Unreachable):   # keeps the leader's session from timing out while idle
                self._leader_link.run("SELECT 1")

    def nodes(self) -> list[NodeInfo]:
        self._work.transaction(_create_schema)   # one try: `conveyor status` must not wait for a server
        rows = self._work.run(schema.NODES)
        return [NodeInfo(str(r[0]), bool(r[1]), float(r[2]), bool(r[3]) and float(r[2]) < self.lease_timeout_s,
                         tuple(str(t) for t in r[4])) for r in rows]

    def task_counts(self) -> dict[str, int]:
        """The fleet's tasks by state (queued, leased, done, error): what every node's clone cannot show."""
        return {str(state): int(count) for state, count in self._work.run(schema.COUNTS)}


def _create_schema(conn: psycopg.Connection[Row]) -> None:
    conn.execute(schema.VERSIONED)
