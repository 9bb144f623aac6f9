"""Finished tasks as a small SQLite table in the state folder, so history costs nothing at run time.

`done/` and `archive/` grow by a hundred tasks a day for years; re-reading them made start-up, intake and
`conveyor status` slower every day. Each finished task is written here once, when the daemon finishes it
(and moved here when it is archived): dependency lookups, duplicate checks, the AGENT_STATUS.md tally,
`conveyor status` and the archive job ask this table for what they need. The files stay the truth: a
missing or corrupt table is rebuilt from them (see `history_sync`), and an id the table does not know is
looked up on the board by name before anyone is told it does not exist.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.core import yamlio
from conveyor.core.logs import get_logger
from conveyor.core.sqlite_tx import immediate
from conveyor.core.task import CLAIMER_PREFIX, task_id_from_path
from conveyor.core.timeutil import parse_iso

log = get_logger("conveyor.board.history")
VERSION = "3"
DONE, ARCHIVE = "done", "archive"    # the area a finished file sits in
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS finished (
        task_id TEXT PRIMARY KEY,        -- the file's name, or the `id` it declares when that differs
        file TEXT NOT NULL,              -- relative to the board root
        alias INTEGER NOT NULL,          -- 1 for a declared id that differs from the file name
        agent TEXT NOT NULL,
        status TEXT NOT NULL,
        area TEXT NOT NULL,
        completed_at REAL NOT NULL,
        pending_handoff INTEGER NOT NULL,
        facts TEXT NOT NULL,
        sig TEXT NOT NULL)               -- the file's mtime_ns:size when read, to notice edits in place""",
    "CREATE INDEX IF NOT EXISTS finished_area_completed ON finished (area, completed_at)",
    "CREATE INDEX IF NOT EXISTS finished_file ON finished (file)",
    "CREATE INDEX IF NOT EXISTS finished_handoff ON finished (pending_handoff) WHERE pending_handoff = 1",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


@dataclass(frozen=True)
class Entry:
    """One finished task as the table keeps it; `facts` is the slim document status and reports show."""

    task_id: str
    file: str
    agent: str
    status: str
    area: str
    completed_at: float
    pending_handoff: bool
    facts: dict[str, Any]
    alias: bool = False
    sig: str = ""


def slim(document: Mapping[str, Any]) -> dict[str, Any]:
    """What `conveyor status` and AGENT_STATUS.md show of a finished task, in the document's own shape.

    Never the agent's words or the task's text (summary, error message): the state folder holds none of them in
    `privacy: metadata` mode; the few places that show them read the task file itself."""
    result = document.get("result") if isinstance(document.get("result"), Mapping) else {}
    error = document.get("error") if isinstance(document.get("error"), Mapping) else {}
    assert isinstance(result, Mapping) and isinstance(error, Mapping)
    facts: dict[str, Any] = {"status": str(document.get("status") or "done"),
                             "completed_at": str(document.get("completed_at") or "")}
    kept_result = {key: result[key] for key in ("pr_url", "branch", "commit", "cost_usd", "next_agent",
                                                "handoff_task", "publish_pending", "publish_stop")
                   if result.get(key) is not None}
    if result.get("publish_pending"):
        kept_result["publish"] = str(result.get("publish") or "")
    kept_error = {key: str(error[key])[:500] for key in ("kind", "log") if error.get(key)}
    if kept_result:
        facts["result"] = {k: (v[:500] if isinstance(v, str) else v) for k, v in kept_result.items()}
    if kept_error:
        facts["error"] = kept_error
    return facts


def pending_handoff(document: Mapping[str, Any]) -> bool:
    """Done by Conveyor, names `result.next_agent`, and no `result.handoff_task` yet (a board adopted from the
    seed workflow holds done tasks whose `next_agent` its own orchestrator handled long ago)."""
    result = document.get("result")
    status = str(document.get("status") or "done").lower()
    ours = str(document.get("claimed_by") or "").startswith(CLAIMER_PREFIX)
    return (ours and status == "done" and isinstance(result, Mapping) and bool(result.get("next_agent"))
            and "handoff_task" not in result)


def signature(path: Path) -> tuple[float | None, str]:
    """(mtime, "mtime_ns:size") of a file, or (None, "") when it is gone."""
    try:
        info = path.stat()
    except OSError:
        return None, ""
    return info.st_mtime, f"{info.st_mtime_ns}:{info.st_size}"


