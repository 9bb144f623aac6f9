"""What `conveyor status` shows, computed from the board on disk plus the running daemon's snapshot.

The board folders are the truth (they work with no daemon running); the daemon's `status.json` adds
what only it knows: which claimed tasks are running now, paused tools, and when it last looked.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.board import layout as board
from conveyor.board.history import DONE, History
from conveyor.board.index import BoardIndex
from conveyor.board.layout import BoardLayout
from conveyor.config.board_settings import BoardSettings
from conveyor.core import yamlio
from conveyor.core.errors import ConveyorError, TaskFileError
from conveyor.core.state_files import HISTORY_FILE, LOCK_FILE, STATUS_FILE
from conveyor.core.task import Task, parse_task
from conveyor.core.timeutil import parse_iso, utc_iso
from conveyor.daemon.lock import holder_pid
from conveyor.daemon.snapshot import StatusSnapshot
from conveyor.scheduling import budgets
from conveyor.scheduling.queue import plan
from conveyor.scheduling.tool_health import PAUSES_FILE, Pause, read_pauses
from conveyor.telemetry.store import Telemetry

if TYPE_CHECKING:
    from conveyor.config import Config
    from conveyor.coordination.shared import Shared

RECENT = 10


@dataclass
class BoardStatus:
    daemon: dict[str, Any] | None = None
    queued: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    running: list[dict[str, Any]] = field(default_factory=list)
    claimed: list[dict[str, Any]] = field(default_factory=list)
    needs_input: list[dict[str, Any]] = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    paused_tools: list[dict[str, Any]] = field(default_factory=list)
    pending_publications: list[dict[str, Any]] = field(default_factory=list)   # done, push or PR still owed
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_status(source: Config | BoardSettings, now: float) -> BoardStatus:
    """The board at `now`; `conveyor status` passes the remembered settings (no pydantic), others a Config."""
    config = source if isinstance(source, BoardSettings) else BoardSettings.of(source)
    layout = BoardLayout(config.board_root)
    status = BoardStatus(daemon=_daemon_state(config))
    history = _history(config)
    index = BoardIndex(layout, history or History.in_memory())   # looks up only what the inbox depends on
    status.paused_tools = _paused_tools(config, status.daemon, now)
    _inbox(layout, index, status, now)
    _hold_for_budgets(config, status, now)
    _assigned(layout, status, now)
    if history is not None:
        _finished_from_history(history, layout.root, status)
        history.close()
    else:
        _finished(layout, status)
    _rejected(layout, status)
    status.counts = {"queued": len(status.queued), "waiting": len(status.waiting), "running": len(status.running),
                     "claimed": len(status.claimed), "needs_input": len(status.needs_input),
                     "done": status.counts.get("done", 0),
                     "errors": status.counts.get("errors", 0), "rejected": len(status.rejected)}
    return status


def _daemon_state(config: BoardSettings) -> dict[str, Any] | None:
    pid = holder_pid(config.state_dir / LOCK_FILE)
    snapshot = StatusSnapshot.load(config.state_dir / STATUS_FILE)
    if pid is None:
        return {"running": False, "last_seen": snapshot.updated_at} if snapshot else None
    if snapshot is None:
        return {"running": True, "pid": pid, "updated_at": None, "started_at": None, "paused_tools": None,
                "pauses": None, "queued": None, "held": None, "draining": False, "drain_until": None}
    return {"running": True, "pid": pid, "updated_at": snapshot.updated_at, "started_at": snapshot.started_at,
            "paused_tools": snapshot.paused_tools, "pauses": snapshot.pauses, "queued": snapshot.queued,
            "held": snapshot.held, "draining": snapshot.draining and not snapshot.stopped,
            "drain_until": snapshot.drain_until}


def _paused_tools(config: BoardSettings, daemon: dict[str, Any] | None, now: float) -> list[dict[str, Any]]:
    """Paused tools and when they resume: the running daemon's word, else the persisted pause file."""
    if config.coordination is not None:   # the fleet's pauses hold on every node
        fleet = _fleet_pauses(config, now)
        if fleet is not None:
            return fleet
    if daemon and daemon.get("running") and isinstance(daemon.get("pauses"), list):
        return [pause for pause in daemon["pauses"] if (parse_iso(str(pause.get("until"))) or 0) > now]
    return read_pauses(config.state_dir / PAUSES_FILE, now)


