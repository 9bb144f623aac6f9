"""The daemon: the only module that knows every component (watcher → board → queue → pipeline → telemetry).

One main loop owns all state. File events, the periodic rescan, finished workers and signals only set
flags or wake the loop; the loop claims, dispatches and records. That keeps every decision on one thread
and makes the loop drivable in tests (`once=True`, a clock passed in).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import cast

import structlog

from conveyor.board.history import History
from conveyor.board.inbox import SETTLE_S
from conveyor.board.index import BoardIndex
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.coordination import open_coordinator
from conveyor.coordination.shared import open_shared
from conveyor.core.errors import ConveyorError
from conveyor.core.private import private_dir
from conveyor.core.state_files import HISTORY_FILE, LOCK_FILE
from conveyor.core.task import Task
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.daemon import parked
from conveyor.daemon.fleet import FleetPump
from conveyor.daemon.intake import Intake
from conveyor.daemon.lock import DaemonLock
from conveyor.daemon.offloop import REPUBLISH_EVERY_MIN, OffLoop
from conveyor.daemon.periodic import Periodic
from conveyor.daemon.ready_queue import ReadyQueue, signature
from conveyor.daemon.reload import reloaded
from conveyor.daemon.snapshot import SnapshotWriter
from conveyor.daemon.upkeep import Snapshot, Upkeep
from conveyor.daemon.watcher import BoardWatches
from conveyor.pipeline import follow_up, recovery, republish
from conveyor.pipeline.finish import Disposition, Report, fail
from conveyor.pipeline.pr_watch import PullWatcher
from conveyor.pipeline.run import Collaborators, route_check, run_task
from conveyor.publish import outcomes
from conveyor.runner.bwrap import BwrapProbe
from conveyor.scheduling.budgets import BudgetGuard
from conveyor.scheduling.concurrency import ToolGate
from conveyor.scheduling.tool_health import PAUSES_FILE, ToolHealth
from conveyor.service.notify import Heartbeat, Notifier, watchdog_interval_s
from conveyor.telemetry.base import TelemetryStore

log = structlog.get_logger("conveyor.daemon")
BURST_CLAIMS = 16            # a pass claiming this many is a flood: claim again before dispatching
OUTCOMES_EVERY_MIN = 5   # how often merged or closed task changes are looked for (cost per merged change)
REAP_EVERY_S = 600.0     # how often workspaces of tasks that are not running are removed
EXTEND_EVERY_S = 5.0    # during a drain, ask the service manager for more time this often
STOP_MARGIN_S = 15.0    # ... enough for what is left of the grace, the kill grace and this margin
DRAIN_NOTE = ("no new task starts; the running agents get up to %g s to finish. Stop again (Ctrl-C) to stop "
              "them now: their tasks stay in assigned/ and run again, without spending an attempt, at the next start")
LOOP_FAILURES = 10            # unexpected errors in the main loop within ...
LOOP_FAILURE_WINDOW_S = 60.0  # ... this long end the daemon (the service manager restarts it)


@dataclass
class _Running:
    task: Task
    future: Future[Report]
    cancel: threading.Event
    started: float


class _Control:
    """The flags other threads and signal handlers set; only the loop acts on them."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._force_requested = threading.Event()
        self._reload_requested = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def request_stop(self) -> None:
        self._stop_requested.set()
        self._wake.set()

    def request_force_stop(self) -> None:
        """Cold shutdown: stop the running agents now instead of waiting for the drain grace."""
        self._force_requested.set()
        self.request_stop()

    def request_reload(self) -> None:
        self._reload_requested.set()
        self._wake.set()


