"""`conveyor stats` over the fleet's PostgreSQL telemetry: the same rows `stats.collect` gives on SQLite.

SQLite needs trigger-kept rollups and a histogram to find percentiles fast; PostgreSQL has them built in:
`percentile_disc(p) WITHIN GROUP (ORDER BY duration_s)` is exactly the nearest-rank percentile (the
⌈p·n⌉-th smallest value, nulls ignored) that `stats.rank_offset` computes, so one grouped query per
grouping answers, and every node's runs are in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from conveyor.telemetry.schema import COUNTED
from conveyor.telemetry.stats import GROUPS, OUTCOME_GROUPS, GroupBy, Window

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
INVOCATIONS = "conveyor_invocations"
PULL_REQUESTS = "conveyor_pull_requests"
_KEYS = {
    "day": "to_char(to_timestamp(started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "month": "to_char(to_timestamp(started_at) AT TIME ZONE 'UTC', 'YYYY-MM')",
    "agent": "agent", "model": "model", "tool": "tool",
}


def placeholders(sql: str) -> str:
    """SQLite's `?` as psycopg's `%s` (the shared queries carry no literal `?` or `%`)."""
    return sql.replace("?", "%s")


def collect(query: Query, by: GroupBy, window: Window) -> list[dict[str, Any]]:
    """One dict per group, sorted by key: counts, success rate, tokens, cost, p50/p95 duration (s)."""
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPS)}")
    where, args = window.where()
    sql = (f"SELECT {_KEYS[by]} AS k, COUNT(*), SUM(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END),"
           " SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, SUM(cache_read_tokens)::bigint,"
           " SUM(cache_write_tokens)::bigint, SUM(cost_usd),"
           " percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_s),"
           " percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_s)"
           f" FROM {INVOCATIONS} WHERE outcome {COUNTED}{placeholders(where)} GROUP BY k")
    rows = []
    for key, count, ok, tin, tout, tread, twrite, cost, p50, p95 in query(sql, args):
        rows.append({"key": key, "invocations": int(count), "ok": int(ok), "input_tokens": int(tin or 0),
                     "output_tokens": int(tout or 0), "cache_read_tokens": int(tread or 0),
                     "cache_write_tokens": int(twrite or 0), "cost_usd": round(float(cost or 0.0), 6),
                     "success_rate": round(int(ok) / int(count), 4),
                     "p50_s": None if p50 is None else round(float(p50), 3),
                     "p95_s": None if p95 is None else round(float(p95), 3)})
    rows.sort(key=lambda row: (row["key"] is not None, str(row["key"] or "")))
    if by in OUTCOME_GROUPS:
        _add_outcomes(query, by, window, rows)
    return rows


def _add_outcomes(query: Query, by: GroupBy, window: Window, rows: list[dict[str, Any]]) -> None:
    where, args = window.where("decided_at")
    sql = (f"SELECT {by}, SUM(CASE WHEN state = 'merged' THEN 1 ELSE 0 END),"
           f" SUM(CASE WHEN state = 'closed' THEN 1 ELSE 0 END) FROM {PULL_REQUESTS}"
           f" WHERE state IN ('merged', 'closed'){placeholders(where)} GROUP BY {by}")
    decided = {key: (int(merged), int(closed)) for key, merged, closed in query(sql, args)}
    for row in rows:
        merged, closed = decided.get(row["key"], (0, 0))
        row["merged"], row["closed"] = merged, closed
        row["acceptance_rate"] = round(merged / (merged + closed), 4) if merged + closed else None
        row["cost_per_merged_usd"] = round(row["cost_usd"] / merged, 6) if merged else None
