"""The claimed tasks waiting to start, and the policy that decides which may start now.

A heap ordered by priority then age; each entry may carry a `not_before` (a budget, a paused tool, a
start-rate limit or a base branch that is not ready makes it wait, on the injected clock) and a reason it
is held back, logged once per reason. The loop asks `take()` for the next plan; nothing here starts a
process or writes the board.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from conveyor.config import Config
from conveyor.core.errors import ConveyorError, Problem, TaskFileError
from conveyor.core.task import Task, parse_task
from conveyor.core.timeutil import Clock
from conveyor.pipeline.run import RunPlan
from conveyor.scheduling import budgets
from conveyor.scheduling.concurrency import ToolGate
from conveyor.scheduling.queue import order_key
from conveyor.scheduling.router import Check, plan_routes
from conveyor.workspace import git
from conveyor.workspace.base_branch import task_base

log = structlog.get_logger("conveyor.daemon")


@dataclass(order=True)
class Ready:
    key: tuple[int, float, str]
    task: Task = field(compare=False)
    not_before: float = field(default=0.0, compare=False)
    signature: tuple[int, int, int] | None = field(default=None, compare=False)
    base_ok: bool = field(default=False, compare=False)   # intake checked its base branch when it claimed it


def signature(path: Path) -> tuple[int, int, int] | None:
    """The bytes a task was read from, as far as a re-read needs to know (inode, size, mtime)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class ReadyQueue:
    """Claimed tasks in start order, with what holds each one back."""

    def __init__(self, config: Callable[[], Config], gate: ToolGate, clock: Clock,
                 reject: Callable[[Path, list[Problem]], None]) -> None:
        self._config = config
        self._gate = gate
        self._clock = clock
        self._reject = reject
        self._heap: list[Ready] = []
        self._ids: set[str] = set()
        self.held: dict[str, str] = {}        # task id → why it is held back (logged once per reason)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Ready]:
        return iter(self._heap)

    def holds(self, task_id: str) -> bool:
        """Whether the task waits in this queue (so a scan of assigned/ does not pick it up twice)."""
        return task_id in self._ids

    def tasks(self) -> list[Task]:
        return [item.task for item in sorted(self._heap)]

    def first(self, count: int) -> list[Ready]:
        return heapq.nsmallest(count, self._heap)

    def push(self, task: Task, *, not_before: float = 0.0, sig: tuple[int, int, int] | None = None,
             base_ok: bool = False) -> None:
        heapq.heappush(self._heap, Ready(order_key(task, self._clock()), task, not_before, sig, base_ok))
        self._ids.add(task.id)

    def requeue(self, task: Task, not_before: float) -> None:
        self.push(task, not_before=not_before, sig=signature(task.path))

    def due(self) -> bool:
        now = self._clock()
        return any(item.not_before <= now for item in self._heap)

    def next_wake(self) -> float | None:
        """Seconds until the earliest held task may start, or None when none waits on the clock."""
        now = self._clock()
        future = [item.not_before - now for item in self._heap if item.not_before > now]
        return max(min(future), 0.01) if future else None

    def hold(self, task: Task, reason: str) -> None:
        if self.held.get(task.id) != reason:
            self.held[task.id] = reason
            log.info("task.held", task_id=task.id, agent=task.agent, reason=reason)

    def forget_holds_except(self, live: set[str]) -> None:
        self.held = {task_id: why for task_id, why in self.held.items()
                     if task_id in live or task_id in {item.task.id for item in self._heap}}

    def release_budget_holds(self) -> None:
        """A reload may have raised a budget: tasks held by one are looked at again now."""
        for item in self._heap:
            if self.held.get(item.task.id, "").startswith("budget:"):
                item.not_before = 0.0
                self.held.pop(item.task.id, None)

    def take(self, slots: int, check: Check, states: list[budgets.BudgetState]) -> list[tuple[Task, RunPlan]]:
        """Up to `slots` tasks that may start now, best first, each with its route and tool slot taken; a
        task whose tool is at capacity, paused or over budget is passed over, not waited behind."""
        now = self._clock()
        taken: list[tuple[Task, RunPlan]] = []
        deferred: list[Ready] = []
        full: set[str] = set()                     # tools found at capacity in this pass
        bases: dict[str, str | None] = {}          # base branch → why it is not ready (None: ready), this pass
        while self._heap and len(taken) < slots:
            item = heapq.heappop(self._heap)
            self._ids.discard(item.task.id)
            task = self._recheck(item) if item.not_before <= now else item.task
            if task is None:
                continue
            if task is not item.task:             # re-read once; remember the bytes it was read from
                item.task, item.signature = task, signature(task.path)
            run_plan = self._plan(item, check, states, full, now) if self._base_ready(item, bases, now) else None
            if run_plan is None:
                deferred.append(item)
                continue
            self.held.pop(task.id, None)
            taken.append((task, run_plan))
        for item in deferred:
            heapq.heappush(self._heap, item)
            self._ids.add(item.task.id)
        return taken

    def _plan(self, item: Ready, check: Check, states: list[budgets.BudgetState], full: set[str],
              now: float) -> RunPlan | None:
        """The route a ready task takes now, with its tool slot taken; None (and why, once) if it must wait."""
        if item.not_before > now:
            return None
        task = item.task
        spent = budgets.task_block(states, task.agent)
        if spent is not None:
            item.not_before = spent.resets_at     # a reload that raises the budget clears this
            self.hold(task, f"budget: {spent.describe()}")
            return None
        try:
            routing = plan_routes(task, self._config(), check)
        except ConveyorError as exc:
            # no route at all: the pipeline fails the task, saying why
            return RunPlan(None, error=str(exc), error_kind=type(exc).__name__)
        route = routing.route
        if route is None:
            retry_at = routing.retry_at()
            if retry_at is None:
                return RunPlan(routing)           # nothing will ever run it: the pipeline fails it, saying why
            item.not_before = retry_at
            self.hold(task, "; ".join(f"{skip.tool}: {skip.reason}" for skip in routing.skipped))
            return None
        if route.tool_name in full:
            return None
        if self._gate.try_start(route.tool_name) is not None:
            full.add(route.tool_name)
            opening = self._gate.next_opening(route.tool_name)
            if opening is not None:               # a start-rate limit: look again when it allows a start
                item.not_before = opening
            return None
        return RunPlan(routing, slot_held=True)

    def _base_ready(self, item: Ready, bases: dict[str, str | None], now: float) -> bool:
        """Recovered and requeued tasks did not pass intake's base-branch check: check it before the
        workspace is made, so a missing or rebasing base makes the task wait with the fix, not fail."""
        if item.base_ok or item.not_before > now:
            return True
        config = self._config()
        base, _note = task_base(config.repo, item.task.base_branch, config.daemon.base_branch)
        if base not in bases:
            bases[base] = git.base_not_ready(config.repo, base, config.git_dir)
        reason = bases[base]
        if reason is None:
            item.base_ok = True
            return True
        item.not_before = now + config.daemon.rescan_interval_s
        self.hold(item.task, reason)
        return False

    def _recheck(self, item: Ready) -> Task | None:
        """Re-read a claimed file whose bytes changed since it was parsed (it was still being written)."""
        now_sig = signature(item.task.path)
        if item.signature is None or now_sig == item.signature:
            return item.task
        if now_sig is None:
            log.info("task.dropped", task_id=item.task.id, reason="its file was deleted while it waited")
            return None
        try:
            fresh = parse_task(item.task.path)
        except TaskFileError as exc:
            self._reject(item.task.path, exc.problems)
            return None
        except FileNotFoundError:
            return None
        fresh.data.setdefault("assigned_at", item.task.data.get("assigned_at"))
        return fresh
