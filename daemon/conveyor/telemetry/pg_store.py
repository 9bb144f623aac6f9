"""Telemetry in the fleet's PostgreSQL: every node writes its invocations to the same tables, so `conveyor
stats`, budgets and merge detection on any node see the whole fleet's runs.

The columns and their meaning are SQLite's (`store.py`; times are epoch seconds as there, so `stats.Window`
and the review query serve both). What differs is what a shared server over a network asks for:

- **Idempotent writes.** A write whose reply was lost (the server restarted between commit and answer) is
  sent again: an invocation row carries a `token` the node made, so the retried insert finds its row
  instead of adding a second one; every other write is an UPDATE or an upsert and repeats harmlessly.
- **Patience.** A write waits up to `patience_s` for the server to come back (a restart takes seconds),
  then raises `TelemetryError` as the SQLite store does when its disk fails.
- **Whose rows.** Each row names the node that wrote it; start-up marks only this node's left-over runs
  interrupted (others are still running theirs), and the node that takes over a dead node's task closes
  that task's runs (`mark_interrupted` with task ids, called by `recovery.take_over`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from conveyor.core.errors import ConveyorError
from conveyor.core.pg_schema import versioned
from conveyor.telemetry import pg_stats, review_stats
from conveyor.telemetry.pg_stats import INVOCATIONS, PULL_REQUESTS, placeholders
from conveyor.telemetry.records import (
    INTERRUPTED,
    RUNNING,
    InvocationEnd,
    InvocationStart,
    TelemetryError,
    TelemetryUnreachable,
)
from conveyor.telemetry.stats import GroupBy, Window

T = TypeVar("T")
COLUMNS = ("id", "node", "task_id", "agent", "tool", "model", "attempt", "round", "role", "started_at",
           "finished_at", "duration_s", "exit_code", "outcome", "input_tokens", "output_tokens",
           "cache_read_tokens", "cache_write_tokens", "cost_usd", "cost_source", "session_id", "turns", "branch",
           "commit_sha", "pr_url", "error", "prompt", "final_text", "routing")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {INVOCATIONS} (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token              text NOT NULL UNIQUE,      -- made by the writer: a retried insert finds its row
    node               text,                      -- the daemon that ran it
    task_id            text NOT NULL,
    agent              text NOT NULL,
    tool               text NOT NULL,
    model              text,
    attempt            integer NOT NULL DEFAULT 1,
    round              integer NOT NULL DEFAULT 0,
    role               text NOT NULL DEFAULT 'author',
    started_at         double precision NOT NULL,
    finished_at        double precision,
    duration_s         double precision,
    exit_code          integer,
    outcome            text NOT NULL DEFAULT 'running',
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    cache_read_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cost_usd           double precision NOT NULL DEFAULT 0,
    cost_source        text,
    session_id         text,
    turns              integer,
    branch             text,
    commit_sha         text,
    pr_url             text,
    error              text,
    prompt             text,
    final_text         text,
    routing            text
);
CREATE INDEX IF NOT EXISTS {INVOCATIONS}_started ON {INVOCATIONS} (started_at, agent, tool, cost_usd);
CREATE INDEX IF NOT EXISTS {INVOCATIONS}_task ON {INVOCATIONS} (task_id);
CREATE INDEX IF NOT EXISTS {INVOCATIONS}_running ON {INVOCATIONS} (node) WHERE outcome = 'running';
CREATE TABLE IF NOT EXISTS {PULL_REQUESTS} (
    branch     text PRIMARY KEY,
    task_id    text NOT NULL,
    agent      text,
    tool       text,
    pr_url     text,
    state      text NOT NULL,
    decided_at double precision
);
"""


