"""The fleet's spend ledger in PostgreSQL: a reservation per running task, admitted in one transaction.

`reserve` takes a transaction-scoped advisory lock (admissions are rare: one per task start, so one lock for
the fleet costs nothing and leaves no room for write skew between two budgets), adds up for every hard
budget covering the run what the fleet's telemetry says is spent in the budget's window plus what live
reservations still hold, and inserts this task's reservation only if its estimate fits under all of them.

- **Settling.** A reservation holds its estimate less what its task's runs have cost since it was made
  (the real costs land in telemetry as each run ends); `release` at the end of the task drops it, leaving
  only the real cost.
- **A node that dies** stops extending its task leases (`coordination/schema.py`); a reservation counts only
  while its node still holds its task's lease, so it is released with the lease, and the node that takes
  the task over replaces it with its own (one reservation per task).
- **Times.** Windows are the clients' epoch seconds, as telemetry's `started_at` is; lease liveness is the
  server's `now()`, as for the leases themselves.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog

from conveyor.coordination import schema
from conveyor.coordination.link import Link, Row, Unreachable
from conveyor.coordination.spend import Cap, Refusal
from conveyor.core.pg_schema import versioned
from conveyor.core.timeutil import utc_iso
from conveyor.telemetry.pg_stats import INVOCATIONS

log = structlog.get_logger("conveyor.coordination.spend")
SPEND_LOCK = 0x636F6E76_0004
RESERVATIONS = "conveyor_spend_reservations"
RETRY_S = 5.0   # refused only because of other runs' reservations: they settle soon, ask again this much later

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {RESERVATIONS} (
    task_id     text PRIMARY KEY,            -- one per task: a takeover replaces the dead node's
    node        text NOT NULL,
    agent       text NOT NULL,
    tool        text,
    usd         double precision NOT NULL,   -- the estimate
    at          double precision NOT NULL,   -- epoch seconds (the client's clock, as telemetry's started_at)
    reserved_at timestamptz NOT NULL DEFAULT now()
);
"""

# What the runs that are still reserved may yet cost: each live reservation's estimate less what its task's
# runs on that node have cost since (never below zero). Live: its node holds the task's lease.
_HELD = f"""
SELECT COALESCE(SUM(GREATEST(r.usd - COALESCE((
           SELECT SUM(i.cost_usd) FROM {INVOCATIONS} i
           WHERE i.task_id = r.task_id AND i.node = r.node AND i.started_at >= r.at), 0), 0)), 0)
FROM {RESERVATIONS} r
WHERE r.at >= %(since)s AND r.at < %(until)s AND r.task_id <> %(exclude)s
  AND (%(agent)s::text IS NULL OR r.agent = %(agent)s) AND (%(tool)s::text IS NULL OR r.tool = %(tool)s)
  AND EXISTS (SELECT 1 FROM conveyor_tasks t WHERE t.task_id = r.task_id AND t.owner = r.node
              AND t.state = 'leased' AND t.lease_until > now())
"""

_SPENT = f"""
SELECT COALESCE(SUM(cost_usd), 0) FROM {INVOCATIONS}
WHERE started_at >= %(since)s AND started_at < %(until)s
  AND (%(agent)s::text IS NULL OR agent = %(agent)s) AND (%(tool)s::text IS NULL OR tool = %(tool)s)
"""

_RESERVE = f"""
INSERT INTO {RESERVATIONS} (task_id, node, agent, tool, usd, at) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (task_id) DO UPDATE SET node = EXCLUDED.node, agent = EXCLUDED.agent, tool = EXCLUDED.tool,
    usd = EXCLUDED.usd, at = EXCLUDED.at, reserved_at = now()
"""


class SharedSpend:
    def __init__(self, link: Link, node: str) -> None:
        self._link = link
        self.node = node

    def prepare(self) -> None:
        """The ledger's table, and the leases' it reads (a reader may come before any node has started)."""
        self._link.run(schema.VERSIONED + versioned("spend", SCHEMA))

    def reserve(self, task_id: str, *, agent: str, tool: str | None, usd: float, caps: list[Cap],
                now: float) -> Refusal | None:
        """Admit the run (None) with `usd` reserved, or say which budget it would pass and when to ask again."""
        if not caps:
            return None

        def admit(conn: psycopg.Connection[Row]) -> Refusal | None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SPEND_LOCK,))
            for cap in caps:
                scope = {"since": cap.since, "until": cap.until, "agent": cap.agent, "tool": cap.tool,
                         "exclude": task_id}
                spent = _scalar(conn, _SPENT, scope)
                held = _scalar(conn, _HELD, scope)
                if spent + held + usd > cap.usd + 1e-9:
                    alone = spent + usd > cap.usd + 1e-9     # no settling elsewhere can make room: wait it out
                    retry_at = cap.until if alone else now + RETRY_S
                    return Refusal(f"{cap.label}: ${spent:.2f} spent and ${held:.2f} reserved by running tasks; "
                                   f"this run's estimate of ${usd:.2f} would pass ${cap.usd:.2f} (asks again at "
                                   f"{utc_iso(retry_at)})", retry_at)
            conn.execute(_RESERVE, (task_id, self.node, agent, tool, usd, now))
            return None

        try:
            refusal = self._link.transaction(admit)
        except Unreachable as exc:
            log.warning("budget.reserve_unconfirmed", task_id=task_id, error=str(exc),
                        note="the run waits: a budget cannot be checked while the database is away")
            return Refusal(f"the budget ledger did not answer ({exc})", now + RETRY_S)
        if refusal is None:
            log.info("budget.reserved", task_id=task_id, usd=round(usd, 4), node=self.node)
        else:
            log.info("budget.reservation_refused", task_id=task_id, reason=refusal.reason)
        return refusal

    def release(self, task_id: str) -> None:
        """The task's runs are over: only their real costs (in telemetry) count from now on."""
        try:
            self._link.run(f"DELETE FROM {RESERVATIONS} WHERE task_id = %s AND node = %s", (task_id, self.node))
        except Unreachable as exc:   # it stops counting anyway once the task's lease ends
            log.warning("budget.release_failed", task_id=task_id, error=str(exc))

    def spend(self, since: float, until: float | None = None, agent: str | None = None,
              tool: str | None = None) -> float:
        """What the fleet spent in [since, until) plus what its running tasks still hold reserved."""
        scope = {"since": since, "until": until if until is not None else float("inf"), "agent": agent,
                 "tool": tool, "exclude": ""}

        def total(conn: psycopg.Connection[Row]) -> float:
            return _scalar(conn, _SPENT, scope) + _scalar(conn, _HELD, scope)

        try:
            return self._link.transaction(total)
        except Unreachable as exc:   # unknown spend is treated as spent: a hard budget must hold
            log.warning("budget.spend_unknown", error=str(exc), note="budgets count as reached until it answers")
            return float("inf")


def _scalar(conn: psycopg.Connection[Row], sql: str, params: dict[str, Any]) -> float:
    row = conn.execute(sql, params).fetchone()
    return float(row[0]) if row is not None and row[0] is not None else 0.0
