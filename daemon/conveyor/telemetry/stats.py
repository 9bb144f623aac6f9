"""The numbers behind `conveyor stats`, computed inside SQLite so a million rows never reach Python.

Sums come from the per-day rollups that triggers keep (`stats_schema`): whole UTC days of the window are
read there, the partial days at its ends from the rows (through the time index). p50 and p95 are
nearest-rank percentiles (the ⌈p·n⌉-th smallest duration): the all-time duration histogram of a group
names the bucket holding that rank and one indexed `ORDER BY duration_s LIMIT 1 OFFSET k` inside the
bucket reads the exact value; a window the histograms cannot answer walks the group's index instead.

Counted invocations are the finished ones (not `running`, not `skipped` before the tool started).
Cost per outcome: a change is *accepted* when merged; acceptance rate = merged / (merged + closed) among
outcomes decided in the window, and cost per merged change = the group's whole spend in the window / its
merged changes (so the cost of failed and rejected work is included, as it should be).
"""

from __future__ import annotations

import calendar
import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from conveyor.telemetry.schema import COUNTED, bucket_bounds

GroupBy = Literal["day", "month", "agent", "model", "tool"]
GROUPS: tuple[GroupBy, ...] = ("day", "month", "agent", "model", "tool")
COLUMN_GROUPS = ("agent", "model", "tool")
OUTCOME_GROUPS = ("agent", "tool")
DAY = 86400
_KEY_SQL = {
    "day": "strftime('%Y-%m-%d', started_at, 'unixepoch')",
    "month": "strftime('%Y-%m', started_at, 'unixepoch')",
    "agent": "agent", "model": "model", "tool": "tool",
}


