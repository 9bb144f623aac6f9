"""The daemon's side of the coordinator: lead when elected, take this node's share of the work.

Single host: the node always leads and `pull` takes nothing (intake fills the ready queue directly). In a
fleet the leader's intake offers each claimed task to the database; every node then takes leases for as
many tasks as it has free slots, and a task whose node died is taken over here (`recovery.take_over`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.coordination import Coordinator
from conveyor.core.errors import TaskFileError
from conveyor.core.task import Task, parse_task, task_id_from_path
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.daemon.ready_queue import ReadyQueue, signature
from conveyor.pipeline import recovery
from conveyor.pipeline.finish import Report
from conveyor.telemetry.store import Telemetry

log = structlog.get_logger("conveyor.daemon.fleet")


class FleetPump:
    def __init__(self, coordinator: Coordinator, config: Callable[[], Config], layout: BoardLayout,
                 ready: ReadyQueue, telemetry: Telemetry, clock: Clock, env: Mapping[str, str],
                 apply: Callable[[Report], None]) -> None:
        self.coordinator = coordinator
        self._config = config
        self._layout = layout
        self._ready = ready
        self._telemetry = telemetry
        self._clock = clock
        self._env = env
        self._apply = apply
        self._leading = False
        self._reconciled_at = float("-inf")

    def lead(self) -> bool:
        """Whether this node does the board's work this pass; a new leader first checks assigned/ against
        the database (a task the last leader moved but never offered is offered now)."""
        leading = self.coordinator.is_leader()
        if not self.coordinator.shared:
            return leading
        now = self._clock()
        if leading and (not self._leading or now - self._reconciled_at >= self._config().daemon.rescan_interval_s):
            self._reconciled_at = now
            self.coordinator.reconcile(self._assigned())
        self._leading = leading
        return leading

    def pull(self, free: int) -> int:
        """Lease up to `free` tasks from the fleet into the ready queue; returns how many."""
        if not self.coordinator.shared or free <= 0:
            return 0
        taken = 0
        for grant in self.coordinator.take(free):
            path = self._layout.root / grant.path
            task = self._read(grant.task_id, path)
            if task is None:
                continue
            if grant.takeover:
                config = self._config()
                report = recovery.take_over(task, config, self._layout, self._telemetry, self._clock, self._env,
                                            self.coordinator)
                if report is not None:
                    self._apply(report)
                    continue
            self._ready.push(task, sig=signature(task.path))
            taken += 1
        return taken

    def _read(self, task_id: str, path: Path) -> Task | None:
        """The granted task's file; one that is gone or unreadable ends the task as an error (and a
        readable-but-invalid one goes to _rejected/ with its report)."""
        if not path.is_file():
            if self.coordinator.commit(task_id, "error"):
                log.error("fleet.task_missing", task_id=task_id, file=str(path),
                          problem="its file left assigned/ (moved or deleted by hand)",
                          fix="submit the task again under a new id")
            return None
        try:
            return parse_task(path)
        except TaskFileError as exc:
            if self.coordinator.commit(task_id, "error"):
                board.reject(self._layout, path, exc.problems, utc_iso(self._clock()))
                log.error("fleet.task_unreadable", task_id=task_id, file=str(path),
                          problems=[p.render() for p in exc.problems])
            return None

    def _assigned(self) -> list[Task]:
        tasks = []
        for path in board.task_files(self._layout.assigned):
            try:
                tasks.append(parse_task(path))
            except (TaskFileError, OSError) as exc:   # start-up recovery of the node that runs it reports it
                log.debug("fleet.reconcile_skipped", task_id=task_id_from_path(path), error=str(exc))
        return tasks