class Daemon(_Control):
    """Serve one repository's board until stopped (or, with `once`, until nothing runnable is left)."""

    def __init__(self, config: Config, *, env: Mapping[str, str] | None = None, clock: Clock = time.time,
                 once: bool = False, watch: bool = True) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.once = once
        self.watch = watch and not once
        self.layout = BoardLayout(config.board_root)
        self.index = BoardIndex(self.layout, History(config.state_dir / HISTORY_FILE))
        self.coordination = open_coordinator(config, lambda: DaemonLock(config.state_dir / LOCK_FILE))
        self.shared = open_shared(config, getattr(self.coordination, "node", None))   # telemetry, ledger, pauses
        self.telemetry: TelemetryStore = self.shared.telemetry
        super().__init__()
        self.notifier = Notifier.from_env(self.env)
        self.heartbeat = Heartbeat(self.notifier, watchdog_interval_s(self.env))
        self._running: dict[str, _Running] = {}
        self.health = ToolHealth(config.state_dir / PAUSES_FILE, lambda: self.config.policies.backoff, clock,
                                 shared=self.shared.pauses)
        self.gate = ToolGate(lambda: self.config.policies.tools, clock)
        self.budgets = BudgetGuard(self.shared.ledger.spend if self.shared.fleet else self.telemetry.spend, clock)
        self.sandbox_probe = BwrapProbe()   # bubblewrap is tried once per daemon, not once per task
        self.publisher_factory: outcomes.PublisherFactory | None = outcomes.github_factory(self.env)
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="task")
        # roadmap, hand-offs, archival, AGENT_STATUS.md / WORKFLOW_LOG.md, board commits (loop thread only)
        self.periodic = Periodic(clock)
        self.upkeep = Upkeep(config, self.layout, self.index, self.telemetry, clock, snapshot=lambda: Snapshot(
            self.ready.tasks(), [r.task for r in self._running.values()], [w.task for w in self.intake.waiting]),
            periodic=self.periodic)
        self.ready = ReadyQueue(lambda: self.config, self.gate, clock, lambda path, why: self.intake.reject(path, why))
        self.intake = Intake(lambda: self.config, self.layout, self.index, self.ready, self.budgets, self.upkeep,
                             clock, offer=self.coordination.enqueue, running=self._running.__contains__,
                             scan_assigned=not self.coordination.shared)
        self.fleet = FleetPump(self.coordination, lambda: self.config, self.layout, self.ready, self.telemetry,
                               clock, self.env, self._apply, self._executor)
        self.inbox = self.intake.inbox
        self.started_at, self.completed = clock(), 0
        self.snapshot = SnapshotWriter(config.state_dir, self.notifier, self.health, clock, self.started_at)
        self._draining, self._drain_until = False, cast(float | None, None)
        self.watches = BoardWatches(self.layout.inbox, self.layout.assigned, self.wake,
                                    on_assigned=self.intake.assigned.mark_due, enabled=self.watch)
        self.parked = parked.Parked()               # needs_input tasks: their answer or their timeout
        self.pr_watcher = PullWatcher(lambda: self.config, self.env, self.layout, self.telemetry, clock,
                                      on_merged=self.upkeep.merge_seen)

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        """Serve until stopped; returns a process exit code."""
        self.layout.ensure()
        private_dir(self.config.state_dir, self.config.logs_dir)   # telemetry, transcripts, pid notes
        with self.coordination.hold():   # the host lock; in a fleet also membership and the heartbeat
            _install_signal_handlers(self)
            self._recover()
            self._start_background()
            self.notifier.ready(self._status_line())   # READY=1 only once recovery is done
            self.heartbeat.start()
            log.info("daemon.ready", repo=str(self.config.repo), board=str(self.layout.root),
                     max_parallel=self.config.daemon.max_parallel, once=self.once)
            try:
                self._serve()
            finally:
                self.notifier.stopping()
                try:
                    self._shutdown()
                finally:
                    self.heartbeat.stop()
        return 0

    def _serve(self) -> None:
        """The main loop, resumed after an unexpected error (logged with its traceback); errors that keep coming
        (LOOP_FAILURES within LOOP_FAILURE_WINDOW_S) end it with a non-zero exit, for the service manager."""
        failures, last = 0, 0.0
        while True:
            try:
                self._loop()
                return
            except Exception:
                now = time.monotonic()
                failures = failures + 1 if now - last < LOOP_FAILURE_WINDOW_S else 1
                last = now
                log.exception("daemon.loop_error", consecutive=failures, limit=LOOP_FAILURES)
                if failures >= LOOP_FAILURES:
                    raise
                self._wake.wait(1.0)

    def _loop(self) -> None:
        while not self._stop_requested.is_set():
            self._wake.clear()
            self.heartbeat.beat()
            if self._reload_requested.is_set():
                self._reload()
            self._reap()
            cancel_deleted(self._running, self.layout.assigned)
            self.watches.keep()
            leader = self.fleet.lead()             # always, on a single host; in a fleet, one node at a time
            if leader and not self._stop_requested.is_set():
                self.periodic.run_due()            # rescan, worktree reaper, outcomes, archive, merges, roadmap
                self.upkeep.before_intake()        # roadmap tasks and hand-offs made here: claimed below, this pass
            claimed = self.intake.run() if leader and self.fleet.local and not self._stop_requested.is_set() else 0
            if claimed >= BURST_CLAIMS:
                # A flood: keep claiming before starting anything. Workers starting tasks compete with
                # this thread for the GIL and made each claim several times slower; the queue is the
                # same either way, and the first tasks start as soon as the inbox is drained.
                self._wake.set()
                started = 0
            else:
                started = self._dispatch()
            self.upkeep.after_dispatch()
            self._write_status()
            self._notify_status()
            settling = self.inbox.settling() or self.upkeep.slicing()  # rejected once settled; sliced jobs
            if self.once and not self._running and not claimed and not started and not self.ready.due() \
                    and not settling:
                log.info("daemon.idle_exit", completed=self.completed, waiting=len(self.intake.waiting))
                return
            if not self._running:
                self.telemetry.close()   # idle: hold no open file on the database (and let SQLite checkpoint)
            self._wake.wait(self._sleep_time())

    def _sleep_time(self) -> float:
        timeout = self.config.daemon.rescan_interval_s if not self.once else 0.5
        periodic = self.periodic.next_in() if self.fleet.leading else None   # a follower runs none of them
        for soonest in (self.ready.next_wake(), periodic, self.coordination.poll_s):
            if soonest is not None:
                timeout = min(timeout, max(soonest, 0.01))
        if self.inbox.settling():
            timeout = min(timeout, SETTLE_S / 2)
        if self.heartbeat.interval_s:
            timeout = min(timeout, self.heartbeat.interval_s / 4)   # beat well within the watchdog interval
        return timeout

    def _start_background(self) -> None:
        """File events and the periodic jobs: both only wake the loop, which does the work."""
        self.watches.keep()
        self.periodic.every("rescan", self.config.daemon.rescan_interval_s, self.intake.request_rescan)
        self.periodic.every("worktree-reaper", REAP_EVERY_S,
                            lambda: recovery.reap_worktrees(self.config, keep=self._workspaces()))
        # merged or closed task changes (git and the API, never the board), off the loop: the API may be slow
        self.periodic.every("outcomes", OUTCOMES_EVERY_MIN * 60, OffLoop(self._executor, lambda: outcomes.
                            detect_outcomes_safely(self.config, self.telemetry, self.publisher_factory, self.clock)))
        self.periodic.every("questions", parked.CHECK_EVERY_S, self._check_parked, at_start=True)
        self.periodic.every("publish-retry", REPUBLISH_EVERY_MIN * 60, OffLoop(
            self._executor, lambda: republish.retry_publications(self.config, self.env)), at_start=True)
        self.periodic.every("pr-watch", self.config.daemon.follow_up.poll_interval_s,   # merges, requests, CI
                            OffLoop(self._executor, self.pr_watcher.run_safely), at_start=True)
        self.upkeep.start(self.wake, watch=self.watch)
        self.periodic.start_timer(self.wake)

    def _workspaces(self) -> set[str]:
        """Folders of running tasks (a follow-up works in its original task's folder) and their views."""
        return set(self._running) | {follow_up.workspace_name(run.task) for run in self._running.values()}

    def _check_parked(self) -> None:
        due = self.parked.check(self.config, self.layout, self.clock())
        for task in due.answered:
            self.ready.push(task, sig=signature(task.path))
        for report in due.expired:
            self._apply(report)

    def _dispatch(self) -> int:
        """Start what the ready queue says may start now, while slots are free."""
        if self._stop_requested.is_set():
            return 0
        deps = self._collaborators()
        slots = self.config.daemon.max_parallel - len(self._running)
        self.fleet.pull(slots - len(self.ready))   # a fleet's share of the work: leases, into the ready queue
        if slots <= 0 or not len(self.ready):
            return 0
        check = route_check(deps)                  # one availability answer per tool for this pass
        states = self.budgets.states(self.config.policies.budgets)
        now = self.clock()
        taken = self.ready.take(slots, check, states)
        for task, run_plan in taken:
            cancel = threading.Event()
            future = self._executor.submit(run_task, task, deps, cancel, run_plan)
            self._running[task.id] = _Running(task, future, cancel, now)
            future.add_done_callback(lambda _f: self.wake())
            self.upkeep.note("started", task)
        return len(taken)

    def _collaborators(self) -> Collaborators:
        return Collaborators(config=self.config, layout=self.layout, telemetry=self.telemetry, clock=self.clock,
                             env=self.env, health=self.health, gate=self.gate, budgets=self.budgets,
                             fence=self.coordination, ledger=self.shared.ledger, sandbox_probe=self.sandbox_probe)

    def _reap(self) -> None:
        for task_id, running in list(self._running.items()):
            if not running.future.done():
                continue
            del self._running[task_id]
            try:
                report = running.future.result()
            except Exception as exc:  # a bug in the pipeline must not take the daemon down
                log.exception("task.internal_error", task_id=task_id)
                report = fail(running.task, self.layout, self.clock(), f"internal error: {type(exc).__name__}: "
                              f"{exc}", kind="internal")
            self._apply(report)

    def _apply(self, report: Report) -> None:
        task = report.task
        self.budgets.invalidate()                 # this run's cost counts from now on
        if report.disposition is Disposition.CANCELLED:   # logged by the pipeline (task.cancelled)
            self.upkeep.note("cancelled", task, report.reason)
            return
        if report.disposition is Disposition.LOST:   # the fleet gave it to another node: nothing to do here
            return
        if report.disposition is Disposition.PARKED:   # waits for an answer, holding no slot (daemon.parked)
            self.parked.add(task)
            self.upkeep.parked(task, report.reason)
            return
        if report.disposition is Disposition.REQUEUED:
            self.ready.requeue(task, report.not_before)
            log.info("task.requeued", task_id=task.id, reason=report.reason,
                     not_before=utc_iso(report.not_before) if report.not_before else None)
            self.upkeep.note("requeued", task, report.reason)
            return
        status = "done" if report.disposition is Disposition.DONE else "error"
        self.index.finished(task, status)
        self.completed += 1
        log.info("task.finished", task_id=task.id, status=status, path=str(task.path))
        self.upkeep.finished(task, status)      # hand-off, roadmap status line, status files

    # ------------------------------------------------------------------ recovery, reload, shutdown
    def _recover(self) -> None:
        """Start-up: requeue or resume what a previous run left in assigned/; mark stale telemetry; reconcile
        the history table (one bounded slice: a task finished just before a crash owes its hand-off)."""
        self.index.start()
        outcome = recovery.recover(self.config, self.layout, self.telemetry, self.clock, self.env,
                                   shared=self.coordination.shared)
        for item in outcome.ready:
            self.intake.adopt(item)     # planned like any task in assigned/: dependencies, base branch
        for item in outcome.parked:
            self.parked.add(item)
        for report in outcome.finished:
            self._apply(report)
        self.index.refresh()
        self.index.sync.step()
        self.upkeep.owed_handoffs()

    def _reload(self) -> None:
        """SIGHUP: load the configuration again; a bad one is refused and the running one kept."""
        self._reload_requested.clear()
        self.notifier.reloading()
        fresh = reloaded(self.config)
        if fresh is not None:
            self.config = fresh
            self.upkeep.reload(fresh)
            self.budgets.invalidate()
            self.ready.release_budget_holds()
            log.info("config.reloaded", max_parallel=fresh.daemon.max_parallel)
        self.notifier.ready(self._status_line())

    def _shutdown(self) -> None:
        self.watches.stop()
        self.periodic.stop_timer()
        self._drain()
        stop_running(self._running, self.config.daemon.kill_grace_s + 30)   # what the drain left
        self._reap()
        self._executor.shutdown(wait=True)
        self.upkeep.stop()                      # final status files and board commit
        self._write_status(stopped=True)
        self.shared.close()
        log.info("daemon.stopped", completed=self.completed)

    def _drain(self) -> None:
        """Warm shutdown: let running agents finish within the grace (a second SIGTERM cuts it short)."""
        grace = self.config.daemon.drain_grace_s
        deadline = time.monotonic() + grace
        if self._running:   # status.json and the log say what the drain does (and that a second stop cuts it)
            self._draining, self._drain_until = True, self.clock() + grace
            self._write_status()
            log.warning("daemon.draining", running=len(self._running), grace_s=grace, note=DRAIN_NOTE % grace)
        extended_at = -EXTEND_EVERY_S
        while self._running and time.monotonic() < deadline and not self._force_requested.is_set():
            self.heartbeat.beat()
            if time.monotonic() - extended_at >= EXTEND_EVERY_S:
                extended_at = time.monotonic()
                self.notifier.extend_timeout(deadline - extended_at + self.config.daemon.kill_grace_s + STOP_MARGIN_S)
            self._wake.wait(0.2)
            self._wake.clear()
            self._reap()
            self._notify_status()
        if self._running:
            log.warning("daemon.stopping_agents", running=sorted(self._running),
                        reason="second stop signal" if self._force_requested.is_set() else "drain grace over",
                        note="their tasks stay in assigned/ and run again, without spending an attempt")

    # ------------------------------------------------------------------ status snapshot
    def _status_line(self) -> str:
        return self.snapshot.line(len(self._running), len(self.ready) + len(self.intake.waiting))

    def _notify_status(self) -> None:
        self.snapshot.notify(len(self._running), len(self.ready) + len(self.intake.waiting))

    def _write_status(self, *, stopped: bool = False) -> None:
        self.snapshot.write({task_id: (r.task.agent, r.started) for task_id, r in self._running.items()},
                            self.ready, self.intake.waiting, stopped=stopped, draining=self._draining,
                            drain_until=self._drain_until)


