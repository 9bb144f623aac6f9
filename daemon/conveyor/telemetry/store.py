"""Telemetry in SQLite: one row per agent invocation, written when it starts and completed when it ends.

WAL mode with `synchronous=NORMAL` and a busy timeout lets `conveyor stats` read while the daemon writes;
every write is one short `BEGIN IMMEDIATE` transaction. Each `Telemetry` keeps one connection, used by one
thread at a time under a lock and reopened after any error: opening a connection per operation cost more
than the writes (two PRAGMAs each time, and closing the last connection to a WAL database checkpoints
and deletes the WAL). The schema is versioned with `PRAGMA user_version`; a database
written by a newer Conveyor is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.core.disk_trouble import disk_state
from conveyor.core.private import private_file
from conveyor.core.sqlite_tx import immediate
from conveyor.telemetry import review_stats, stats
from conveyor.telemetry.records import INTERRUPTED, ROLES, RUNNING, InvocationEnd, InvocationStart, TelemetryError
from conveyor.telemetry.schema import rollup_statements

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    id                 INTEGER PRIMARY KEY,
    task_id            TEXT    NOT NULL,
    agent              TEXT    NOT NULL,
    tool               TEXT    NOT NULL,
    model              TEXT,
    attempt            INTEGER NOT NULL DEFAULT 1,
    started_at         REAL    NOT NULL,
    finished_at        REAL,
    duration_s         REAL,
    exit_code          INTEGER,
    outcome            TEXT    NOT NULL DEFAULT 'running',
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL    NOT NULL DEFAULT 0,
    cost_source        TEXT,
    session_id         TEXT,
    turns              INTEGER,
    branch             TEXT,
    commit_sha         TEXT,
    pr_url             TEXT,
    error              TEXT,
    prompt             TEXT,
    final_text         TEXT
);
CREATE INDEX IF NOT EXISTS invocations_started ON invocations (started_at);
CREATE INDEX IF NOT EXISTS invocations_task ON invocations (task_id);
CREATE INDEX IF NOT EXISTS invocations_outcome ON invocations (outcome) WHERE outcome = 'running';
CREATE TABLE IF NOT EXISTS pull_requests (
    branch      TEXT PRIMARY KEY,
    task_id     TEXT NOT NULL,
    agent       TEXT,
    tool        TEXT,
    pr_url      TEXT,
    state       TEXT NOT NULL,
    decided_at  REAL
);
"""

# Schema migrations: MIGRATIONS[n] takes a database from version n to n + 1, in place (one transaction).
MIGRATIONS: dict[int, Callable[[], list[str]]] = {
    1: lambda: ["ALTER TABLE invocations ADD COLUMN routing TEXT",   # JSON: chosen route, why, skipped ones
                "CREATE INDEX IF NOT EXISTS pull_requests_decided ON pull_requests (decided_at)",
                *rollup_statements()],
    # round: 0 for an agent's run, n for its n-th resume to fix a failing verify command (same attempt)
    2: lambda: ["ALTER TABLE invocations ADD COLUMN round INTEGER NOT NULL DEFAULT 0"],
    # role: author (the agent's run), fixer (a resume after a failing verify or a review), reviewer
    3: lambda: ["ALTER TABLE invocations ADD COLUMN role TEXT NOT NULL DEFAULT 'author'",
                "CREATE INDEX IF NOT EXISTS invocations_role ON invocations (role, task_id)"],
}


