"""What the pull-request watcher remembers between passes and restarts: a small SQLite file in the state folder.

- `pulls`: each watched pull request, its task, its last known state and head (used when GitHub answers 304);
- `etags`: the ETag of the last answer acted on, per pull request and resource (the conditional requests);
- `events`: every review, comment, check or status already handled, and how (`task`, `ignored`, `own`,
  `skipped`, `ci_task`, `gave_up`). An event is recorded after its task file exists, so a crash in
  between leaves a file the next pass finds on the board (and records) instead of writing it again.

The number of CI fix tasks of a pull request is counted from `events`, so the cap holds across restarts.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conveyor.core.private import private_file
from conveyor.core.sqlite_tx import immediate

STATE_FILE = "pr_watch.db"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pulls (repo TEXT NOT NULL, number INTEGER NOT NULL, task_id TEXT NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'open', head_sha TEXT, decided_at REAL, PRIMARY KEY (repo, number))",
    "CREATE TABLE IF NOT EXISTS etags (key TEXT PRIMARY KEY, etag TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS events (repo TEXT NOT NULL, number INTEGER NOT NULL, event_id TEXT NOT NULL,"
    " outcome TEXT NOT NULL, sha TEXT, task_id TEXT, at REAL NOT NULL, PRIMARY KEY (repo, event_id))",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
CI_TASK, GAVE_UP = "ci_task", "gave_up"


@dataclass(frozen=True)
class WatchedPull:
    repo: str
    number: int
    task_id: str
    state: str
    head_sha: str | None


class WatchState:
    """One connection, used by one watcher pass at a time (the lock guards a pass racing `close`)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._connect()) as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- pull requests ---------------------------------------------------------------------------

    def pull(self, repo: str, number: int) -> WatchedPull | None:
        with self._lock:
            row = self._connect().execute("SELECT repo, number, task_id, state, head_sha FROM pulls"
                                          " WHERE repo = ? AND number = ?", (repo, number)).fetchone()
        return WatchedPull(*row) if row else None

    def watch(self, repo: str, number: int, task_id: str) -> WatchedPull:
        with self._write() as conn:
            conn.execute("INSERT INTO pulls (repo, number, task_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                         (repo, number, task_id))
        found = self.pull(repo, number)
        assert found is not None
        return found

    def seen_pull(self, repo: str, number: int, state: str, head_sha: str | None, at: float | None = None) -> None:
        with self._write() as conn:
            conn.execute("UPDATE pulls SET state = ?, head_sha = ?, decided_at = COALESCE(?, decided_at)"
                         " WHERE repo = ? AND number = ?", (state, head_sha, at, repo, number))

    def settled(self, repo: str) -> set[int]:
        """Numbers of the pull requests already recorded merged or closed (never polled again)."""
        with self._lock:
            rows = self._connect().execute("SELECT number FROM pulls WHERE repo = ? AND state != 'open'", (repo,))
            return {int(row[0]) for row in rows}

    # -- etags -----------------------------------------------------------------------------------

    def etag(self, key: str) -> str | None:
        with self._lock:
            row = self._connect().execute("SELECT etag FROM etags WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_etag(self, key: str, etag: str | None) -> None:
        if not etag:
            return
        with self._write() as conn:
            conn.execute("INSERT INTO etags (key, etag) VALUES (?, ?)"
                         " ON CONFLICT(key) DO UPDATE SET etag = excluded.etag", (key, etag))

    # -- events ----------------------------------------------------------------------------------

    def handled(self, repo: str, event_id: str) -> bool:
        with self._lock:
            return self._connect().execute("SELECT 1 FROM events WHERE repo = ? AND event_id = ?",
                                           (repo, event_id)).fetchone() is not None

    def record(self, repo: str, number: int, event_id: str, outcome: str, at: float, *, sha: str | None = None,
               task_id: str | None = None) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO events (repo, number, event_id, outcome, sha, task_id, at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (repo, number, event_id, outcome, sha, task_id, at))

    def ci_fixes(self, repo: str, number: int) -> tuple[int, set[str], bool]:
        """(fix tasks written, head shas they were for, whether the PR was given up on)."""
        with self._lock:
            rows = self._connect().execute("SELECT outcome, sha FROM events WHERE repo = ? AND number = ?"
                                           " AND outcome IN (?, ?)", (repo, number, CI_TASK, GAVE_UP)).fetchall()
        fixes = [sha for outcome, sha in rows if outcome == CI_TASK]
        return len(fixes), {str(sha) for sha in fixes if sha}, any(outcome == GAVE_UP for outcome, _ in rows)

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._connect().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                         "excluded.value", (key, value))