def stop_running(running: Mapping[str, _Running], timeout_s: float) -> None:
    """Stop the agents still running and wait for their pipelines to end."""
    for entry in running.values():
        entry.cancel.set()
    for entry in list(running.values()):
        try:
            entry.future.result(timeout=timeout_s)
        except Exception:  # the task stays in assigned/ and recovery picks it up
            log.exception("task.shutdown_error", task_id=entry.task.id)


def cancel_deleted(running: Mapping[str, _Running], assigned: Path) -> None:
    """A running task whose file a person deleted is cancelled: its agent is stopped and nothing is
    committed or written back (the pipeline ends it when its next board write finds no file)."""
    for task_id, entry in running.items():
        if entry.cancel.is_set() or entry.future.done() or os.path.lexists(entry.task.path):
            continue
        if entry.task.path.parent.parent != assigned or any(
                os.path.lexists(done / entry.task.path.name) for done in (assigned.parent / "done").glob("*/")):
            continue    # moved on to done/ by the pipeline, which has not told the loop yet
        log.warning("task.cancel_requested", task_id=task_id, file=str(entry.task.path),
                    reason="its file was deleted while it ran")
        entry.cancel.set()


def _install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM/SIGINT drain (a second one stops the agents now), SIGHUP reloads: flags only, the loop acts."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        if daemon.stop_requested:
            daemon.request_force_stop()
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda _s, _f: daemon.request_reload())


__all__ = ["ConveyorError", "Daemon"]
