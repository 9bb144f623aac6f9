"""Rollups that keep `conveyor stats` fast at a million rows: kept exact by SQLite triggers.

Summing a million rows costs SQLite most of a second, so per-day sums per agent, model and tool
(`stats_rollup`) and a duration histogram per group (`stats_histogram`) are maintained by triggers on
`invocations`; any writer of the table keeps them right, and the migration backfills an old database.
A percentile is then found in two steps: the histogram names the bucket holding the wanted rank, and one
indexed `ORDER BY duration_s LIMIT 1 OFFSET k` inside that bucket reads the exact value.

Buckets are piecewise linear with power-of-two steps (exact in floating point, so SQL's bucket of a value
and Python's bounds of a bucket always agree): 1/8 s below 1 s, then 0.5 s, 2 s, 8 s, 64 s and 512 s steps.
"""

from __future__ import annotations

COUNTED = "NOT IN ('running', 'skipped')"          # finished invocations; the others are not statistics
ROLLUP_DIMS = ("agent", "model", "tool")
HISTOGRAM_DIMS = ("agent", "model", "tool", "day", "month")
# (start, step, buckets): the piecewise-linear duration buckets; the last bucket is open-ended.
PIECES: tuple[tuple[float, float, int], ...] = (
    (0.0, 0.125, 8), (1.0, 0.5, 14), (8.0, 2.0, 28), (64.0, 8.0, 56), (512.0, 64.0, 56), (4096.0, 512.0, 56))
LAST_START = 32768.0
LAST_BUCKET = sum(count for _, _, count in PIECES)


def bucket_bounds(bucket: int) -> tuple[float | None, float | None]:
    """[low, high) of a bucket; None = unbounded (bucket 0 also holds negative durations)."""
    base = 0
    for start, step, count in PIECES:
        if bucket < base + count:
            low = start + (bucket - base) * step
            return (None if bucket == 0 else low), low + step
        base += count
    return LAST_START, None


def bucket_sql(value: str) -> str:
    """SQL expression of the bucket of duration `value` (mirrors `bucket_bounds`)."""
    parts, base = [], 0
    for start, step, count in PIECES:
        end = start + step * count
        parts.append(f"WHEN {value} < {end!r} THEN {base} + MAX(CAST(({value} - {start!r}) / {step!r} AS INTEGER), 0)")
        base += count
    return "CASE " + " ".join(parts) + f" ELSE {LAST_BUCKET} END"


def _day(row: str) -> str:
    return f"strftime('%Y-%m-%d', {row}.started_at, 'unixepoch')"


_KEYS = {"agent": "{r}.agent", "model": "COALESCE({r}.model, '')", "tool": "{r}.tool",
         "day": "strftime('%Y-%m-%d', {r}.started_at, 'unixepoch')",
         "month": "strftime('%Y-%m', {r}.started_at, 'unixepoch')"}


def _rollup_upsert(dim: str, row: str, sign: int) -> str:
    key = _KEYS[dim].format(r=row)
    values = ", ".join(f"{sign} * {expr}" for expr in (
        "1", f"({row}.outcome = 'ok')", f"({row}.duration_s IS NOT NULL)", f"{row}.input_tokens",
        f"{row}.output_tokens", f"{row}.cache_read_tokens", f"{row}.cache_write_tokens", f"{row}.cost_usd"))
    return (f"INSERT INTO stats_rollup SELECT '{dim}', {key}, {_day(row)}, {values} WHERE {row}.outcome {COUNTED}"
            " ON CONFLICT (dim, key, day) DO UPDATE SET invocations = invocations + excluded.invocations,"
            " ok = ok + excluded.ok, timed = timed + excluded.timed,"
            " input_tokens = input_tokens + excluded.input_tokens,"
            " output_tokens = output_tokens + excluded.output_tokens,"
            " cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,"
            " cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,"
            " cost_usd = cost_usd + excluded.cost_usd;")