@dataclass(frozen=True)
class Window:
    """[since, until) in epoch seconds; None = unbounded."""

    since: float | None = None
    until: float | None = None

    def where(self, column: str = "started_at") -> tuple[str, list[float]]:
        clauses, args = [], []
        if self.since is not None:
            clauses.append(f"{column} >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append(f"{column} < ?")
            args.append(self.until)
        return "".join(f" AND {clause}" for clause in clauses), args

    def split_days(self) -> tuple[Window | None, list[Window]]:
        """(the whole UTC days inside the window or None, the partial days at its ends)."""
        low = None if self.since is None else math.ceil(self.since / DAY) * DAY
        high = None if self.until is None else math.floor(self.until / DAY) * DAY
        if low is not None and high is not None and low >= high:
            return None, [self]                    # no whole day inside: read the rows of the window
        edges = []
        if self.since is not None and low is not None and low > self.since:
            edges.append(Window(self.since, low))
        if self.until is not None and high is not None and high < self.until:
            edges.append(Window(high, self.until))
        return Window(low, high), edges

    def day_where(self) -> tuple[str, list[str]]:
        """The window as a condition on the rollups' `day` column (only for a day-aligned window)."""
        clauses, args = [], []
        for end, operator in ((self.since, ">="), (self.until, "<")):
            if end is not None:
                clauses.append(f" AND day {operator} ?")
                args.append(datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d"))
        return "".join(clauses), args

    def narrowed(self, since: float, until: float) -> Window:
        low = since if self.since is None else max(since, self.since)
        high = until if self.until is None else min(until, self.until)
        return Window(low, high)


def parse_moment(text: str, *, end_of_day: bool = False) -> float:
    """`YYYY-MM-DD` (UTC midnight; with `end_of_day`, the following midnight) or ISO 8601 → epoch seconds.

    ISO times without a zone are UTC. Raises ValueError with the accepted forms.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return (moment + timedelta(days=1 if end_of_day else 0)).timestamp()
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date: use YYYY-MM-DD or ISO 8601 (2026-11-23T09:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def rank_offset(count: int, fraction: float) -> int:
    """0-based offset of the nearest-rank percentile: the ceil(fraction × n)-th smallest value."""
    return max(math.ceil(fraction * count) - 1, 0)


def collect(conn: sqlite3.Connection, by: GroupBy, window: Window) -> list[dict[str, Any]]:
    """One dict per group, sorted by key: counts, success rate, tokens, cost, p50/p95 duration (s)."""
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPS)}")
    rows = _sums(conn, by, window)
    histograms = _histograms(conn, by)
    for row in rows:
        timed = row.pop("timed")
        histogram = histograms.get(_histogram_key(row["key"])) if _histogram_serves(by, row["key"], window) else None
        row["p50_s"] = _percentile(conn, by, row["key"], window, timed, 0.50, histogram)
        row["p95_s"] = _percentile(conn, by, row["key"], window, timed, 0.95, histogram)
    if by in OUTCOME_GROUPS:
        _add_outcomes(conn, by, window, rows)
    return rows


_SUMS = ("invocations", "ok", "timed", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
         "cost_usd")


def _sums(conn: sqlite3.Connection, by: GroupBy, window: Window) -> list[dict[str, Any]]:
    """Whole UTC days of the window from the rollups, the partial days at its ends from the rows."""
    inner, edges = window.split_days()
    parts = ([_from_rollup(conn, by, inner)] if inner is not None else []) + [
        _from_rows(conn, by, edge) for edge in edges]
    merged: dict[Any, dict[str, Any]] = {}
    for part in parts:
        for record in part:
            row = dict(zip(("key", *_SUMS), record, strict=True))
            if by == "model":
                row["key"] = row["key"] or None
            if row["key"] in merged:
                total = merged[row["key"]]
                for name in _SUMS:
                    total[name] = (total[name] or 0) + (row[name] or 0)
            else:
                merged[row["key"]] = row
    rows = [row for row in merged.values() if row["invocations"]]
    for row in rows:
        row["success_rate"] = round(row["ok"] / row["invocations"], 4)
        row["cost_usd"] = round(row["cost_usd"] or 0.0, 6)
    return sorted(rows, key=lambda row: (row["key"] is not None, str(row["key"] or "")))


def _from_rollup(conn: sqlite3.Connection, by: GroupBy, window: Window) -> list[tuple[Any, ...]]:
    """Sums of whole days from the per-day rollups: a few thousand rows instead of a million."""
    dim = by if by in COLUMN_GROUPS else "tool"          # every invocation has exactly one tool
    key = {"day": "day", "month": "substr(day, 1, 7)"}.get(by, "key")
    where, args = window.day_where()
    sums = ", ".join(f"SUM({name})" for name in _SUMS)
    sql = f"SELECT {key} AS k, {sums} FROM stats_rollup WHERE dim = ?{where} GROUP BY k"
    return list(conn.execute(sql, [dim, *args]))


def _from_rows(conn: sqlite3.Connection, by: GroupBy, window: Window) -> list[tuple[Any, ...]]:
    """Sums straight from the invocations of a part of a day (read through the time index)."""
    key = _KEY_SQL[by]
    where, args = window.where()
    sql = (f"SELECT {key} AS k, COUNT(*), SUM(outcome = 'ok'), COUNT(duration_s), SUM(input_tokens),"
           " SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_usd)"
           f" FROM invocations INDEXED BY invocations_time WHERE outcome {COUNTED}{where} GROUP BY k")
    return list(conn.execute(sql, args))


def _histogram_key(key: Any) -> str:
    return "" if key is None else str(key)


def _histograms(conn: sqlite3.Connection, by: GroupBy) -> dict[str, list[tuple[int, int]]]:
    found: dict[str, list[tuple[int, int]]] = {}
    sql = "SELECT key, bucket, n FROM stats_histogram WHERE dim = ? AND n > 0 ORDER BY key, bucket"
    for key, bucket, count in conn.execute(sql, (by,)):
        found.setdefault(key, []).append((bucket, count))
    return found


def _histogram_serves(by: GroupBy, key: Any, window: Window) -> bool:
    """The histograms span all time: they answer for a group only when the window covers all of it."""
    if by in COLUMN_GROUPS:
        return window.since is None and window.until is None
    start, end = _period_bounds(by, str(key))
    return window.narrowed(start, end) == Window(start, end)


def _percentile(conn: sqlite3.Connection, by: GroupBy, key: Any, window: Window, timed: int, fraction: float,
                histogram: list[tuple[int, int]] | None) -> float | None:
    if histogram is not None:
        value = _from_histogram(conn, by, key, window, histogram, fraction)
        if value is not None:
            return value
    if not timed:
        return None
    group_where, group_args = _group_filter(by, key, window)
    return _nth(conn, group_where, group_args, rank_offset(timed, fraction))


def _from_histogram(conn: sqlite3.Connection, by: GroupBy, key: Any, window: Window,
                    histogram: list[tuple[int, int]], fraction: float) -> float | None:
    """Find the bucket holding the rank from the histogram, then read the exact value inside it."""
    wanted = rank_offset(sum(count for _, count in histogram), fraction)
    below = 0
    for bucket, count in histogram:
        if wanted < below + count:
            low, high = bucket_bounds(bucket)
            group_where, group_args = _group_filter(by, key, window)
            if low is not None:
                group_where, group_args = group_where + " AND duration_s >= ?", [*group_args, low]
            if high is not None:
                group_where, group_args = group_where + " AND duration_s < ?", [*group_args, high]
            return _nth(conn, group_where, group_args, wanted - below)
        below += count
    return None


def _nth(conn: sqlite3.Connection, where: str, args: list[Any], offset: int) -> float | None:
    sql = (f"SELECT duration_s FROM invocations WHERE duration_s IS NOT NULL AND outcome {COUNTED}{where}"
           " ORDER BY duration_s LIMIT 1 OFFSET ?")
    found = conn.execute(sql, [*args, offset]).fetchone()
    return None if found is None else round(float(found[0]), 3)


def _group_filter(by: GroupBy, key: Any, window: Window) -> tuple[str, list[Any]]:
    """A WHERE fragment selecting one group's rows in a way the group's index can serve."""
    if by in COLUMN_GROUPS:
        where, args = window.where()
        return f" AND {by} IS ?{where}", [key, *args]
    start, end = _period_bounds(by, str(key))
    return window.narrowed(start, end).where()


def _period_bounds(by: GroupBy, key: str) -> tuple[float, float]:
    if by == "day":
        first = datetime.fromisoformat(key).replace(tzinfo=UTC)
        return first.timestamp(), (first + timedelta(days=1)).timestamp()
    year, month = (int(part) for part in key.split("-"))
    first = datetime(year, month, 1, tzinfo=UTC)
    days = calendar.monthrange(year, month)[1]
    return first.timestamp(), (first + timedelta(days=days)).timestamp()


def _add_outcomes(conn: sqlite3.Connection, by: GroupBy, window: Window, rows: list[dict[str, Any]]) -> None:
    where, args = window.where("decided_at")
    sql = (f"SELECT {by}, SUM(state = 'merged'), SUM(state = 'closed') FROM pull_requests"
           f" WHERE state IN ('merged', 'closed'){where} GROUP BY {by}")
    decided = {key: (merged, closed) for key, merged, closed in conn.execute(sql, args)}
    for row in rows:
        merged, closed = decided.get(row["key"], (0, 0))
        row["merged"], row["closed"] = merged, closed
        row["acceptance_rate"] = round(merged / (merged + closed), 4) if merged + closed else None
        row["cost_per_merged_usd"] = round(row["cost_usd"] / merged, 6) if merged else None