class Database(Protocol):
    """One statement at a time on a connection that reconnects (coordination.link.Link); raises a
    ConveyorError while the server does not answer."""

    def run(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class PgTelemetry:
    """The fleet's invocation log. `privacy='metadata'` never stores prompt or response text."""

    def __init__(self, db: Database, *, node: str | None, privacy: str = "metadata", patience_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.node = node
        self.privacy = privacy
        self.patience_s = patience_s
        self._monotonic = clock
        # once per schema version (core.pg_schema): nodes starting together neither race nor deadlock
        self._patient(lambda: self.db.run(versioned("telemetry", SCHEMA)))

    # ------------------------------------------------------------------ plumbing
    def _patient(self, action: Callable[[], T]) -> T:
        deadline = self._monotonic() + self.patience_s
        while True:
            try:
                return action()
            except TelemetryError:
                raise
            except ConveyorError as exc:
                if self._monotonic() >= deadline:
                    raise TelemetryUnreachable(
                        f"the fleet's telemetry database did not answer for {self.patience_s:g} s ({exc}); check "
                        "that PostgreSQL at `coordination:` is up") from exc
                time.sleep(0.5)

    def _run(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        return self._patient(lambda: self.db.run(sql, params))

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A read in `?` style (the queries SQLite shares); a read does not wait long for a server."""
        return self.db.run(placeholders(sql), list(params))

    def close(self) -> None:
        """Nothing to let go of while idle (SQLite closes to checkpoint its WAL; a server needs no such
        thing, and the connection serves the spend ledger and pauses too): its owner closes it."""
        return None

    # ------------------------------------------------------------------ writes
    def start(self, start: InvocationStart) -> int:
        """Record that an invocation began; returns its row id."""
        prompt = start.prompt if self.privacy == "full" else None
        token = secrets.token_hex(16)
        rows = self._run(
            f"INSERT INTO {INVOCATIONS} (token, node, task_id, agent, tool, model, attempt, started_at, branch,"
            " prompt, outcome, routing, round, role) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (token) DO UPDATE SET token = EXCLUDED.token RETURNING id",
            (token, self.node, start.task_id, start.agent, start.tool, start.model, start.attempt, start.started_at,
             start.branch, prompt, RUNNING, start.routing, start.round, start.role))
        return int(rows[0][0])

    def finish(self, row_id: int, end: InvocationEnd) -> None:
        """Complete an invocation's row with its outcome, tokens and cost."""
        final_text = end.final_text if self.privacy == "full" else None
        self._run(
            f"UPDATE {INVOCATIONS} SET finished_at=%s, duration_s=%s, outcome=%s, exit_code=%s, input_tokens=%s,"
            " output_tokens=%s, cache_read_tokens=%s, cache_write_tokens=%s, cost_usd=%s, cost_source=%s,"
            " session_id=%s, turns=%s, model=COALESCE(%s, model), tool=COALESCE(%s, tool), error=%s, final_text=%s"
            " WHERE id=%s",
            (end.finished_at, end.duration_s, end.outcome, end.exit_code, end.tokens.input, end.tokens.output,
             end.tokens.cache_read, end.tokens.cache_write, end.cost_usd, end.cost_source, end.session_id,
             end.turns, end.model, end.tool, end.error, final_text, row_id))

    def record_result(self, row_id: int, *, commit_sha: str | None, pr_url: str | None,
                      branch: str | None) -> None:
        self._run(f"UPDATE {INVOCATIONS} SET commit_sha=%s, pr_url=%s, branch=COALESCE(%s, branch) WHERE id=%s",
                  (commit_sha, pr_url, branch, row_id))

    def mark_interrupted(self, now: float, task_ids: Sequence[str] | None = None) -> int:
        """Runs left 'running' become 'interrupted': this node's own (start-up), or those of the given tasks
        (a task taken over from a dead node: the lease says nobody else runs it)."""
        sql = (f"UPDATE {INVOCATIONS} SET outcome=%s, finished_at=%s, duration_s=%s-started_at WHERE outcome=%s AND ")
        if task_ids is None:
            rows = self._run(sql + "node = %s RETURNING id", (INTERRUPTED, now, now, RUNNING, self.node))
        else:
            rows = self._run(sql + "task_id = ANY(%s) RETURNING id", (INTERRUPTED, now, now, RUNNING, list(task_ids)))
        return len(rows)

    def record_outcome(self, row: Mapping[str, Any], state: str, decided_at: float | None) -> None:
        self._run(f"INSERT INTO {PULL_REQUESTS} (branch, task_id, agent, tool, pr_url, state, decided_at)"
                  " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (branch) DO UPDATE SET state=EXCLUDED.state,"
                  f" decided_at=EXCLUDED.decided_at, pr_url=COALESCE(EXCLUDED.pr_url, {PULL_REQUESTS}.pr_url)",
                  (row["branch"], row["task_id"], row.get("agent"), row.get("tool"), row.get("pr_url"), state,
                   decided_at))

    # ------------------------------------------------------------------ reads
    def spend(self, since: float, until: float | None = None, agent: str | None = None,
              tool: str | None = None) -> float:
        """Total cost in USD of the fleet's invocations started in [since, until), optionally for one agent
        or tool (settled costs only; `coordination.shared_spend` adds the runs still reserved)."""
        sql = f"SELECT COALESCE(SUM(cost_usd), 0) FROM {INVOCATIONS} WHERE started_at >= ?"
        args: list[Any] = [since]
        for clause, value in (("started_at < ?", until), ("agent = ?", agent), ("tool = ?", tool)):
            if value is not None:
                sql += f" AND {clause}"
                args.append(value)
        return float(self._query(sql, args)[0][0])

    def awaiting_outcome(self) -> list[dict[str, Any]]:
        sql = (f"SELECT i.branch, i.task_id, i.agent, i.tool, i.commit_sha, i.pr_url FROM {INVOCATIONS} i"
               f" LEFT JOIN {PULL_REQUESTS} p ON p.branch = i.branch"
               " WHERE i.commit_sha IS NOT NULL AND i.branch IS NOT NULL"
               " AND (p.state IS NULL OR p.state NOT IN ('merged', 'closed'))"
               f" AND i.id = (SELECT MAX(id) FROM {INVOCATIONS} j WHERE j.branch = i.branch"
               " AND j.commit_sha IS NOT NULL)")
        names = ("branch", "task_id", "agent", "tool", "commit_sha", "pr_url")
        return [dict(zip(names, row, strict=True)) for row in self._query(sql, [])]

    def pull_request_state(self, branch: str) -> str | None:
        rows = self._query(f"SELECT state FROM {PULL_REQUESTS} WHERE branch = ?", [branch])
        return str(rows[0][0]) if rows else None

    def rows_for_task(self, task_id: str) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM {INVOCATIONS} WHERE task_id = ? ORDER BY id"
        return [dict(zip(COLUMNS, row, strict=True)) for row in self._query(sql, [task_id])]

    def totals(self, group: str) -> list[dict[str, Any]]:
        """Invocations, successes, tokens and cost grouped by agent, tool or model."""
        if group not in ("agent", "tool", "model"):
            raise ValueError(f"cannot group by {group!r}")
        sql = (f"SELECT COALESCE({group}, '-'), COUNT(*), SUM(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END),"
               " SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, SUM(cache_read_tokens)::bigint,"
               f" SUM(cache_write_tokens)::bigint, SUM(cost_usd) FROM {INVOCATIONS} GROUP BY 1 ORDER BY 8 DESC")
        names = ("key", "invocations", "ok", "input", "output", "cache_read", "cache_write")
        found = []
        for row in self._query(sql, []):
            entry = {name: (value if name == "key" else int(value or 0)) for name, value in zip(names, row[:7],
                                                                                              strict=True)}
            entry["cost_usd"] = round(float(row[7] or 0.0), 6)
            found.append(entry)
        return found

    def collect(self, by: GroupBy, window: Window) -> list[dict[str, Any]]:
        return pg_stats.collect(self._query, by, window)

    def reviews(self, by: str, since: float | None, until: float | None) -> list[dict[str, Any]]:
        sql, args = review_stats.review_query(by, since, until,  # type: ignore[arg-type]
                                              invocations=INVOCATIONS, pull_requests=PULL_REQUESTS)
        return review_stats.shape(self._query(sql, args))
