"""Everything the daemon does around tasks rather than with them: ROADMAP.md, hand-offs, archival, the
board's report files and board commits.

The daemon calls in at fixed points of its loop (`before_intake`, `after_dispatch`) and on each
transition (`note`, `finished`, `rejected`); scheduled jobs and the ROADMAP.md watcher only set flags and
wake the loop, so every decision is still made on the loop's thread. A failure here is logged and never
stops the daemon: tasks matter more than their paperwork.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from conveyor.board import layout as board
from conveyor.board.archive import archive_slice
from conveyor.board.commits import BoardCommitter
from conveyor.board.handoff_tasks import create_handoff, followup_id, next_agent_of
from conveyor.board.index import BoardIndex
from conveyor.board.layout import BoardLayout
from conveyor.board.reports import (
    AGENT_STATUS,
    LOG_MARK,
    RECENT,
    STATUS_MARK,
    STATUS_MIN_INTERVAL_S,
    WORKFLOW_LOG,
    AgentStatusFile,
    Snapshot,
    Tally,
    Transition,
    WorkflowLog,
    render_agent_status,
    report_path,
    result_of,
)
from conveyor.config import Config
from conveyor.core import yamlio
from conveyor.core.errors import ConveyorError, Problem, TaskFileError
from conveyor.core.state_files import task_branch
from conveyor.core.task import Task, parse_task, task_id_from_path
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.daemon.periodic import Periodic
from conveyor.daemon.watcher import FileWatcher
from conveyor.notify.dispatcher import Notifications
from conveyor.notify.hooks import finished_event, needs_input_event
from conveyor.publish.outcomes import merged_locally
from conveyor.roadmap.sync import RoadmapSync
from conveyor.telemetry.base import TelemetryStore

log = structlog.get_logger("conveyor.daemon.upkeep")
ARCHIVE_EVERY_S = 3600.0
SLICE_GAP_S = 0.2        # archival with files left runs its next slice this soon ...
INDEX_GAP_S = 0.02       # ... and the history table's rebuild (each slice is <= 50 ms; events run in between)
HISTORY_EVERY_S = 60.0   # the history table's reconcile of done/ (also woken after each slice with work left)
MERGE_CHECK_EVERY_S = 60.0
NOTIFY_FLUSH_S = 5.0      # at stop, queued notifications get this long to go out

__all__ = ["Snapshot", "Upkeep"]


class Upkeep:
    def __init__(self, config: Config, layout: BoardLayout, index: BoardIndex, telemetry: TelemetryStore, clock: Clock,
                 snapshot: Callable[[], Snapshot], periodic: Periodic) -> None:
        self.config = config
        self.layout = layout
        self.index = index
        self.telemetry = telemetry
        self.clock = clock
        self._snapshot = snapshot
        beside = config.daemon.handoffs == "external"
        self.workflow_log = WorkflowLog(report_path(layout.root, WORKFLOW_LOG, LOG_MARK, beside_orchestrator=beside))
        self.status_file = AgentStatusFile(report_path(layout.root, AGENT_STATUS, STATUS_MARK,
                                                       beside_orchestrator=beside))
        self.tally = Tally()
        self.roadmap = RoadmapSync(config, layout, clock, record=self._record)
        self.committer = BoardCommitter(config)
        self._tally_ready = False
        self._status_dirty = True
        self._updated_at = clock()
        self._force_sync = True
        self._watcher: FileWatcher | None = None
        self._periodic = periodic
        self._archive_cursor: tuple[float, str] | None = None
        self._archive_owed = False     # a pass was put off (the table was rebuilding) or has slices left
        self._merge_owed = threading.Event()   # set by the PR watcher's thread, acted on by the loop
        self._wake: Callable[[], None] | None = None
        self.notifications = Notifications(config.daemon.notifications, config.repo.name, config.env)

    # ------------------------------------------------------------------ lifecycle
    def start(self, wake: Callable[[], None], *, watch: bool) -> None:
        """Register the periodic jobs (run on the loop's thread by `periodic`) and watch ROADMAP.md."""
        self._wake = wake
        periodic = self._periodic
        periodic.every("archive", ARCHIVE_EVERY_S, self._archive_slice, at_start=True)   # Periodic logs a failure
        periodic.every("history", HISTORY_EVERY_S, self._history_step, at_start=True)
        periodic.every("merge-check", MERGE_CHECK_EVERY_S, self.check_merges, at_start=True)
        periodic.every("roadmap-resync", self.config.daemon.rescan_interval_s, self._resync_roadmap, at_start=True)
        # a change left unwritten by the rate limit gets written on the next pass
        periodic.every("status-files", STATUS_MIN_INTERVAL_S, lambda: None)
        self._ensure_tally()
        path = self.roadmap.path
        if watch and self.roadmap.enabled and path.parent.is_dir():
            self._watcher = FileWatcher(path, wake)
            self._watcher.start()

    def check_merges(self) -> None:
        """Mark roadmap items whose task's change reached the base branch as completed (unless
        `follow_up.complete_on_merge` is false: then a person marks them)."""
        self._merge_owed.clear()
        if self.config.daemon.follow_up.complete_on_merge:
            self._guard("merge_check", lambda: self.roadmap.check_merged(self._merged))

    def merge_seen(self) -> None:
        """The PR watcher (another thread) recorded a merge: check the roadmap on the loop's next pass."""
        self._merge_owed.set()
        if self._wake is not None:
            self._wake()

    def _resync_roadmap(self) -> None:
        self._force_sync = True

    def stop(self) -> None:
        """Last words: the final AGENT_STATUS.md, the buffered log lines, and one last board commit."""
        if self._watcher is not None:
            self._watcher.stop()
        self._guard("reports", lambda: self._write_reports(force=True))
        self._guard("workflow_log", self.workflow_log.flush)
        self._guard("board_commit", self.committer.commit)
        self.index.history.close()
        self.notifications.close(timeout=NOTIFY_FLUSH_S)

    def reload(self, config: Config) -> None:
        self.config = config
        self.roadmap.config = config
        self.committer.config = config
        if config.daemon.notifications != self.notifications.settings:
            self.notifications.close(timeout=NOTIFY_FLUSH_S)
            self.notifications = Notifications(config.daemon.notifications, config.repo.name, config.env)

    # ------------------------------------------------------------------ transitions
    def note(self, event: str, task: Task, detail: str = "") -> None:
        self._record(event, task.id, task.agent, detail)

    def rejected(self, path: Path, problems: list[Problem]) -> None:
        task_id = task_id_from_path(path)
        reason = problems[0].message if problems else "unreadable"
        agent = path.parent.name if path.parent.parent == self.layout.assigned else ""
        self._record("rejected", task_id, agent, reason)
        self._guard("roadmap", lambda: self.roadmap.task_rejected(task_id, agent, reason))

    def parked(self, task: Task, question: str) -> None:
        """A task waits for a person's answer: log it and tell the channels that want `needs_input`."""
        self._record("needs_input", task.id, task.agent, question[:200])
        self.notifications.emit(needs_input_event(task, question, utc_iso(self.clock())))

    def finished(self, task: Task, status: str, detail: str = "") -> None:
        """A task reached done/ (status done or error): log it, hand it off, write its roadmap status."""
        if self._tally_ready:
            self.tally.finished(task, status)
        self._record(status, task.id, task.agent, detail or _result_detail(task))
        self.notifications.emit(finished_event(task, status, utc_iso(self.clock())))
        if status == "done" and self._makes_handoffs():
            self._guard("handoff", lambda: self._handoff(task))
        self._guard("roadmap", lambda: self.roadmap.task_finished(task, status))

    def _makes_handoffs(self) -> bool:
        """Hand-offs are this daemon's to make on a single host with `handoffs: conveyor`; in a fleet the
        board leader makes them on the board branch (a file in this clone's inbox/ would never be read)."""
        return self.config.daemon.handoffs == "conveyor" and self.config.daemon.coordination is None

    def _handoff(self, task: Task) -> None:
        result = task.data.get("result")
        if not isinstance(result, dict) or not result.get("next_agent") or "handoff_task" in result:
            return
        if create_handoff(self.layout, task, utc_iso(self.clock())) is not None:
            agent = next_agent_of(task) or ""
            self._record("handoff", followup_id(task.id, agent), agent, f"from {task.id}")
        # Written after the follow-up exists, so a crash between the two is repaired at start-up
        # (`owed_handoffs`), and a follow-up the user deletes later is not made again.
        next_agent = next_agent_of(task)
        made = followup_id(task.id, next_agent) if next_agent else None
        board.rewrite(task, {"result": {**result, "handoff_task": made if made and board.find_task(
            self.layout, made) else None}})
        self.index.finished(task, "done")          # the history table's copy owes no hand-off any more

    def owed_handoffs(self) -> int:
        """Make the hand-offs of done tasks whose daemon stopped between done/ and the follow-up (the history
        table marks them: `result.next_agent` without `result.handoff_task`). Returns how many."""
        if not self._makes_handoffs():
            return 0   # the workflow's orchestrator makes them, or in a fleet the board leader does
        owed = {known.path: known for known in self.index.pending_handoffs()}
        for known in owed.values():
            try:
                parent = parse_task(known.path)
            except (TaskFileError, OSError):
                continue
            log.warning("handoff.owed", task_id=parent.id, note="the daemon stopped before making its hand-off")
            self._guard("handoff", lambda parent=parent: self._handoff(parent))  # type: ignore[misc]
        return len(owed)

    def _record(self, event: str, task_id: str, agent: str, detail: str) -> None:
        now = self.clock()
        self.workflow_log.add(Transition(now, event, task_id, agent, detail))
        self.committer.note(event, task_id)
        self._updated_at = now
        self._status_dirty = True

    # ------------------------------------------------------------------ loop hooks
    def before_intake(self) -> None:
        """Turn the roadmap's next items into inbox tasks (re-reading the file when the periodic resync is due)."""
        if self._merge_owed.is_set():
            self.check_merges()
        force, self._force_sync = self._force_sync, False
        self._guard("roadmap", lambda: self.roadmap.sync(force=force))

    def after_dispatch(self) -> None:
        """Write what changed this pass: AGENT_STATUS.md (when due), log lines, one board commit."""
        self._guard("reports", self._write_reports)
        self._guard("workflow_log", self.workflow_log.flush)
        self._guard("board_commit", self.committer.commit)

    # ------------------------------------------------------------------ the work
    def _write_reports(self, *, force: bool = False) -> None:
        if not self._status_dirty or not (force or self.status_file.due()):
            return
        self._ensure_tally()
        self._status_dirty = False
        if self.status_file.write(render_agent_status(self.tally, self._snapshot(), self._updated_at)):
            self.committer.touch()

    def _ensure_tally(self) -> None:
        if not self._tally_ready:
            history = self.index.history
            # the few latest read their own file: summaries and error messages are not kept in the state folder
            recent = [result_of(e.task_id, e.agent, yamlio.read_mapping(self.layout.root / e.file) or e.facts)
                      for e in reversed(history.latest(RECENT))]
            self.tally.reset_from(history.counts(), recent)
            self._tally_ready = True

    def _archive_slice(self) -> None:
        """One slice (at most archive.SLICE files); with candidates left, the next runs SLICE_GAP_S later.
        While the history table is being rebuilt its candidates are incomplete: wait for it."""
        self._archive_owed = True
        if self.index.sync.rebuilding:
            self._periodic.soon("archive", SLICE_GAP_S)
            return
        done = archive_slice(self.layout, self.index.history, self.clock(), self.config.daemon.archive_after_days,
                             cursor=self._archive_cursor)
        for moved in done.moved:
            if self._tally_ready:
                self.tally.archived(moved.agent, moved.status)
            self._record("archived", moved.task_id, moved.agent, f"to archive/{moved.target.parent.name}/")
        self._archive_cursor = done.cursor if done.more else None
        self._archive_owed = done.more
        if done.more:
            self._periodic.soon("archive", SLICE_GAP_S)

    def slicing(self) -> bool:
        """Whether a sliced job (archival, the history table's rebuild) has work left (`--once` waits for it).
        Work the history job did not queue itself (a board refresh's reconcile of done/) brings the job
        forward: it waited for its next period, and `--once` waited 60 s with it."""
        busy = self.index.sync.busy
        if busy:
            self._periodic.soon("history", INDEX_GAP_S)
        return self._archive_owed or busy

    def _history_step(self) -> None:
        """Reconcile done/ with the history table, and index one slice of what is pending (a rebuild)."""
        self.index.sync.reconcile()
        written = self.index.sync.step()
        if written:
            self._tally_ready = False        # recounted (one query) when AGENT_STATUS.md is next written
            self._status_dirty = True
            if any(entry.pending_handoff for entry in written):
                self.owed_handoffs()
        if self.index.sync.busy:
            self._periodic.soon("history", INDEX_GAP_S)

    def _merged(self, task_id: str, document: Mapping[str, Any]) -> bool:
        """Whether a finished task's work reached its base: the pull request was recorded merged, or its
        commit is reachable from the base branch (merged locally, or the branch deleted after merging)."""
        result = document.get("result") if isinstance(document.get("result"), Mapping) else {}
        assert isinstance(result, Mapping)
        branch = str(result.get("branch") or task_branch(task_id))
        if self._pull_request_state(branch) == "merged":
            return True
        context = document.get("context")
        base = context.get("branch") if isinstance(context, Mapping) else None
        base = str(base or self.config.daemon.base_branch)
        commit = result.get("commit")
        return merged_locally(self.config, branch, commit if isinstance(commit, str) else None, base)

    def _pull_request_state(self, branch: str) -> str | None:
        """What merge detection (pull-request outcomes in telemetry) last recorded for the branch."""
        return self.telemetry.pull_request_state(branch)

    def _guard(self, step: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (ConveyorError, OSError) as exc:
            log.error("upkeep.failed", step=step, error=str(exc))
        except Exception:  # paperwork must never take the daemon down; the traceback goes to the log
            log.exception("upkeep.internal_error", step=step)


def _result_detail(task: Task) -> str:
    error = task.data.get("error")
    if isinstance(error, Mapping) and error.get("message"):
        return str(error["message"])
    result = task.data.get("result")
    if isinstance(result, Mapping):
        return str(result.get("pr_url") or result.get("branch") or result.get("summary") or "")
    return ""
