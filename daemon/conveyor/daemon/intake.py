"""Intake: read inbox/ (and what others assign into assigned/), reject what cannot run, claim what may run
now into the ready queue.

Tasks another process assigns into `assigned/<agent>/` (the workflow's orchestrator, a person) are planned
with the inbox's: they wait for their dependencies the same way, and start without being moved.

inbox/ is listed on every pass. The finished and claimed folders are re-listed only when a rescan is due
(the periodic job): between rescans the index learns the daemon's own transitions from `note()`, so a pass
per finished task does not re-list a done/ folder of a thousand files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from conveyor.board import layout as board
from conveyor.board.assigned import AssignedWatch
from conveyor.board.inbox import InboxReader
from conveyor.board.index import BoardIndex, Known
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.core import disk_trouble, openfiles
from conveyor.core.errors import Problem
from conveyor.core.task import Task, TaskStatus, task_id_from_path
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.daemon.ready_queue import ReadyQueue, signature
from conveyor.daemon.upkeep import Upkeep
from conveyor.scheduling import budgets
from conveyor.scheduling.budgets import BudgetGuard
from conveyor.scheduling.queue import Waiting, plan
from conveyor.workspace import git
from conveyor.workspace.base_branch import task_base

log = structlog.get_logger("conveyor.daemon")


class Intake:
    """Moves valid inbox tasks into assigned/ (exactly once) and the ready queue; says why others wait."""

    def __init__(self, config: Callable[[], Config], layout: BoardLayout, index: BoardIndex,
                 ready: ReadyQueue, budgets_guard: BudgetGuard, upkeep: Upkeep, clock: Clock,
                 offer: Callable[[Task], bool] = lambda _task: False,
                 running: Callable[[str], bool] = lambda _task_id: False, scan_assigned: bool = True) -> None:
        """`offer` hands a claimed task to a fleet (True) instead of this daemon's ready queue; `running` says
        which tasks this daemon runs; `scan_assigned` (off in a fleet, whose leases own assigned/) looks for
        tasks other processes assign into assigned/."""
        self._config = config
        self._layout = layout
        self._index = index
        self._ready = ready
        self._budgets = budgets_guard
        self._upkeep = upkeep
        self._clock = clock
        self._offer = offer
        self.inbox = InboxReader(layout, index, clock, lambda agent: config().agent(agent) is not None,
                                 self.reject)
        self.assigned = AssignedWatch(layout, lambda agent: config().agent(agent) is not None, self.reject)
        self._running = running
        self._scan_assigned = scan_assigned
        self.pickups: dict[str, Task] = {}   # tasks found in assigned/, planned with the inbox's
        self._pickup_sigs: dict[str, tuple[int, int, int] | None] = {}
        self.waiting: list[Waiting] = []
        self.rescan_due = True   # re-list the board's folders on the first pass and on each rescan tick
        self._claim_stamp: tuple[int, str] = (-1, "")

    def request_rescan(self) -> None:
        """The periodic rescan: re-list the board's folders on the next pass."""
        self.rescan_due = True
        self.assigned.due = True

    def adopt(self, task: Task) -> None:
        """A task in assigned/ that is Conveyor's to run (start-up recovery found it): plan it like a pickup."""
        self._pick_up(task)

    def _pick_up(self, task: Task) -> None:
        self.pickups[task.id] = task
        self._pickup_sigs[task.id] = signature(task.path)

    def _tracked(self, task_id: str) -> bool:
        return self._ready.holds(task_id) or self._running(task_id)

    def run(self) -> int:
        """Scan inbox, reject what cannot run, plan the rest, claim what may run now; returns claims."""
        config = self._config()
        if self.rescan_due:
            self.rescan_due = False
            self._index.refresh()
        self._forget_changed_pickups()
        if self.assigned.due and self._scan_assigned:
            for task in self.assigned.scan(self._tracked):
                if task.id not in self.pickups:
                    log.info("task.found_assigned", task_id=task.id, agent=task.agent, file=str(task.path))
                self._pick_up(task)
        result = plan([*self.inbox.read(), *self.pickups.values()], self._index.get, self.inbox.first_seen())
        for cycle in result.cycles:
            names = " → ".join(t.id for t in cycle)
            for task in cycle:
                self.reject(task.path, [Problem(str(task.path), f"is part of a dependency cycle: {names}",
                                                "remove one of the dependencies so the tasks can run in order",
                                                field="dependencies")])
        waiting = list(result.waiting)
        claimed = 0
        not_ready: dict[str, str | None] = {}
        states = self._budgets.states(config.policies.budgets) if result.runnable else []
        for task in result.runnable:
            base, note = task_base(config.repo, task.base_branch, config.daemon.base_branch)
            if note:
                log.warning("task.branch_fallback", task_id=task.id, note=note)
            if base not in not_ready:
                not_ready[base] = git.base_not_ready(config.repo, base, config.git_dir)
            reason = not_ready[base]
            spent = budgets.task_block(states, task.agent) if reason is None else None
            if spent is not None:   # a hard budget: leave the file in inbox/ untouched until it lifts
                reason = f"budget: {spent.describe()}"
            if reason:
                waiting.append(Waiting(task, reason))
                self._ready.hold(task, reason)   # logged once, with what to do
                continue
            claimed += self._adopt(task) if task.id in self.pickups else self._claim(task)
        self.waiting = waiting
        self._ready.forget_holds_except({w.task.id for w in waiting})
        return claimed

    def reject(self, path: Path, problems: list[Problem]) -> None:
        try:
            target = board.reject(self._layout, path, problems, utc_iso(self._clock()))
        except OSError as exc:   # a full or read-only board: say so, keep serving, try again next scan
            log.error("task.reject_failed", task_id=task_id_from_path(path), file=path.name, error=str(exc),
                      problems=[p.render() for p in problems], note=disk_trouble.NOTE)
            return
        self.inbox.forget(path)
        if target is not None:
            log.error("task.rejected", task_id=task_id_from_path(path), file=path.name, moved_to=str(target),
                      problems=[p.render() for p in problems])
            self._upkeep.rejected(path, problems)

    def _claim(self, task: Task) -> int:
        source = task.path
        sig = self.inbox.signature_of(source)
        if openfiles.open_for_writing(source):   # reopened since it was read: read it again once closed
            self.inbox.still_being_written(source, sig or (0, 0, 0), self._clock())
            return 0
        try:
            target = board.claim(self._layout, source, task.agent)
        except FileExistsError:
            self.reject(source, [Problem(str(source), f"{task.id!r} is already assigned",
                                         "a task runs once: give the new task a new id", field="id")])
            return 0
        except OSError as exc:   # e.g. no room for assigned/<agent>/: it stays in inbox/ for the next scan
            log.error("task.claim_failed", task_id=task.id, error=str(exc), note=disk_trouble.NOTE)
            return 0
        self.inbox.forget(source)
        if target is None:
            return 0
        task.path = target
        # the workflow's lifecycle: a claimed file says `status: assigned` with `assigned_at`, which its own
        # tools (start_task, status reports) read; only the claim's read is reused, no second parse
        updates = {"status": TaskStatus.ASSIGNED.value,
                   "assigned_at": task.data.get("assigned_at") or self._claim_time()}
        try:
            board.rewrite(task, updates, durable=False, fresh=False)
            sig = signature(target)
        except OSError as exc:   # the claim stands; the file says so on the next rewrite
            log.error("task.claim_rewrite_failed", task_id=task.id, error=str(exc), note=disk_trouble.NOTE)
        self.assigned.note(target)
        self._index.note(Known(task.id, "assigned", target))
        if not self._offer(task):
            self._ready.push(task, sig=sig, base_ok=True)
        log.info("task.claimed", task_id=task.id, agent=task.agent, priority=task.priority)
        self._upkeep.note("claimed", task)
        return 1

    def _forget_changed_pickups(self) -> None:
        """A waiting pickup whose file was deleted or edited (a person set it `blocked`, dropped a
        dependency) is judged again from the file."""
        for task_id, task in list(self.pickups.items()):
            if signature(task.path) != self._pickup_sigs.get(task_id):
                del self.pickups[task_id]
                self.assigned.forget(task.path)
                self.assigned.due = True

    def _adopt(self, task: Task) -> int:
        """Start a task found in assigned/ where it is: the workflow's `status: assigned` with `assigned_at`."""
        del self.pickups[task.id]
        self._pickup_sigs.pop(task.id, None)
        updates: dict[str, str] = {}
        if task.data.get("status") != TaskStatus.ASSIGNED.value:
            updates["status"] = TaskStatus.ASSIGNED.value
        if not task.data.get("assigned_at"):
            updates["assigned_at"] = self._claim_time()
        if updates:
            try:
                board.rewrite(task, updates, durable=False)
            except OSError as exc:
                log.error("task.claim_failed", task_id=task.id, error=str(exc), note=disk_trouble.NOTE)
                self.assigned.forget(task.path)
                return 0
        self.assigned.note(task.path)
        self._index.note(Known(task.id, "assigned", task.path))
        if not self._offer(task):
            self._ready.push(task, sig=signature(task.path), base_ok=True)
        log.info("task.claimed", task_id=task.id, agent=task.agent, priority=task.priority, found_in="assigned/")
        self._upkeep.note("claimed", task)
        return 1

    def _claim_time(self) -> str:
        """The claim timestamp, formatted once per second rather than once per task in a flood."""
        now = int(self._clock())
        if self._claim_stamp[0] != now:
            self._claim_stamp = (now, utc_iso(now))
        return self._claim_stamp[1]
