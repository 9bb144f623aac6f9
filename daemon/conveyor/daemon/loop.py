"""The daemon: the only module that knows every component (watcher → board → queue → pipeline → telemetry).

One main loop owns all state. File events, the periodic rescan, finished workers and signals only set
flags or wake the loop; the loop claims, dispatches and records. That keeps every decision on one thread
and makes the loop drivable in tests (`once=True`, a clock passed in).
"""

from __future__ import annotations

import heapq
import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from conveyor import board, budgets, disk_trouble, git, openfiles, outcomes, recovery, yamlio
from conveyor.board import BoardLayout
from conveyor.board_index import BoardIndex, Known
from conveyor.budgets import BudgetGuard
from conveyor.config import Config, load_config
from conveyor.errors import ConfigError, ConveyorError, Problem, TaskFileError
from conveyor.inbox import SETTLE_S, InboxReader
from conveyor.lock import DaemonLock
from conveyor.pipeline import Collaborators, Disposition, Report, RunPlan, route_check, run_task
from conveyor.queue import Waiting, order_key, plan
from conveyor.router import Check, plan_routes
from conveyor.service.notify import Heartbeat, Notifier, status_line, watchdog_interval_s
from conveyor.state_files import STATUS_FILE
from conveyor.task import Task, parse_task, task_id_from_path
from conveyor.telemetry import Telemetry
from conveyor.timeutil import Clock, utc_iso
from conveyor.tool_gate import ToolGate
from conveyor.tool_health import PAUSES_FILE, ToolHealth
from conveyor.upkeep import Snapshot, Upkeep
from conveyor.watcher import InboxWatcher

log = structlog.get_logger("conveyor.daemon")
BURST_CLAIMS = 16            # a pass claiming this many is a flood: claim again before dispatching
STATUS_INTERVAL_S = 0.5      # the status snapshot is rewritten at most this often while busy
STATUS_QUEUED_LIMIT = 200    # queued tasks listed in the snapshot (the count covers all)
OUTCOMES_EVERY_MIN = 5   # how often merged or closed task changes are looked for (cost per merged change)
EXTEND_EVERY_S = 5.0    # during a drain, ask the service manager for more time this often
STOP_MARGIN_S = 15.0    # ... enough for what is left of the grace, the kill grace and this margin
# Settings read once at start-up (paths the lock, watcher and database are bound to): a reload that
# changes one of them is refused, with a line saying to restart instead.
RESTART_ONLY = ("board_dir", "state_dir", "worktrees_dir", "telemetry_db")
LOOP_FAILURES = 10            # unexpected errors in the main loop within ...
LOOP_FAILURE_WINDOW_S = 60.0  # ... this long end the daemon (the service manager restarts it)


@dataclass(order=True)
class _Ready:
    key: tuple[int, float, str]
    task: Task = field(compare=False)
    not_before: float = field(default=0.0, compare=False)
    signature: tuple[int, int, int] | None = field(default=None, compare=False)
    base_ok: bool = field(default=False, compare=False)   # intake checked its base branch when it claimed it


