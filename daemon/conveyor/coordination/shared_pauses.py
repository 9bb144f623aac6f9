"""Provider pauses shared by the fleet: a 429, usage-window or expired-login pause that one node parses
pauses that tool on every node until the reset time it named.

One row per tool, written by `publish` (the later of two resume times wins, as on one host) and removed
by `clear` after a run that reached the provider. `scheduling.tool_health.ToolHealth` keeps its own copy
and reads this table at most every `refresh_s`; rows hold plain values (the pause's fields), so this
module needs nothing from `scheduling`.
"""

from __future__ import annotations

from typing import Any

import structlog

from conveyor.coordination.link import Link, Unreachable
from conveyor.core.pg_schema import versioned

log = structlog.get_logger("conveyor.coordination.pauses")
PAUSES = "conveyor_tool_pauses"
FIELDS = ("tool", "until", "outcome", "reason", "failures", "since")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {PAUSES} (
    tool     text PRIMARY KEY,
    until    double precision NOT NULL,   -- epoch seconds: the reset time the CLI named, or the backoff's end
    outcome  text NOT NULL,
    reason   text NOT NULL,
    failures integer NOT NULL,
    since    double precision NOT NULL,
    node     text
);
"""

_PUBLISH = f"""
INSERT INTO {PAUSES} (tool, until, outcome, reason, failures, since, node)
VALUES (%(tool)s, %(until)s, %(outcome)s, %(reason)s, %(failures)s, %(since)s, %(node)s)
ON CONFLICT (tool) DO UPDATE SET until = GREATEST({PAUSES}.until, EXCLUDED.until),
    outcome = CASE WHEN EXCLUDED.until >= {PAUSES}.until THEN EXCLUDED.outcome ELSE {PAUSES}.outcome END,
    reason = CASE WHEN EXCLUDED.until >= {PAUSES}.until THEN EXCLUDED.reason ELSE {PAUSES}.reason END,
    failures = GREATEST({PAUSES}.failures, EXCLUDED.failures), since = EXCLUDED.since, node = EXCLUDED.node
"""


class SharedPauses:
    def __init__(self, link: Link, node: str) -> None:
        self._link = link
        self.node = node

    def prepare(self) -> None:
        self._link.run(versioned("pauses", SCHEMA))

    def publish(self, pause: dict[str, Any]) -> None:
        """Tell the fleet: this tool is paused until `pause['until']` (a later pause already there stays)."""
        try:
            self._link.run(_PUBLISH, {**{name: pause[name] for name in FIELDS}, "node": self.node})
            log.info("fleet.pause_shared", tool=pause["tool"], node=self.node)
        except Unreachable as exc:   # this node still honours it; the others learn at their next limit
            log.warning("fleet.pause_not_shared", tool=pause["tool"], error=str(exc))

    def clear(self, tool: str) -> None:
        try:
            self._link.run(f"DELETE FROM {PAUSES} WHERE tool = %s", (tool,))
        except Unreachable as exc:
            log.warning("fleet.pause_clear_failed", tool=tool, error=str(exc))

    def fetch(self, now: float) -> list[dict[str, Any]] | None:
        """The pauses in force now; None when the database does not answer (keep what is known)."""
        try:
            rows = self._link.run(f"SELECT {', '.join(FIELDS)} FROM {PAUSES} WHERE until > %s", (now,))
        except Unreachable:
            return None
        return [dict(zip(FIELDS, row, strict=True)) for row in rows]
