"""The live board: recomputed when a file moves on the board or the daemon rewrites its snapshot.

The dashboard watches the same folders the daemon serves (watchdog, as the daemon's own watcher) and
re-reads the board the way `conveyor status` does. Events only say "look again"; a slow periodic look is
the truth when inotify drops events. Every change gets the next version number, which is the server-sent
event id: a client that reconnects with `Last-Event-ID` gets the current board at once if it missed a
version, and waits for the next one otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

import anyio.to_thread
import structlog
from watchdog.observers import Observer

from conveyor.config import Config
from conveyor.core.state_files import STATUS_FILE
from conveyor.daemon.status import collect_status
from conveyor.daemon.watcher import WakeOnNames
from conveyor.scheduling.tool_health import PAUSES_FILE

log = structlog.get_logger("conveyor.dashboard")
DEBOUNCE_S = 0.05      # a claim is a link and an unlink: look once after both
POLL_S = 5.0           # the periodic look that catches what events missed
COLUMNS = ("inbox", "waiting", "running", "needs_input", "done", "errors", "rejected")


def board_view(status: dict[str, Any]) -> dict[str, Any]:
    """The Kanban columns of one `conveyor status` record (the page and the event stream show this)."""
    running_ids = {entry["id"] for entry in status.get("running", [])}
    columns: dict[str, list[dict[str, Any]]] = {
        "inbox": [{"id": e["id"], "agent": e.get("agent"), "note": e.get("priority")} for e in status["queued"]],
        "waiting": [{"id": e["id"], "agent": e.get("agent"), "note": e.get("reason")} for e in status["waiting"]],
        "running": [{"id": e["id"], "agent": e.get("agent"), "note": f"attempt {e.get('attempt')}"}
                    for e in status["running"]]
        + [{"id": e["id"], "agent": e.get("agent"), "note": "claimed, waiting for a slot"}
           for e in status["claimed"] if e["id"] not in running_ids],
        "needs_input": [{"id": e["id"], "agent": e.get("agent"), "note": e.get("question")}
                        for e in status.get("needs_input", [])],
        "done": [{"id": e["id"], "agent": e.get("agent"), "note": e.get("pr_url") or e.get("branch")}
                 for e in status["done"]],
        "errors": [{"id": e["id"], "agent": e.get("agent"), "note": e.get("message")} for e in status["errors"]],
        "rejected": [{"id": e["file"], "agent": None, "note": e.get("problem")} for e in status["rejected"]],
    }
    daemon = status.get("daemon") or {}
    return {"columns": columns, "counts": status.get("counts", {}),
            "daemon": {"running": bool(daemon.get("running")), "pid": daemon.get("pid"),
                       "updated_at": daemon.get("updated_at") or daemon.get("last_seen")},
            "paused_tools": status.get("paused_tools", [])}


def read_status(config: Config) -> dict[str, Any]:
    """`conveyor status --format json`, as a dict (JSON round trip: the stream sends exactly this)."""
    data: dict[str, Any] = json.loads(json.dumps(collect_status(config, time.time()).as_dict(), default=str))
    return data


class BoardFeed:
    """The current board view and its version; `changed()` waits for the next version."""

    def __init__(self, config: Config, *, poll_s: float = POLL_S) -> None:
        self._config = config
        self._poll_s = poll_s
        self.version = 0
        self.boot = secrets.token_hex(4)   # event ids of another server run never match this one's
        self.view: dict[str, Any] = {}
        self._text = ""
        self._poked: asyncio.Event | None = None
        self._cond: asyncio.Condition | None = None
        self._observer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._poked = asyncio.Event()
        self._cond = asyncio.Condition()
        poked = self._poked
        await self._refresh()

        def poke() -> None:
            loop.call_soon_threadsafe(poked.set)

        self._observer = Observer()
        self._observer.daemon = True
        board = self._config.board_root
        if board.is_dir():
            self._observer.schedule(WakeOnNames(None, poke), str(board), recursive=True)
        state = self._config.state_dir
        if state.is_dir():
            self._observer.schedule(WakeOnNames({STATUS_FILE, PAUSES_FILE}, poke), str(state), recursive=False)
        self._observer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._observer is not None:
            self._observer.stop()
            await anyio.to_thread.run_sync(self._observer.join, 5)

    async def _run(self) -> None:
        assert self._poked is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), timeout=self._poll_s)
            await asyncio.sleep(DEBOUNCE_S)
            self._poked.clear()
            try:
                await self._refresh()
            except Exception as exc:   # a half-written file or a vanished folder: look again next time
                log.warning("dashboard.refresh_failed", error=str(exc))

    async def _refresh(self) -> None:
        status = await anyio.to_thread.run_sync(read_status, self._config)
        view = board_view(status)
        text = json.dumps(view, sort_keys=True)
        if text == self._text:
            return
        assert self._cond is not None
        async with self._cond:
            self._text = text
            self.view = view
            self.version += 1
            self._cond.notify_all()

    async def after(self, version: int) -> tuple[int, dict[str, Any]]:
        """The first view newer than `version` (at once if there is one)."""
        assert self._cond is not None
        async with self._cond:
            await self._cond.wait_for(lambda: self.version != version)
            return self.version, self.view