def _fleet_pauses(config: BoardSettings, now: float) -> list[dict[str, Any]] | None:
    rows = None
    with contextlib.suppress(ConveyorError), _shared(config) as shared:
        rows = shared.pauses.fetch(now) if shared.pauses is not None else None
    if rows is None:
        return None
    return sorted((Pause(**row).as_status() for row in rows), key=lambda item: str(item["tool"]))


@contextlib.contextmanager
def _shared(config: BoardSettings) -> Iterator[Shared]:
    """The fleet's shared stores, imported only for a fleet (a single host's status needs none of it)."""
    from conveyor.coordination.shared import open_stores
    from conveyor.core.logs import apply_deferred_logging

    apply_deferred_logging()   # the fleet's modules log through structlog directly
    shared = open_stores(config.coordination, config.telemetry_db, config.privacy)
    try:
        yield shared
    finally:
        shared.close()


def _hold_for_budgets(config: BoardSettings, status: BoardStatus, now: float) -> None:
    """Queued tasks whose agent (or everyone) has spent a hard budget wait in inbox/: say so, and until when.
    In a fleet the spend is the whole fleet's, with what its running tasks hold reserved."""
    if not config.budgets or not status.queued:
        return
    if config.coordination is not None:
        try:
            with _shared(config) as shared:
                states = budgets.evaluate(config.budgets, shared.ledger.spend, now)
        except ConveyorError:
            return                      # the fleet's part of `conveyor status` says the database is away
    elif config.telemetry_db.exists():
        telemetry = Telemetry(config.telemetry_db, privacy=config.privacy)
        states = budgets.evaluate(config.budgets, telemetry.spend, now)
    else:
        return
    still_queued = []
    for entry in status.queued:
        spent = budgets.task_block(states, str(entry["agent"]))
        if spent is None:
            still_queued.append(entry)
        else:
            status.waiting.append({"id": entry["id"], "agent": entry["agent"], "reason": f"budget: {spent.describe()}",
                                   "until": utc_iso(spent.resets_at)})
    status.queued = still_queued


def _age(value: str | None, now: float) -> float | None:
    moment = parse_iso(value) if value else None
    return round(now - moment, 1) if moment is not None else None


def _inbox(layout: BoardLayout, index: BoardIndex, status: BoardStatus, now: float) -> None:
    tasks: list[Task] = []
    for path in board.inbox_entries(layout):
        try:
            tasks.append(parse_task(path))
        except TaskFileError as exc:
            status.waiting.append({"id": path.name, "reason": "will be rejected: " + exc.problems[0].render()})
    result = plan(tasks, index.get, {})
    for task in result.runnable:
        status.queued.append({"id": task.id, "agent": task.agent, "priority": task.priority,
                              "age_s": _age(task.created_at, now)})
    for waiting in result.waiting:
        status.waiting.append({"id": waiting.task.id, "agent": waiting.task.agent, "reason": waiting.reason})
    for cycle in result.cycles:
        for task in cycle:
            status.waiting.append({"id": task.id, "agent": task.agent, "reason": "dependency cycle"})


def _assigned(layout: BoardLayout, status: BoardStatus, now: float) -> None:
    for path in board.task_files(layout.assigned):
        try:
            task = parse_task(path)
        except TaskFileError:
            continue
        entry = {"id": task.id, "agent": task.agent, "attempt": task.attempt}
        if task.data.get("status") == "needs_input":
            status.needs_input.append({**entry, "question": task.data.get("question"),
                                       "asked_at": task.data.get("asked_at"),
                                       "answered": bool(task.data.get("answer"))})
        elif task.data.get("status") == "in_progress":
            started = task.data.get("started_at")
            status.running.append({**entry, "started_at": started, "elapsed_s": _age(str(started), now)})
        else:
            status.claimed.append(entry)