def _histogram_upsert(dim: str, row: str, sign: int) -> str:
    key = _KEYS[dim].format(r=row)
    return (f"INSERT INTO stats_histogram SELECT '{dim}', {key}, {bucket_sql(row + '.duration_s')}, {sign}"
            f" WHERE {row}.outcome {COUNTED} AND {row}.duration_s IS NOT NULL"
            " ON CONFLICT (dim, key, bucket) DO UPDATE SET n = n + excluded.n;")


def _apply(row: str, sign: int) -> str:
    return " ".join([*(_rollup_upsert(dim, row, sign) for dim in ROLLUP_DIMS),
                     *(_histogram_upsert(dim, row, sign) for dim in HISTOGRAM_DIMS)])


_WATCHED = ("agent, tool, model, started_at, duration_s, outcome, input_tokens, output_tokens, cache_read_tokens,"
            " cache_write_tokens, cost_usd")


def _backfill() -> list[str]:
    statements = []
    for dim in ROLLUP_DIMS:
        key = _KEYS[dim].format(r="i")
        statements.append(
            f"INSERT INTO stats_rollup SELECT '{dim}', {key}, {_day('i')}, COUNT(*), SUM(i.outcome = 'ok'),"
            " COUNT(i.duration_s), SUM(i.input_tokens), SUM(i.output_tokens), SUM(i.cache_read_tokens),"
            f" SUM(i.cache_write_tokens), SUM(i.cost_usd) FROM invocations i WHERE i.outcome {COUNTED}"
            f" GROUP BY {key}, {_day('i')}")
    for dim in HISTOGRAM_DIMS:
        key, bucket = _KEYS[dim].format(r="i"), bucket_sql("i.duration_s")
        statements.append(
            f"INSERT INTO stats_histogram SELECT '{dim}', {key}, {bucket}, COUNT(*) FROM invocations i"
            f" WHERE i.outcome {COUNTED} AND i.duration_s IS NOT NULL GROUP BY {key}, {bucket}")
    return statements


def rollup_statements() -> list[str]:
    """DDL (tables, triggers, indexes) and the backfill, as separate statements for one transaction."""
    return [
        "CREATE TABLE IF NOT EXISTS stats_rollup (dim TEXT NOT NULL, key TEXT NOT NULL, day TEXT NOT NULL,"
        " invocations INTEGER NOT NULL, ok INTEGER NOT NULL, timed INTEGER NOT NULL, input_tokens INTEGER NOT NULL,"
        " output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,"
        " cost_usd REAL NOT NULL, PRIMARY KEY (dim, key, day)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS stats_histogram (dim TEXT NOT NULL, key TEXT NOT NULL, bucket INTEGER NOT NULL,"
        " n INTEGER NOT NULL, PRIMARY KEY (dim, key, bucket)) WITHOUT ROWID",
        *_backfill(),
        f"CREATE TRIGGER IF NOT EXISTS invocations_stats_insert AFTER INSERT ON invocations BEGIN"
        f" {_apply('NEW', 1)} END",
        f"CREATE TRIGGER IF NOT EXISTS invocations_stats_update AFTER UPDATE OF {_WATCHED} ON invocations BEGIN"
        f" {_apply('OLD', -1)} {_apply('NEW', 1)} END",
        f"CREATE TRIGGER IF NOT EXISTS invocations_stats_delete AFTER DELETE ON invocations BEGIN"
        f" {_apply('OLD', -1)} END",
        # Percentile refinement inside one bucket, per group: (key, duration) ranges served in-index.
        *(f"CREATE INDEX IF NOT EXISTS invocations_stats_{dim} ON invocations ({dim}, duration_s, outcome, started_at)"
          for dim in ROLLUP_DIMS),
        # Day and month groups, budget spend and windowed stats: a time range served in-index.
        "CREATE INDEX IF NOT EXISTS invocations_time ON invocations"
        " (started_at, duration_s, outcome, agent, tool, cost_usd)",
    ]
