"""The daemon: the only module that knows every component (watcher → board → queue → pipeline → telemetry).

One main loop owns all state. File events, the periodic rescan, finished workers and signals only set
flags or wake the loop; the loop claims, dispatches and records. That keeps every decision on one thread
and makes the loop drivable in tests (`once=True`, a clock passed in).
"""

from __future__ import annotations

import heapq
import os
import signal
import stat
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from conveyor import board, git, recovery, yamlio
from conveyor.board import BoardLayout
from conveyor.board_index import BoardIndex, Known
from conveyor.config import Config, load_config
from conveyor.errors import ConfigError, ConveyorError, Problem, TaskFileError
from conveyor.lock import DaemonLock
from conveyor.pipeline import Collaborators, Disposition, Report, run_task
from conveyor.queue import Waiting, order_key, plan
from conveyor.task import Task, parse_task
from conveyor.telemetry import Telemetry
from conveyor.timeutil import Clock, utc_iso
from conveyor.watcher import InboxWatcher

log = structlog.get_logger("conveyor.daemon")
SETTLE_S = 2.0          # an unreadable file this recent may still be being written: look again later
STATUS_FILE = "status.json"


@dataclass(order=True)
class _Ready:
    key: tuple[int, float, str]
    task: Task = field(compare=False)
    not_before: float = field(default=0.0, compare=False)
    signature: tuple[int, int, int] | None = field(default=None, compare=False)


@dataclass
class _Running:
    task: Task
    future: Future[Report]
    cancel: threading.Event
    started: float