def _history(config: BoardSettings) -> History | None:
    """The daemon's history table, read-only, when it is complete (else done/ is read, as with no daemon)."""
    path = config.state_dir / HISTORY_FILE
    if not path.is_file():
        return None
    history = History(path, readonly=True)
    try:
        if history.complete:
            return history
    except sqlite3.Error:
        pass
    history.close()
    return None


def _finished_from_history(history: History, board_root: Path, status: BoardStatus) -> None:
    """Counts and lists of `done/` from the history table: no task file is read."""
    done: list[dict[str, Any]] = []
    errors = 0
    for entry in history.in_area(DONE):         # newest first
        facts = entry.facts
        agent = entry.file.split("/")[-2] if entry.file.count("/") >= 2 else "done"
        completed = str(facts.get("completed_at") or "")
        if entry.status == "error":
            errors += 1
            error = _mapping(facts.get("error"))
            if errors <= ERROR_MESSAGES_READ:   # the message is in the task file only (never in the state folder)
                error = _mapping((yamlio.read_mapping(board_root / entry.file) or {}).get("error")) or error
            status.errors.append(_error_row(entry.task_id, agent, completed, error))
            continue
        result = _mapping(facts.get("result"))
        if result.get("publish_pending"):   # rare: read the file, the retry job may have settled it since
            document = yamlio.read_mapping(board_root / entry.file)
            result = _mapping(document.get("result")) if document else result
            _note_pending(status, entry.task_id, agent, result)
        if len(done) < RECENT:
            done.append(_done_row(entry.task_id, agent, completed, result))
        status.counts["done"] = status.counts.get("done", 0) + 1
    status.done = done
    status.errors.sort(key=lambda item: str(item["completed_at"]), reverse=True)
    status.counts.setdefault("done", 0)
    status.counts["errors"] = errors


ERROR_MESSAGES_READ = 200   # errors whose message `conveyor status` reads from their task file (newest first)


def _error_row(task_id: str, agent: str, completed: str, error: dict[str, Any]) -> dict[str, Any]:
    return {"id": task_id, "agent": agent, "completed_at": completed,
            "message": str(error.get("message", ""))[:200], "log": error.get("log")}


def _done_row(task_id: str, agent: str, completed: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": task_id, "agent": agent, "completed_at": completed, "branch": result.get("branch"),
            "commit": (result.get("commit") or "")[:10], "cost_usd": result.get("cost_usd")}


def _note_pending(status: BoardStatus, task_id: str, agent: str, result: dict[str, Any]) -> None:
    """A done task whose push or pull request is still owed (and not given up on)."""
    if result.get("publish_pending") and not result.get("publish_stop"):
        status.pending_publications.append({"id": task_id, "agent": agent, "pending": result.get("publish_pending"),
                                            "publish": str(result.get("publish") or "")[:200]})


def _finished(layout: BoardLayout, status: BoardStatus) -> None:
    done: list[tuple[str, dict[str, Any]]] = []
    errors = 0
    for path in board.task_files(layout.done):
        document = yamlio.read_mapping(path)
        if document is None:
            continue
        completed = str(document.get("completed_at") or "")
        if document.get("status") == "error":
            errors += 1
            status.errors.append(_error_row(path.stem, path.parent.name, completed, _mapping(document.get("error"))))
        else:
            result = _mapping(document.get("result"))
            _note_pending(status, path.stem, path.parent.name, result)
            done.append((completed, _done_row(path.stem, path.parent.name, completed, result)))
    done.sort(key=lambda item: item[0], reverse=True)
    status.done = [item for _, item in done[:RECENT]]
    status.errors.sort(key=lambda item: str(item["completed_at"]), reverse=True)
    status.counts["done"] = len(done)
    status.counts["errors"] = errors


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _rejected(layout: BoardLayout, status: BoardStatus) -> None:
    folder = layout.rejected
    if not folder.is_dir():
        return
    for report_path in sorted(folder.glob("*.error.yaml")):
        problems = (yamlio.read_mapping(report_path) or {}).get("problems")
        first: dict[str, Any] = problems[0] if isinstance(problems, list) and problems else {}
        status.rejected.append({"file": report_path.name.removesuffix(".error.yaml"),
                                "problem": f"{first.get('field') or ''} {first.get('message') or ''}".strip()})
