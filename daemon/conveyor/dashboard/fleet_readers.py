"""The dashboard's telemetry views in a fleet: the same numbers `readers` draws from this host's SQLite,
read from the fleet's PostgreSQL (every node's runs), with the spend the budgets see (what the fleet spent
plus what its running tasks hold reserved). Read-only; a database that does not answer shows nothing
rather than failing the page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.config import Config
from conveyor.core.errors import ConveyorError
from conveyor.scheduling import budgets
from conveyor.telemetry import stats
from conveyor.telemetry.stats import GroupBy


def attempts(config: Config, task_id: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The task's invocations on any node, oldest first, with the columns the task page shows."""
    from conveyor.coordination.shared import open_shared

    try:
        shared = open_shared(config, None)
    except ConveyorError:
        return []
    try:
        return [{name: row.get(name) for name in columns} for row in shared.telemetry.rows_for_task(task_id)]
    except ConveyorError:
        return []
    finally:
        shared.close()


def spend(config: Config, now: float,
          groups: Sequence[GroupBy]) -> tuple[dict[str, list[dict[str, Any]]], list[budgets.BudgetState]]:
    """`stats` rows per group (the last 30 days by day, all time otherwise) and the budgets' states."""
    from conveyor.coordination.shared import open_shared

    try:
        shared = open_shared(config, None)
    except ConveyorError:
        return {}, []
    try:
        window = stats.Window(since=now - 30 * stats.DAY, until=None)
        found: dict[str, list[dict[str, Any]]] = {
            group: shared.telemetry.collect(group, window if group == "day" else stats.Window()) for group in groups}
        return found, budgets.evaluate(config.policies.budgets, shared.ledger.spend, now)
    except ConveyorError:
        return {}, []
    finally:
        shared.close()