@dataclass
class _Running:
    task: Task
    future: Future[Report]
    cancel: threading.Event
    started: float


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class Daemon:
    """Serve one repository's board until stopped (or, with `once`, until nothing runnable is left)."""

    def __init__(self, config: Config, *, env: Mapping[str, str] | None = None, clock: Clock = time.time,
                 once: bool = False, watch: bool = True) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.once = once
        self.watch = watch and not once
        self.layout = BoardLayout(config.board_root)
        self.index = BoardIndex(self.layout)
        self.inbox = InboxReader(self.layout, self.index, clock, lambda agent: self.config.agent(agent) is not None,
                                 self._reject)
        self.telemetry = Telemetry(config.telemetry_db, privacy=config.daemon.privacy)
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._force_requested = threading.Event()
        self._reload_requested = threading.Event()
        self.notifier = Notifier.from_env(self.env)
        self.heartbeat = Heartbeat(self.notifier, watchdog_interval_s(self.env))
        self._last_status_line = ""
        self._ready: list[_Ready] = []
        self._running: dict[str, _Running] = {}
        self._waiting: list[Waiting] = []
        self.health = ToolHealth(config.state_dir / PAUSES_FILE, lambda: self.config.policies.backoff, clock)
        self.gate = ToolGate(lambda: self.config.policies.tools, clock)
        self.budgets = BudgetGuard(self.telemetry.spend, clock)
        self._held: dict[str, str] = {}        # task id → why it is held back (logged once per reason)
        self.publisher_factory: outcomes.PublisherFactory | None = outcomes.github_factory(self.env)
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="task")
        # roadmap, hand-offs, archival, AGENT_STATUS.md / WORKFLOW_LOG.md, board commits (loop thread only)
        self.upkeep = Upkeep(config, self.layout, self.index, self.telemetry, clock, snapshot=lambda: Snapshot(
            [r.task for r in sorted(self._ready)], [r.task for r in self._running.values()],
            [w.task for w in self._waiting]))
        self.started_at = clock()
        self.completed = 0
        self._reap_worktrees_due = False
        self._claim_stamp: tuple[int, str] = (-1, "")
        self._status_written = -STATUS_INTERVAL_S
        self._rescan_due = True   # re-list the board's folders on the first pass and on each rescan tick
        self._watcher: InboxWatcher | None = None

    # ------------------------------------------------------------------ public control
    def wake(self) -> None:
        self._wake.set()

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

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        """Serve until stopped; returns a process exit code."""
        self.layout.ensure()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        with DaemonLock(self.config.state_dir / "daemon.lock"):
            self._install_signal_handlers()
            self._recover()
            scheduler = self._start_background()
            self.notifier.ready(self._status_line())   # READY=1 only once recovery is done
            self.heartbeat.start()
            log.info("daemon.ready", repo=str(self.config.repo), board=str(self.layout.root),
                     max_parallel=self.config.daemon.max_parallel, once=self.once)
            try:
                self._serve()
            finally:
                self.notifier.stopping()
                try:
                    self._shutdown(scheduler)
                finally:
                    self.heartbeat.stop()
        return 0

    def _serve(self) -> None:
        """The main loop, resumed after an unexpected error (logged with its traceback) so one bad turn does
        not stop the service; errors that keep coming (LOOP_FAILURES within LOOP_FAILURE_WINDOW_S) end it
        with a non-zero exit, for the service manager to restart it."""
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
            self._keep_watching()
            if self._reap_worktrees_due:
                self._reap_worktrees_due = False
                recovery.reap_worktrees(self.config, keep=set(self._running))
            if not self._stop_requested.is_set():
                self.upkeep.before_intake()        # roadmap tasks made here (and hand-offs made while
                                                   # reaping) are claimed below, in the same pass
            claimed = self._intake()
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
            settling = self.inbox.settling()  # rejected once settled
            if self.once and not self._running and not claimed and not started and not self._due_ready() \
                    and not settling:
                log.info("daemon.idle_exit", completed=self.completed, waiting=len(self._waiting))
                return
            if not self._running:
                self.telemetry.close()   # idle: hold no open file on the database (and let SQLite checkpoint)
            self._wake.wait(self._sleep_time())

    def _sleep_time(self) -> float:
        timeout = self.config.daemon.rescan_interval_s if not self.once else 0.5
        now = self.clock()
        future = [item.not_before - now for item in self._ready if item.not_before > now]
        if future:
            timeout = min(timeout, max(min(future), 0.01))
        if self.inbox.settling():
            timeout = min(timeout, SETTLE_S / 2)
        if self.heartbeat.interval_s:
            timeout = min(timeout, self.heartbeat.interval_s / 4)   # beat well within the watchdog interval
        return timeout

    def _start_background(self) -> Any:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._keep_watching()
        scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
        scheduler.add_job(self._request_rescan, "interval", seconds=self.config.daemon.rescan_interval_s,
                          id="rescan")
        scheduler.add_job(self._reap_worktrees_soon, "interval", minutes=10, id="worktree-reaper")
        scheduler.add_job(self._detect_outcomes, "interval", minutes=OUTCOMES_EVERY_MIN, id="outcomes")
        self.upkeep.start(scheduler, self.wake, watch=self.watch)
        scheduler.start()
        return scheduler

    def _keep_watching(self) -> None:
        """Watch inbox/, and watch it again when the folder was replaced (deleted and made anew, moved
        away and back): a watch follows the old folder, and its new tasks would wait for the rescan."""
        if not self.watch:
            return
        try:
            inode = self.layout.inbox.stat().st_ino
        except OSError:
            return   # no inbox/ right now: the scan reports it; look again next pass
        if self._watcher is not None and self._watcher.inode == inode:
            return
        if self._watcher is not None:
            self._watcher.stop()
            log.info("watcher.rearmed", inbox=str(self.layout.inbox))
        self._watcher = InboxWatcher(self.layout.inbox, self.wake)
        self._watcher.start()

    def _detect_outcomes(self) -> None:
        """Scheduler thread: record merged or closed task changes (git and the API, never the board)."""
        try:
            outcomes.detect_outcomes(self.config, self.telemetry, self.publisher_factory, clock=self.clock)
        except Exception:  # a failing lookup must not stop the scheduler; it runs again later
            log.exception("outcome.detection_failed")

    @property
    def _paused(self) -> dict[str, float]:
        """Tool → resume time of the tools paused now by a provider limit."""
        return {pause.tool: pause.until for pause in self.health.active()}

    def _reap_worktrees_soon(self) -> None:
        self._reap_worktrees_due = True
        self.wake()

    # ------------------------------------------------------------------ intake
    def _request_rescan(self) -> None:
        """The periodic rescan (APScheduler): re-list the board's folders on the next pass, and wake."""
        self._rescan_due = True
        self.wake()

    def _intake(self) -> int:
        """Scan inbox, reject what cannot run, plan the rest, claim what may run now; returns claims.

        inbox/ is listed on every pass. The finished and claimed folders are re-listed only on the periodic
        rescan: between rescans the index learns the daemon's own transitions from `note()`, and a pass per
        finished task no longer re-lists a done/ folder of a thousand files.
        """
        if self._stop_requested.is_set():
            return 0
        if self._rescan_due:
            self._rescan_due = False
            self.index.refresh()
        tasks = self.inbox.read()
        result = plan(tasks, self.index.get, self.inbox.first_seen())
        for cycle in result.cycles:
            names = " → ".join(t.id for t in cycle)
            for task in cycle:
                self._reject(task.path, [Problem(str(task.path), f"is part of a dependency cycle: {names}",
                                                 "remove one of the dependencies so the tasks can run in order",
                                                 field="dependencies")])
        waiting = list(result.waiting)
        claimed = 0
        not_ready: dict[str, str | None] = {}
        states = self.budgets.states(self.config.policies.budgets) if result.runnable else []
        for task in result.runnable:
            base = task.base_branch or self.config.daemon.base_branch
            if base not in not_ready:
                not_ready[base] = git.base_not_ready(self.config.repo, base, self.config.git_dir)
            if not_ready[base]:
                waiting.append(Waiting(task, str(not_ready[base])))
                self._hold(task, str(not_ready[base]))   # logged once, with what to do
                continue
            spent = budgets.task_block(states, task.agent)
            if spent is not None:   # a hard budget: leave the file in inbox/ untouched until it lifts
                waiting.append(Waiting(task, f"budget: {spent.describe()}"))
                self._hold(task, f"budget: {spent.describe()}")
                continue
            claimed += self._claim(task)
        self._waiting = waiting
        live = {w.task.id for w in waiting} | {item.task.id for item in self._ready}
        self._held = {task_id: why for task_id, why in self._held.items() if task_id in live}
        return claimed

    def _reject(self, path: Path, problems: list[Problem]) -> None:
        try:
            target = board.reject(self.layout, path, problems, utc_iso(self.clock()))
        except OSError as exc:   # a full or read-only board: say so, keep serving, try again next scan
            log.error("task.reject_failed", task_id=task_id_from_path(path), file=path.name, error=str(exc),
                      problems=[p.render() for p in problems], note=disk_trouble.NOTE)
            return
        self.inbox.forget(path)
        if target is not None:
            log.error("task.rejected", task_id=task_id_from_path(path), file=path.name, moved_to=str(target),
                      problems=[p.render() for p in problems])
            self.upkeep.rejected(path, problems)

    def _claim(self, task: Task) -> int:
        source = task.path
        signature = self.inbox.signature_of(source)
        if openfiles.open_for_writing(source):   # reopened since it was read: read it again once closed
            self.inbox.still_being_written(source, signature or (0, 0, 0), self.clock())
            return 0
        try:
            target = board.claim(self.layout, source, task.agent)
        except FileExistsError:
            self._reject(source, [Problem(str(source), f"{task.id!r} is already assigned",
                                          "a task runs once: give the new task a new id", field="id")])
            return 0
        except OSError as exc:   # e.g. no room for assigned/<agent>/: it stays in inbox/ for the next scan
            log.error("task.claim_failed", task_id=task.id, error=str(exc), note=disk_trouble.NOTE)
            return 0
        self.inbox.forget(source)
        if target is None:
            return 0
        task.path = target
        if "assigned_at" not in task.data:
            task.data["assigned_at"] = self._claim_time()
        self.index.note(Known(task.id, "assigned", target))
        heapq.heappush(self._ready, _Ready(order_key(task, self.clock()), task, 0.0, signature, base_ok=True))
        log.info("task.claimed", task_id=task.id, agent=task.agent, priority=task.priority)
        self.upkeep.note("claimed", task)
        return 1

    def _claim_time(self) -> str:
        """The claim timestamp, formatted once per second rather than once per task in a flood."""
        now = int(self.clock())
        if self._claim_stamp[0] != now:
            self._claim_stamp = (now, utc_iso(now))
        return self._claim_stamp[1]

    # ------------------------------------------------------------------ dispatch and reaping
    def _due_ready(self) -> bool:
        now = self.clock()
        return any(item.not_before <= now for item in self._ready)

    def _dispatch(self) -> int:
        """Start ready tasks, best first, while slots are free; a task whose tool is at capacity, paused or
        over budget is passed over (not waited behind) so a task for another tool can start."""
        if self._stop_requested.is_set():
            return 0
        started = 0
        now = self.clock()
        deferred: list[_Ready] = []
        deps = self._collaborators()
        check = route_check(deps)                  # one availability answer per tool for this pass
        states = self.budgets.states(self.config.policies.budgets)
        full: set[str] = set()                     # tools found at capacity in this pass
        bases: dict[str, str | None] = {}          # base branch → why it is not ready (None: ready), this pass
        while self._ready and len(self._running) < self.config.daemon.max_parallel:
            item = heapq.heappop(self._ready)
            task = self._recheck(item) if item.not_before <= now else item.task
            if task is None:
                continue
            if task is not item.task:             # re-read once; remember the bytes it was read from
                item.task, item.signature = task, _signature(task.path)
            run_plan = self._plan(item, check, states, full, now) if self._base_ready(item, bases, now) else None
            if run_plan is None:
                deferred.append(item)
                continue
            self._held.pop(task.id, None)
            cancel = threading.Event()
            future = self._executor.submit(run_task, task, deps, cancel, run_plan)
            self._running[task.id] = _Running(task, future, cancel, now)
            future.add_done_callback(lambda _f: self.wake())
            self.upkeep.note("started", task)
            started += 1
        for item in deferred:
            heapq.heappush(self._ready, item)
        return started

    def _plan(self, item: _Ready, check: Check, states: list[budgets.BudgetState], full: set[str],
              now: float) -> RunPlan | None:
        """The route a ready task takes now, with its tool slot taken; None (and why, once) if it must wait."""
        if item.not_before > now:
            return None
        task = item.task
        spent = budgets.task_block(states, task.agent)
        if spent is not None:
            item.not_before = spent.resets_at     # a reload that raises the budget clears this (see _reload)
            self._hold(task, f"budget: {spent.describe()}")
            return None
        try:
            routing = plan_routes(task, self.config, check)
        except ConveyorError:
            return RunPlan(None)                  # no route at all: the pipeline fails the task, saying why
        route = routing.route
        if route is None:
            retry_at = routing.retry_at()
            if retry_at is None:
                return RunPlan(routing)           # nothing will ever run it: the pipeline fails it, saying why
            item.not_before = retry_at
            self._hold(task, "; ".join(f"{skip.tool}: {skip.reason}" for skip in routing.skipped))
            return None
        if route.tool_name in full:
            return None
        wait = self.gate.try_start(route.tool_name)
        if wait is not None:
            full.add(route.tool_name)
            opening = self.gate.next_opening(route.tool_name)
            if opening is not None:               # a start-rate limit: look again when it allows a start
                item.not_before = opening
            return None
        return RunPlan(routing, slot_held=True)

    def _base_ready(self, item: _Ready, bases: dict[str, str | None], now: float) -> bool:
        """Recovered and requeued tasks did not pass intake's base-branch check: check it before the
        worktree is made, so a missing or rebasing base makes the task wait with the fix, not fail."""
        if item.base_ok or item.not_before > now:
            return True
        base = item.task.base_branch or self.config.daemon.base_branch
        if base not in bases:
            bases[base] = git.base_not_ready(self.config.repo, base, self.config.git_dir)
        reason = bases[base]
        if reason is None:
            item.base_ok = True
            return True
        item.not_before = now + self.config.daemon.rescan_interval_s
        self._hold(item.task, reason)
        return False

    def _hold(self, task: Task, reason: str) -> None:
        if self._held.get(task.id) != reason:
            self._held[task.id] = reason
            log.info("task.held", task_id=task.id, agent=task.agent, reason=reason)

    def _recheck(self, item: _Ready) -> Task | None:
        """Re-read a claimed file whose bytes changed since it was parsed (it was still being written)."""
        if item.signature is None or _signature(item.task.path) == item.signature:
            return item.task
        try:
            fresh = parse_task(item.task.path)
        except TaskFileError as exc:
            self._reject(item.task.path, exc.problems)
            return None
        except FileNotFoundError:
            return None
        fresh.data.setdefault("assigned_at", item.task.data.get("assigned_at"))
        return fresh

    def _collaborators(self) -> Collaborators:
        return Collaborators(config=self.config, layout=self.layout, telemetry=self.telemetry, clock=self.clock,
                             env=self.env, is_paused=self.health.paused_until, health=self.health, gate=self.gate,
                             budgets=self.budgets)

    def _reap(self) -> None:
        for task_id, running in list(self._running.items()):
            if not running.future.done():
                continue
            del self._running[task_id]
            try:
                report = running.future.result()
            except Exception as exc:  # a bug in the pipeline must not take the daemon down
                log.exception("task.internal_error", task_id=task_id)
                report = self._internal_error(running.task, exc)
            self._apply(report)

    def _internal_error(self, task: Task, exc: Exception) -> Report:
        from conveyor.pipeline import _fail

        deps = self._collaborators()
        return _fail(task, deps, f"internal error: {type(exc).__name__}: {exc}", kind="internal", log_path=None)

    def _apply(self, report: Report) -> None:
        task = report.task
        self.budgets.invalidate()                 # this run's cost counts from now on
        if report.disposition is Disposition.REQUEUED:
            heapq.heappush(self._ready, _Ready(order_key(task, self.clock()), task, report.not_before,
                                               _signature(task.path)))
            log.info("task.requeued", task_id=task.id, reason=report.reason,
                     not_before=utc_iso(report.not_before) if report.not_before else None)
            self.upkeep.note("requeued", task, report.reason)
            return
        status = "done" if report.disposition is Disposition.DONE else "error"
        self.index.note(Known(task.id, status, task.path))
        self.completed += 1
        log.info("task.finished", task_id=task.id, status=status, path=str(task.path))
        self.upkeep.finished(task, status)      # hand-off, roadmap status line, status files

    # ------------------------------------------------------------------ recovery, reload, shutdown
    def _recover(self) -> None:
        """Start-up: requeue or resume what a previous run left in assigned/; mark stale telemetry."""
        outcome = recovery.recover(self.config, self.layout, self.telemetry, self.clock)
        for item in outcome.ready:
            heapq.heappush(self._ready, _Ready(order_key(item, self.clock()), item, 0.0, _signature(item.path)))
        for report in outcome.finished:
            self._apply(report)
        self.index.refresh()
        if self.upkeep.owed_handoffs():
            self.index.refresh()

    def _reload(self) -> None:
        """SIGHUP: load the configuration again; a bad one is refused and the running one kept."""
        self._reload_requested.clear()
        self.notifier.reloading()
        try:
            fresh = load_config(self.config.repo, self.config.git_dir, self.config.config_dir,
                                env=self.config.env)
        except ConfigError as exc:
            log.error("config.reload_refused", problems=[p.render() for p in exc.problems],
                      note="the previous configuration stays in force; fix the files and send SIGHUP again")
        else:
            changed = [key for key in RESTART_ONLY if getattr(fresh.daemon, key) != getattr(self.config.daemon, key)]
            if changed:
                log.error("config.reload_refused", changed=changed,
                          note="these settings apply only at start-up; the previous configuration stays in "
                               "force: restart the daemon to apply them")
            else:
                self.config = fresh
                self.upkeep.reload(fresh)
                self._release_budget_holds()
                log.info("config.reloaded", max_parallel=fresh.daemon.max_parallel)
        self.notifier.ready(self._status_line())

    def _release_budget_holds(self) -> None:
        """A reload may have raised a budget: claimed tasks held by one are looked at again now."""
        self.budgets.invalidate()
        for item in self._ready:
            if self._held.get(item.task.id, "").startswith("budget:"):
                item.not_before = 0.0
                self._held.pop(item.task.id, None)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_stop(signum: int, _frame: FrameType | None) -> None:   # flags only: the loop acts on them
            if self._stop_requested.is_set():
                self._force_requested.set()
            self.request_stop()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda _s, _f: self.request_reload())

    def _force_stop(self) -> None:
        for running in self._running.values():
            running.cancel.set()

    def _shutdown(self, scheduler: Any) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        scheduler.shutdown(wait=False)
        self._drain()
        self._force_stop()
        for running in list(self._running.values()):
            try:
                running.future.result(timeout=self.config.daemon.kill_grace_s + 30)
            except Exception:  # the task stays in assigned/ and recovery picks it up
                log.exception("task.shutdown_error", task_id=running.task.id)
        self._reap()
        self._executor.shutdown(wait=True)
        self.upkeep.stop()                      # final status files and board commit
        self._write_status(stopped=True)
        self.telemetry.close()
        log.info("daemon.stopped", completed=self.completed)

    def _drain(self) -> None:
        """Warm shutdown: let running agents finish within the grace (a second SIGTERM cuts it short)."""
        grace = self.config.daemon.drain_grace_s
        deadline = time.monotonic() + grace
        if self._running:
            log.info("daemon.draining", running=len(self._running), grace_s=grace)
        extended_at = -EXTEND_EVERY_S
        while self._running and time.monotonic() < deadline and not self._force_requested.is_set():
            self.heartbeat.beat()
            if time.monotonic() - extended_at >= EXTEND_EVERY_S:
                extended_at = time.monotonic()
                left = deadline - extended_at
                self.notifier.extend_timeout(left + self.config.daemon.kill_grace_s + STOP_MARGIN_S)
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
        now = self.clock()
        paused = sum(1 for until in self._paused.values() if until > now)
        return status_line(running=len(self._running), queued=len(self._ready) + len(self._waiting), paused=paused)

    def _notify_status(self) -> None:
        """STATUS= for `systemctl status`, sent only when it changes."""
        line = self._status_line()
        if line != self._last_status_line:
            self._last_status_line = line
            self.notifier.status(line)

    def _write_status(self, *, stopped: bool = False) -> None:
        """A snapshot for `conveyor status` (another process): running, queued, waiting, paused.

        At most every STATUS_INTERVAL_S while busy (a flood makes a loop pass per finished task, and
        serialising a thousand queued tasks each time was a real share of the daemon's time); the queued
        list is cut at STATUS_QUEUED_LIMIT entries, with the full count beside it.
        """
        now = self.clock()
        moment = time.monotonic()
        if not stopped and moment - self._status_written < STATUS_INTERVAL_S:
            return
        self._status_written = moment
        ready = heapq.nsmallest(STATUS_QUEUED_LIMIT, self._ready)
        snapshot = {
            "pid": os.getpid(),
            "stopped": stopped,
            "updated_at": utc_iso(now),
            "started_at": utc_iso(self.started_at),
            "running": [{"id": r.task.id, "agent": r.task.agent, "started_at": utc_iso(r.started)}
                        for r in self._running.values()],
            "queued": [{"id": r.task.id, "agent": r.task.agent,
                        "not_before": utc_iso(r.not_before) if r.not_before > now else None}
                       for r in ready],
            "queued_count": len(self._ready),
            "waiting": [{"id": w.task.id, "reason": w.reason} for w in self._waiting],
            "paused_tools": {tool: utc_iso(until) for tool, until in self._paused.items() if until > now},
            "pauses": [pause.as_status() for pause in self.health.active()],
            "held": [{"id": task_id, "reason": reason} for task_id, reason in self._held.items()],
        }
        try:
            yamlio.atomic_write(self.config.state_dir / STATUS_FILE, _json(snapshot), durable=False)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1)


__all__ = ["STATUS_FILE", "ConveyorError", "Daemon"]