def entries_of(root: Path, path: Path, area: str, agent: str, document: Any) -> list[Entry]:
    """The rows one finished file answers to: its file name, and its declared `id` when that differs."""
    mtime, sig = signature(path)
    stem = task_id_from_path(path)
    relative = path.relative_to(root).as_posix()
    if not isinstance(document, dict):   # unreadable: finished with an error, as the folder scan always said
        return [Entry(stem, relative, agent, "error", area, mtime or 0.0, False, {"status": "error"}, sig=sig)]
    status = str(document.get("status") or "done").lower()
    completed = next((moment for key in ("completed_at", "completed") if document.get(key)
                      for moment in [parse_iso(str(document[key]))] if moment is not None), None)
    entry = Entry(stem, relative, str(document.get("agent") or agent), status, area,
                  completed if completed is not None else (mtime or 0.0), pending_handoff(document), slim(document),
                  sig=sig)
    doc_id = document.get("id")
    rows = [entry]
    if isinstance(doc_id, str) and doc_id and doc_id != stem:
        rows.append(Entry(doc_id, relative, entry.agent, status, area, entry.completed_at, False, entry.facts, True,
                          sig))
    return rows


def read_entries(root: Path, path: Path, area: str, agent: str) -> list[Entry]:
    """Parse one finished file (the only place history reads a task file)."""
    try:
        document = yamlio.loads(yamlio.read_limited(path))
    except yamlio.YamlProblem:
        document = None
    except OSError:
        return []
    return entries_of(root, path, area, agent, document)