@dataclass
class _Seen:
    signature: tuple[int, int, int]
    task: Task | None
    first_seen: float


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
        self.telemetry = Telemetry(config.telemetry_db, privacy=config.daemon.privacy)
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._reload_requested = threading.Event()
        self._ready: list[_Ready] = []
        self._running: dict[str, _Running] = {}
        self._seen: dict[Path, _Seen] = {}
        self._waiting: list[Waiting] = []
        self._paused: dict[str, float] = {}
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="task")
        self.started_at = clock()
        self.completed = 0
        self._reap_worktrees_due = False

    # ------------------------------------------------------------------ public control
    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        self._stop_requested.set()
        self._wake.set()

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
            watcher, scheduler = self._start_background()
            log.info("daemon.ready", repo=str(self.config.repo), board=str(self.layout.root),
                     max_parallel=self.config.daemon.max_parallel, once=self.once)
            try:
                self._loop()
            finally:
                self._shutdown(watcher, scheduler)
        return 0

    def _loop(self) -> None:
        while not self._stop_requested.is_set():
            self._wake.clear()
            if self._reload_requested.is_set():
                self._reload()
            self._reap()
            if self._reap_worktrees_due:
                self._reap_worktrees_due = False
                recovery.reap_worktrees(self.config, keep=set(self._running))
            claimed = self._intake()
            started = self._dispatch()
            self._write_status()
            if self.once and not self._running and not claimed and not started and not self._due_ready():
                log.info("daemon.idle_exit", completed=self.completed, waiting=len(self._waiting))
                return
            self._wake.wait(self._sleep_time())

    def _sleep_time(self) -> float:
        timeout = self.config.daemon.rescan_interval_s if not self.once else 0.5
        now = self.clock()
        future = [item.not_before - now for item in self._ready if item.not_before > now]
        if future:
            timeout = min(timeout, max(min(future), 0.01))
        if any(seen.task is None for seen in self._seen.values()):
            timeout = min(timeout, SETTLE_S / 2)
        return timeout

    def _start_background(self) -> tuple[InboxWatcher | None, Any]:
        from apscheduler.schedulers.background import BackgroundScheduler

        watcher = None
        if self.watch:
            watcher = InboxWatcher(self.layout.inbox, self.wake)
            watcher.start()
        scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
        scheduler.add_job(self.wake, "interval", seconds=self.config.daemon.rescan_interval_s, id="rescan")
        scheduler.add_job(self._reap_worktrees_soon, "interval", minutes=10, id="worktree-reaper")
        scheduler.start()
        return watcher, scheduler

    def _reap_worktrees_soon(self) -> None:
        self._reap_worktrees_due = True
        self.wake()

    # ------------------------------------------------------------------ intake
    def _intake(self) -> int:
        """Scan inbox, reject what cannot run, plan the rest, claim what may run now; returns claims."""
        if self._stop_requested.is_set():
            return 0
        self.index.refresh()
        tasks = self._read_inbox()
        first_seen = {seen.task.id: seen.first_seen for seen in self._seen.values() if seen.task}
        result = plan(tasks, self.index.get, first_seen)
        for cycle in result.cycles:
            names = " → ".join(t.id for t in cycle)
            for task in cycle:
                self._reject(task.path, [Problem(str(task.path), f"is part of a dependency cycle: {names}",
                                                 "remove one of the dependencies so the tasks can run in order",
                                                 field="dependencies")])
        waiting = list(result.waiting)
        claimed = 0
        not_ready: dict[str, str | None] = {}
        for task in result.runnable:
            base = task.base_branch or self.config.daemon.base_branch
            if base not in not_ready:
                not_ready[base] = git.base_not_ready(self.config.repo, base, self.config.git_dir)
            if not_ready[base]:
                waiting.append(Waiting(task, str(not_ready[base])))
                continue
            claimed += self._claim(task)
        self._waiting = waiting
        return claimed

    def _read_inbox(self) -> list[Task]:
        tasks: list[Task] = []
        ids: dict[str, Path] = {}
        present: set[Path] = set()
        now = self.clock()
        for path in board.inbox_entries(self.layout):
            present.add(path)
            task = self._read_one(path, now)
            if task is None:
                continue
            if task.id in ids:
                self._reject(path, [Problem(str(path), f"duplicates the id of {ids[task.id].name} in inbox/",
                                            "give each task a unique id (and file name)", field="id")])
                continue
            known = self.index.get(task.id)
            if known is not None:
                self._reject(path, [Problem(str(path), f"{task.id!r} is already on the board at {known.path}",
                                            "a task runs once: give the new task a new id", field="id")])
                continue
            if self.config.agent(task.agent) is None:
                self._reject(path, [Problem(str(path), f"no agents.yaml entry serves agent {task.agent!r}",
                                            "add the agent (or a `default` entry) to config/agents.yaml",
                                            field="agent")])
                continue
            ids[task.id] = path
            tasks.append(task)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return tasks

    def _read_one(self, path: Path, now: float) -> Task | None:
        """Parse (or reuse) one inbox file; unreadable files are rejected once they have settled."""
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        seen = self._seen.get(path)
        if seen is not None and seen.signature == signature and seen.task is not None:
            return seen.task
        first_seen = seen.first_seen if seen else now
        if not stat.S_ISREG(info.st_mode):
            kind = "symbolic link" if stat.S_ISLNK(info.st_mode) else "directory" if stat.S_ISDIR(
                info.st_mode) else "special file (FIFO, socket or device)"
            self._reject(path, [Problem(str(path), f"is a {kind}, not a regular file",
                                        "put the task file itself into inbox/")])
            return None
        try:
            task = parse_task(path)
        except TaskFileError as exc:
            if time.time() - info.st_mtime_ns / 1e9 < SETTLE_S:
                self._seen[path] = _Seen(signature, None, first_seen)  # may still be being written
                return None
            self._reject(path, exc.problems)
            return None
        for warning in task.warnings:
            log.warning("task.warning", task_id=task.id, problem=warning.render())
        self._seen[path] = _Seen(signature, task, first_seen)
        return task

    def _reject(self, path: Path, problems: list[Problem]) -> None:
        target = board.reject(self.layout, path, problems, utc_iso(self.clock()))
        self._seen.pop(path, None)
        if target is not None:
            log.error("task.rejected", file=path.name, moved_to=str(target),
                      problems=[p.render() for p in problems])

    def _claim(self, task: Task) -> int:
        source = task.path
        signature = self._seen[source].signature if source in self._seen else None
        try:
            target = board.claim(self.layout, source, task.agent)
        except FileExistsError:
            self._reject(source, [Problem(str(source), f"{task.id!r} is already assigned",
                                          "a task runs once: give the new task a new id", field="id")])
            return 0
        self._seen.pop(source, None)
        if target is None:
            return 0
        task.path = target
        if "assigned_at" not in task.data:
            task.data["assigned_at"] = utc_iso(self.clock())
        self.index.note(Known(task.id, "assigned", target))
        heapq.heappush(self._ready, _Ready(order_key(task, self.clock()), task, 0.0, signature))
        log.info("task.claimed", task_id=task.id, agent=task.agent, priority=task.priority)
        return 1

    # ------------------------------------------------------------------ dispatch and reaping
    def _due_ready(self) -> bool:
        now = self.clock()
        return any(item.not_before <= now for item in self._ready)

    def _dispatch(self) -> int:
        if self._stop_requested.is_set():
            return 0
        started = 0
        now = self.clock()
        deferred: list[_Ready] = []
        while self._ready and len(self._running) < self.config.daemon.max_parallel:
            item = heapq.heappop(self._ready)
            if item.not_before > now:
                deferred.append(item)
                continue
            task = self._recheck(item)
            if task is None:
                continue
            cancel = threading.Event()
            deps = self._collaborators()
            future = self._executor.submit(run_task, task, deps, cancel)
            self._running[task.id] = _Running(task, future, cancel, now)
            future.add_done_callback(lambda _f: self.wake())
            started += 1
        for item in deferred:
            heapq.heappush(self._ready, item)
        return started

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
                             env=self.env, is_paused=self._paused_until)

    def _paused_until(self, tool: str) -> float | None:
        until = self._paused.get(tool)
        return until if until is not None and until > self.clock() else None

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
        for tool, until in report.paused_tools.items():
            self._paused[tool] = max(until, self._paused.get(tool, 0.0))
        if report.disposition is Disposition.REQUEUED:
            heapq.heappush(self._ready, _Ready(order_key(task, self.clock()), task, report.not_before,
                                               _signature(task.path)))
            log.info("task.requeued", task_id=task.id, reason=report.reason,
                     not_before=utc_iso(report.not_before) if report.not_before else None)
            return
        status = "done" if report.disposition is Disposition.DONE else "error"
        self.index.note(Known(task.id, status, task.path))
        self.completed += 1
        log.info("task.finished", task_id=task.id, status=status, path=str(task.path))

    # ------------------------------------------------------------------ recovery, reload, shutdown
    def _recover(self) -> None:
        """Start-up: requeue or resume what a previous run left in assigned/; mark stale telemetry."""
        outcome = recovery.recover(self.config, self.layout, self.telemetry, self.clock)
        for item in outcome.ready:
            heapq.heappush(self._ready, _Ready(order_key(item, self.clock()), item, 0.0, _signature(item.path)))
        for report in outcome.finished:
            self._apply(report)
        self.index.refresh()

    def _reload(self) -> None:
        self._reload_requested.clear()
        try:
            fresh = load_config(self.config.repo, self.config.git_dir, self.config.config_dir)
        except ConfigError as exc:
            log.error("config.reload_refused", problems=[p.render() for p in exc.problems],
                      note="the previous configuration stays in force")
            return
        self.config = fresh
        log.info("config.reloaded")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            if self._stop_requested.is_set():
                self._force_stop()
            self.request_stop()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda _s, _f: self.request_reload())

    def _force_stop(self) -> None:
        for running in self._running.values():
            running.cancel.set()

    def _shutdown(self, watcher: InboxWatcher | None, scheduler: Any) -> None:
        if watcher is not None:
            watcher.stop()
        scheduler.shutdown(wait=False)
        deadline = time.monotonic() + self.config.daemon.drain_grace_s
        if self._running:
            log.info("daemon.draining", running=len(self._running), grace_s=self.config.daemon.drain_grace_s)
        while self._running and time.monotonic() < deadline:
            self._wake.wait(0.2)
            self._wake.clear()
            self._reap()
        self._force_stop()
        for running in list(self._running.values()):
            try:
                running.future.result(timeout=self.config.daemon.kill_grace_s + 30)
            except Exception:  # the task stays in assigned/ and recovery picks it up
                log.exception("task.shutdown_error", task_id=running.task.id)
        self._reap()
        self._executor.shutdown(wait=True)
        self._write_status(stopped=True)
        log.info("daemon.stopped", completed=self.completed)

    # ------------------------------------------------------------------ status snapshot
    def _write_status(self, *, stopped: bool = False) -> None:
        """A snapshot for `conveyor status` (another process): running, queued, waiting, paused."""
        now = self.clock()
        snapshot = {
            "pid": os.getpid(),
            "stopped": stopped,
            "updated_at": utc_iso(now),
            "started_at": utc_iso(self.started_at),
            "running": [{"id": r.task.id, "agent": r.task.agent, "started_at": utc_iso(r.started)}
                        for r in self._running.values()],
            "queued": [{"id": r.task.id, "agent": r.task.agent,
                        "not_before": utc_iso(r.not_before) if r.not_before > now else None}
                       for r in sorted(self._ready)],
            "waiting": [{"id": w.task.id, "reason": w.reason} for w in self._waiting],
            "paused_tools": {tool: utc_iso(until) for tool, until in self._paused.items() if until > now},
        }
        try:
            yamlio.atomic_write(self.config.state_dir / STATUS_FILE, _json(snapshot), durable=False)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1)


__all__ = ["STATUS_FILE", "ConveyorError", "Daemon"]
