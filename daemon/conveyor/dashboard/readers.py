"""What the pages show beyond the Kanban: one task, the spend, errors by kind. Read-only throughout.

The telemetry database is opened with `mode=ro` (the dashboard never creates or migrates it), task ids
from a URL are checked against the board's own name rule before any path is built, and transcripts are
shown only with `privacy: full` (in metadata mode the daemon keeps none anyway).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from conveyor.board.layout import BoardLayout, find_task
from conveyor.config import Config
from conveyor.core import yamlio
from conveyor.core.task import SAFE_NAME
from conveyor.dashboard import fleet_readers
from conveyor.runner.process import log_tail
from conveyor.scheduling import budgets
from conveyor.telemetry import stats

TAIL_BYTES = 16 * 1024
_ATTEMPT_COLUMNS = ("attempt", "round", "tool", "model", "outcome", "started_at", "duration_s", "input_tokens",
                    "output_tokens", "cost_usd", "branch", "commit_sha", "pr_url", "error")


@contextlib.contextmanager
def telemetry_ro(config: Config) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to the telemetry database, or None when there is none yet."""
    path = config.telemetry_db
    if not path.exists():
        yield None
        return
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
    try:
        yield conn
    finally:
        conn.close()


def valid_task_id(task_id: str) -> bool:
    return bool(SAFE_NAME.match(task_id))


def task_detail(config: Config, task_id: str) -> dict[str, Any] | None:
    """The task file, where it is, its attempts, result and error; None when no such task is on the board."""
    if not valid_task_id(task_id):
        return None
    layout = BoardLayout(config.board_root)
    path = find_task(layout, task_id)
    if path is None:
        return None
    text = yamlio.read_limited(path).decode("utf-8", "replace") if path.is_file() else ""
    try:
        document = yamlio.loads(text.encode("utf-8"))
    except yamlio.YamlProblem:
        document = None
    document = document if isinstance(document, dict) else {}
    folder = path.parent.relative_to(layout.root).as_posix()
    result = document.get("result") if isinstance(document.get("result"), dict) else {}
    attempts = _attempts(config, task_id)
    return {"id": task_id, "folder": folder, "file": str(path.relative_to(config.repo)), "text": text,
            "status": document.get("status"), "title": document.get("title"), "agent": document.get("agent"),
            "question": document.get("question"), "answer": document.get("answer"),
            "result": result, "error": document.get("error") if isinstance(document.get("error"), dict) else None,
            "attempts": attempts,
            "tokens": sum((row["input_tokens"] or 0) + (row["output_tokens"] or 0) for row in attempts),
            "cost_usd": round(sum(row["cost_usd"] or 0.0 for row in attempts), 6),
            "pr_url": (result or {}).get("pr_url") or next((r["pr_url"] for r in attempts if r["pr_url"]), None),
            "transcript": transcript_tail(config, task_id), "privacy": config.daemon.privacy}


def _attempts(config: Config, task_id: str) -> list[dict[str, Any]]:
    if config.daemon.coordination is not None:   # a fleet: every node's runs, from its database
        return fleet_readers.attempts(config, task_id, _ATTEMPT_COLUMNS)
    with telemetry_ro(config) as conn:
        if conn is None:
            return []
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM invocations WHERE task_id = ? "
                                "ORDER BY id", (task_id,)).fetchall()
        except sqlite3.Error:
            return []
        return [dict(row) for row in rows]


def transcript_tail(config: Config, task_id: str) -> str | None:
    """The last TAIL_BYTES of the newest agent log of the task, only with `privacy: full`."""
    if config.daemon.privacy != "full" or not valid_task_id(task_id):
        return None
    folder = config.logs_dir / task_id
    logs = sorted(folder.glob("attempt-*.log"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not logs:
        return None
    return log_tail(logs[-1], TAIL_BYTES)


def spend(config: Config, now: float | None = None) -> dict[str, Any]:
    """Spend by day, agent, model and tool (the `conveyor stats` numbers), budgets left, cost per merge."""
    now = time.time() if now is None else now
    groups: dict[str, list[dict[str, Any]]] = {}
    budget_rows: list[dict[str, Any]] = []
    if config.daemon.coordination is not None:   # a fleet: every node's runs and the ledger's reservations
        groups, states = fleet_readers.spend(config, now, ("day", "agent", "model", "tool"))
        budget_rows = [_budget_row(state) for state in states]
    with telemetry_ro(config) if config.daemon.coordination is None else contextlib.nullcontext() as conn:
        if conn is not None:
            window = stats.Window(since=now - 30 * stats.DAY, until=None)
            for group in ("day", "agent", "model", "tool"):
                try:
                    groups[group] = stats.collect(conn, group, window if group == "day" else stats.Window())
                except sqlite3.Error:
                    groups[group] = []

            def spent(since: float, until: float, agent: str | None, tool: str | None) -> float:
                sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM invocations WHERE started_at >= ? AND started_at < ?"
                args: list[Any] = [since, until]
                for column, value in (("agent", agent), ("tool", tool)):
                    if value is not None:
                        sql += f" AND {column} = ?"
                        args.append(value)
                return float(conn.execute(sql, args).fetchone()[0])

            budget_rows = [_budget_row(state) for state in budgets.evaluate(config.policies.budgets, spent, now)]
    peak = max((row["cost_usd"] for row in groups.get("day", [])), default=0.0) or 1.0
    for row in groups.get("day", []):
        row["bar"] = round(100 * row["cost_usd"] / peak)
    return {"groups": groups, "budgets": budget_rows}


def _budget_row(state: budgets.BudgetState) -> dict[str, Any]:
    return {"scope": state.scope_label, "period": state.budget.period, "limit": state.budget.limit,
            "usd": state.budget.usd, "spent": round(state.spent, 4),
            "left": round(max(state.budget.usd - state.spent, 0.0), 4), "exceeded": state.exceeded}


def errors_by_kind(status: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """Failed tasks grouped by their `error.kind` (or the first words of the message when there is none)."""
    kinds: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    layout = BoardLayout(config.board_root)
    for entry in status.get("errors", []):
        kind = _error_kind(layout, str(entry.get("agent")), str(entry["id"])) or "unknown"
        kinds[kind] += 1
        examples.setdefault(kind, []).append(str(entry["id"]))
    return [{"kind": kind, "count": count, "tasks": examples[kind][:10]} for kind, count in kinds.most_common()]


def _error_kind(layout: BoardLayout, agent: str, task_id: str) -> str | None:
    if not valid_task_id(task_id) or not valid_task_id(agent):
        return None
    path = layout.done_dir(agent) / f"{task_id}.yaml"
    error = (yamlio.read_mapping(path) or {}).get("error")
    if isinstance(error, dict):
        kind = error.get("kind")
        return str(kind) if kind else None
    return None