class History:
    """The table, opened lazily; a file SQLite cannot read is moved aside and started afresh (and rebuilt)."""

    MEMORY = Path(":memory:")

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        self.reset = False      # the table was missing or corrupt when opened: a rebuild is owed

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self.readonly:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=5.0)
            conn.execute("SELECT 1 FROM finished LIMIT 1")
            self._conn = conn
            return conn
        if self.path != self.MEMORY:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path != self.MEMORY and self.path.exists()
        try:
            conn = self._connect()
        except sqlite3.DatabaseError as exc:
            log.warning("history.corrupt", file=str(self.path), error=str(exc),
                        note="the finished-task index is rebuilt from done/ and archive/")
            self._discard()
            existed = False
            conn = self._connect()
        self.reset = not existed or self.meta("version", conn) != VERSION
        self._conn = conn
        return conn

    @classmethod
    def in_memory(cls) -> History:
        """A table that lives as long as the process (tests, and boards without a state folder)."""
        return cls(cls.MEMORY)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _discard(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(self.path) + suffix).unlink()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def start_over(self) -> None:
        """Forget every row (a rebuild follows)."""
        conn = self._open()
        with immediate(conn):
            conn.execute("DELETE FROM finished")
            conn.execute("DELETE FROM meta")
        self.reset = True

    # ------------------------------------------------------------------ meta
    def meta(self, key: str, conn: sqlite3.Connection | None = None) -> str | None:
        row = (conn or self._open()).execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._open().execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def complete(self) -> bool:
        """Whether every finished file on the board is in the table (a rebuild has finished)."""
        return self.meta("complete") == VERSION

    # ------------------------------------------------------------------ writes
    def record(self, entries: list[Entry]) -> None:
        if not entries or self.readonly:
            return
        conn = self._open()
        with immediate(conn):
            for file in {entry.file for entry in entries}:
                conn.execute("DELETE FROM finished WHERE file = ?", (file,))
            for area, verb in ((ARCHIVE, "IGNORE"), (DONE, "REPLACE")):   # an id in both: done/ wins
                conn.executemany(
                    f"INSERT OR {verb} INTO finished (task_id, file, alias, agent, status, area, completed_at,"
                    " pending_handoff, facts, sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(e.task_id, e.file, int(e.alias), e.agent, e.status, e.area, e.completed_at,
                      int(e.pending_handoff), json.dumps(e.facts, default=str), e.sig)
                     for e in entries if (e.area == ARCHIVE) == (area == ARCHIVE)])

    def moved(self, moves: list[tuple[str, str, str]]) -> None:
        """Files that moved: (old relative path, new relative path, new area), in one transaction."""
        if self.readonly:
            return
        conn = self._open()
        with immediate(conn):
            conn.executemany("UPDATE finished SET file = ?, area = ? WHERE file = ?",
                             [(new, area, old) for old, new, area in moves])

    def forget_files(self, files: list[str]) -> None:
        if self.readonly:
            return
        conn = self._open()
        with immediate(conn):
            conn.executemany("DELETE FROM finished WHERE file = ?", [(file,) for file in files])

    # ------------------------------------------------------------------ reads
    def get(self, task_id: str) -> Entry | None:
        row = self._open().execute(f"SELECT {_COLUMNS} FROM finished WHERE task_id = ?", (task_id,)).fetchone()
        return _entry(row) if row else None

    def files_in(self, area: str) -> dict[str, str]:
        """File → signature when read, of every file in one area."""
        rows = self._open().execute("SELECT file, sig FROM finished WHERE area = ? AND alias = 0", (area,))
        return {str(file): str(sig) for file, sig in rows}

    def signatures_in(self, folder: str) -> dict[str, str]:
        """File → signature of the rows for files directly in one folder (`archive/2026-01`), by index range."""
        low, high = folder + "/", folder + "0"          # "0" sorts right after "/"
        rows = self._open().execute("SELECT file, sig FROM finished WHERE file > ? AND file < ? AND alias = 0",
                                    (low, high))
        return {str(file): str(sig) for file, sig in rows if "/" not in str(file)[len(low):]}

    def counts(self, area: str = DONE) -> dict[tuple[str, str], int]:
        """(folder name, status) → number of files, for one area (aliases counted once)."""
        rows = self._open().execute(
            "SELECT file, status, count(*) FROM finished WHERE area = ? AND alias = 0 GROUP BY 1, 2", (area,))
        counted: dict[tuple[str, str], int] = {}
        for file, status, number in rows:
            folder = _folder_of(str(file))
            counted[(folder, str(status))] = counted.get((folder, str(status)), 0) + int(number)
        return counted

    def latest(self, limit: int, *, area: str = DONE, status: str | None = None) -> list[Entry]:
        where = "area = ? AND alias = 0" + (" AND status = ?" if status else "")
        params: tuple[Any, ...] = (area, status) if status else (area,)
        rows = self._open().execute(f"SELECT {_COLUMNS} FROM finished WHERE {where} ORDER BY completed_at DESC"
                                    " LIMIT ?", (*params, limit))
        return [_entry(row) for row in rows]

    def in_area(self, area: str) -> Iterator[Entry]:
        yield from (_entry(row) for row in self._open().execute(
            f"SELECT {_COLUMNS} FROM finished WHERE area = ? AND alias = 0 ORDER BY completed_at DESC", (area,)))

    def archivable(self, cutoff: float, limit: int, *, after: tuple[float, str] | None = None) -> list[Entry]:
        """The oldest files in done/ completed before `cutoff` (past `after`, the last one looked at), at most
        `limit` of them, through the (area, completed_at) index."""
        where, params = "area = ? AND alias = 0 AND completed_at <= ?", [DONE, cutoff]
        if after is not None:
            where += " AND (completed_at > ? OR (completed_at = ? AND file > ?))"
            params += [after[0], after[0], after[1]]
        rows = self._open().execute(f"SELECT {_COLUMNS} FROM finished WHERE {where} ORDER BY completed_at, file"
                                    " LIMIT ?", (*params, limit))
        return [_entry(row) for row in rows]

    def pending_handoffs(self) -> list[Entry]:
        rows = self._open().execute(f"SELECT {_COLUMNS} FROM finished WHERE pending_handoff = 1 AND alias = 0")
        return [_entry(row) for row in rows]


_COLUMNS = "task_id, file, agent, status, area, completed_at, pending_handoff, facts, alias, sig"


def _entry(row: tuple[Any, ...]) -> Entry:
    try:
        facts = json.loads(row[7])
    except ValueError:
        facts = {}
    return Entry(str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), float(row[5]), bool(row[6]),
                 facts if isinstance(facts, dict) else {}, bool(row[8]), str(row[9]))


def _folder_of(file: str) -> str:
    """`done/backend/x.yaml` → `backend`; a file directly in `done/` → `-`."""
    parts = file.split("/")
    return parts[-2] if len(parts) >= 3 else "-"
