"""Review figures for `conveyor stats`: per author tool and per reviewer tool, over reviewed tasks.

A task counts as reviewed when telemetry holds a `reviewer` run for it in the window; its reviewer is the
tool of its last reviewer run (the one whose verdict stood, past any fallback). For each pairing we
show how many tasks and reviewer runs there were, what reviewing cost, how many fix rounds the author ran
(`fixer` runs: after a failing verify or a blocking review), and what became of the changes (merged /
closed pull requests → acceptance rate). Small numbers of rows: plain SQL over `invocations`, written so
that SQLite and the fleet's PostgreSQL read it alike (`review_query`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from conveyor.telemetry.schema import COUNTED

ReviewGroup = Literal["author", "reviewer"]
REVIEW_GROUPS: tuple[ReviewGroup, ...] = ("author", "reviewer")
COLUMNS = ("key", "tasks", "reviews", "review_cost_usd", "fix_rounds", "merged", "closed", "acceptance_rate")


def collect_reviews(conn: sqlite3.Connection, by: ReviewGroup, since: float | None = None,
                    until: float | None = None) -> list[dict[str, Any]]:
    """One row per author tool (`by='author'`) or reviewer tool (`by='reviewer'`)."""
    sql, args = review_query(by, since, until)
    return shape(conn.execute(sql, args))


def review_query(by: ReviewGroup, since: float | None = None, until: float | None = None, *,
                 invocations: str = "invocations", pull_requests: str = "pull_requests") -> tuple[str, list[float]]:
    """The query (`?` placeholders, SQL that SQLite and PostgreSQL read alike) and its arguments."""
    clauses, args = "", list[float]()
    if since is not None:
        clauses, args = clauses + " AND started_at >= ?", [*args, since]
    if until is not None:
        clauses, args = clauses + " AND started_at < ?", [*args, until]
    key = "r.reviewer" if by == "reviewer" else "COALESCE(a.author, '-')"
    sql = f"""
        WITH runs AS (SELECT id, task_id, tool, cost_usd FROM {invocations}
                      WHERE role = 'reviewer' AND outcome {COUNTED}{clauses}),
        reviewed AS (
            SELECT task_id, COUNT(*) AS reviews, SUM(cost_usd) AS cost,
                   (SELECT tool FROM runs l WHERE l.task_id = runs.task_id ORDER BY id DESC LIMIT 1) AS reviewer
            FROM runs GROUP BY task_id),
        authors AS (
            SELECT task_id, tool AS author FROM {invocations} i WHERE role = 'author'
            AND id = (SELECT MAX(id) FROM {invocations} j WHERE j.task_id = i.task_id AND j.role = 'author')),
        fixes AS (SELECT task_id, COUNT(*) AS n FROM {invocations} WHERE role = 'fixer' GROUP BY task_id),
        decided AS (SELECT task_id, MAX(CASE WHEN state = 'merged' THEN 1 ELSE 0 END) AS merged,
                           MAX(CASE WHEN state = 'closed' THEN 1 ELSE 0 END) AS closed
                    FROM {pull_requests} WHERE state IN ('merged', 'closed') GROUP BY task_id)
        SELECT {key} AS k, COUNT(DISTINCT r.task_id), SUM(r.reviews), SUM(r.cost),
               COALESCE(SUM(f.n), 0), COALESCE(SUM(d.merged), 0), COALESCE(SUM(d.closed), 0)
        FROM reviewed r LEFT JOIN authors a USING (task_id) LEFT JOIN fixes f USING (task_id)
        LEFT JOIN decided d USING (task_id) GROUP BY k ORDER BY k"""
    return sql, args


def shape(found: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """The query's rows as `conveyor stats` prints them."""
    rows = []
    for k, tasks, reviews, cost, fixes, merged, closed in found:
        merged, closed = int(merged), int(closed)
        rows.append({"key": k, "tasks": int(tasks), "reviews": int(reviews),
                     "review_cost_usd": round(float(cost or 0.0), 6), "fix_rounds": int(fixes),
                     "merged": merged, "closed": closed,
                     "acceptance_rate": round(merged / (merged + closed), 4) if merged + closed else None})
    return rows