class Telemetry:
    """The invocation log of one repository. `privacy='metadata'` never stores prompt or response text."""

    def __init__(self, path: Path, *, privacy: str = "metadata") -> None:
        self.path = path
        self.privacy = privacy
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._initialise()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """The connection, for one operation at a time; an error closes it so the next use reopens it."""
        with self._lock:
            conn = self._conn if self._conn is not None else self._open()
            try:
                yield conn
            except sqlite3.Error as exc:   # SQLite's words ("unable to open database file") hide a full disk
                self.close()
                raise TelemetryError(f"telemetry database {self.path}: {exc}"
                                     f"{disk_state(self.path.parent)}") from exc
            finally:
                if self._conn is not None:
                    self._conn.row_factory = None   # a reader's row factory must not leak to the next user

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise TelemetryError(f"cannot open the telemetry database {self.path}: {exc}"
                                 f"{disk_state(self.path.parent)}; check that the folder exists and is "
                                 "writable") from exc
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the connection (the next operation opens a new one)."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as conn, immediate(conn):
            yield conn

    def _initialise(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_file(self.path)   # before SQLite makes it 0644; its -wal and -shm files copy this mode
        except OSError as exc:
            raise TelemetryError(f"cannot create {self.path}: {exc.strerror}") from exc
        with self.connect() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise TelemetryError(f"{self.path} was written by a newer Conveyor (schema {version}, this one "
                                     f"knows {SCHEMA_VERSION}); upgrade Conveyor or point telemetry_db elsewhere")
            conn.execute("PRAGMA journal_mode = WAL")
            if version < SCHEMA_VERSION:
                _migrate(conn)

    def start(self, start: InvocationStart) -> int:
        """Record that an invocation began; returns its row id."""
        prompt = start.prompt if self.privacy == "full" else None
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO invocations (task_id, agent, tool, model, attempt, started_at, branch, prompt, outcome,"
                " routing, round, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (start.task_id, start.agent, start.tool, start.model, start.attempt, start.started_at,
                 start.branch, prompt, RUNNING, start.routing, start.round, start.role))
            return int(cursor.lastrowid or 0)

    def finish(self, row_id: int, end: InvocationEnd) -> None:
        """Complete an invocation's row with its outcome, tokens and cost."""
        final_text = end.final_text if self.privacy == "full" else None
        with self._write() as conn:
            conn.execute(
                "UPDATE invocations SET finished_at=?, duration_s=?, outcome=?, exit_code=?, input_tokens=?,"
                " output_tokens=?, cache_read_tokens=?, cache_write_tokens=?, cost_usd=?, cost_source=?,"
                " session_id=?, turns=?, model=COALESCE(?, model), tool=COALESCE(?, tool), error=?, final_text=?"
                " WHERE id=?",
                (end.finished_at, end.duration_s, end.outcome, end.exit_code, end.tokens.input,
                 end.tokens.output, end.tokens.cache_read, end.tokens.cache_write, end.cost_usd, end.cost_source,
                 end.session_id, end.turns, end.model, end.tool, end.error, final_text, row_id))

    def record_result(self, row_id: int, *, commit_sha: str | None, pr_url: str | None,
                      branch: str | None) -> None:
        """Attach what publishing produced to the invocation that produced it."""
        with self._write() as conn:
            conn.execute("UPDATE invocations SET commit_sha=?, pr_url=?, branch=COALESCE(?, branch) WHERE id=?",
                         (commit_sha, pr_url, branch, row_id))

    def mark_interrupted(self, now: float, task_ids: Sequence[str] | None = None) -> int:
        """Rows left 'running' by a crash become 'interrupted'; returns how many."""
        with self._write() as conn:
            if task_ids is None:
                cursor = conn.execute("UPDATE invocations SET outcome=?, finished_at=?, duration_s=?-started_at "
                                      "WHERE outcome=?", (INTERRUPTED, now, now, RUNNING))
            else:
                marks = ",".join("?" for _ in task_ids)
                cursor = conn.execute(f"UPDATE invocations SET outcome=?, finished_at=?, duration_s=?-started_at "
                                      f"WHERE outcome=? AND task_id IN ({marks})",
                                      (INTERRUPTED, now, now, RUNNING, *task_ids))
            return cursor.rowcount

    def spend(self, since: float, until: float | None = None, agent: str | None = None,
              tool: str | None = None) -> float:
        """Total cost in USD of invocations started in [since, until), optionally for one agent or tool."""
        sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM invocations WHERE started_at >= ?"
        args: list[Any] = [since]
        if until is not None:
            sql += " AND started_at < ?"
            args.append(until)
        if agent is not None:
            sql += " AND agent = ?"
            args.append(agent)
        if tool is not None:
            sql += " AND tool = ?"
            args.append(tool)
        with self.connect() as conn:
            return float(conn.execute(sql, args).fetchone()[0])

    def awaiting_outcome(self) -> list[dict[str, Any]]:
        """Committed task branches whose pull-request outcome (merged or closed) is not yet recorded."""
        sql = ("SELECT i.branch, i.task_id, i.agent, i.tool, i.commit_sha, i.pr_url FROM invocations i"
               " LEFT JOIN pull_requests p ON p.branch = i.branch"
               " WHERE i.commit_sha IS NOT NULL AND i.branch IS NOT NULL"
               " AND (p.state IS NULL OR p.state NOT IN ('merged', 'closed'))"
               " AND i.id = (SELECT MAX(id) FROM invocations j WHERE j.branch = i.branch"
               " AND j.commit_sha IS NOT NULL)")
        with self.connect() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql)]

    def record_outcome(self, row: Mapping[str, Any], state: str, decided_at: float | None) -> None:
        """Remember a task branch's pull-request state (`open`, `merged`, `closed`)."""
        with self._write() as conn:
            conn.execute("INSERT INTO pull_requests (branch, task_id, agent, tool, pr_url, state, decided_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(branch) DO UPDATE SET state=excluded.state,"
                         " decided_at=excluded.decided_at, pr_url=COALESCE(excluded.pr_url, pr_url)",
                         (row["branch"], row["task_id"], row.get("agent"), row.get("tool"), row.get("pr_url"),
                          state, decided_at))

    def pull_request_state(self, branch: str) -> str | None:
        """What merge detection last recorded for a task branch's pull request (`open`, `merged`, `closed`)."""
        with self.connect() as conn:
            row = conn.execute("SELECT state FROM pull_requests WHERE branch = ?", (branch,)).fetchone()
        return str(row[0]) if row else None

    def collect(self, by: stats.GroupBy, window: stats.Window) -> list[dict[str, Any]]:
        """The `conveyor stats` rows of one grouping (from the rollups the triggers keep)."""
        with self.connect() as conn:
            return stats.collect(conn, by, window)

    def reviews(self, by: str, since: float | None, until: float | None) -> list[dict[str, Any]]:
        """The review figures of `conveyor stats`, by author or reviewer tool."""
        with self.connect() as conn:
            return review_stats.collect_reviews(conn, by, since, until)  # type: ignore[arg-type]

    def rows_for_task(self, task_id: str) -> list[dict[str, Any]]:
        with self.connect() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM invocations WHERE task_id=? ORDER BY id",
                                                      (task_id,))]

    def totals(self, group: str) -> list[dict[str, Any]]:
        """Invocations, successes, tokens and cost grouped by agent, tool or model."""
        if group not in ("agent", "tool", "model"):
            raise ValueError(f"cannot group by {group!r}")
        sql = (f"SELECT COALESCE({group}, '-') AS key, COUNT(*) AS invocations,"
               " SUM(outcome = 'ok') AS ok, SUM(input_tokens) AS input, SUM(output_tokens) AS output,"
               " SUM(cache_read_tokens) AS cache_read, SUM(cache_write_tokens) AS cache_write,"
               f" ROUND(SUM(cost_usd), 6) AS cost_usd FROM invocations GROUP BY {group} ORDER BY cost_usd DESC")
        with self.connect() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql)]


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION in place, one step per transaction (re-read under the lock, so
    two processes opening an old database at once migrate it once)."""
    while True:
        with immediate(conn):
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version >= SCHEMA_VERSION:
                return
            statements = _SCHEMA.split(";") if version == 0 else MIGRATIONS[version]()
            for statement in statements:
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")



__all__ = ["INTERRUPTED", "ROLES", "RUNNING", "SCHEMA_VERSION", "InvocationEnd", "InvocationStart", "Telemetry",
           "TelemetryError"]
