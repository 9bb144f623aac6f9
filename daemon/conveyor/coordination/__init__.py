"""Who does what when one or several daemons serve a board: membership, the board leader, the exactly-once
claim as a lease with a fencing token, and the fence the pipeline quotes before it writes. Single host
(an flock and the hard-link claim, no server) by default; a fleet through PostgreSQL with
`coordination: postgresql://...` in daemon.yaml, where the nodes also share telemetry, the spend ledger
that holds hard budgets across the fleet, and provider pauses (`shared`).

May import: core, config, board, telemetry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from conveyor.config import Config
from conveyor.coordination.base import Asked, BoardLedger, Coordinator, Fence, Grant, NodeInfo, Outcome, Unfenced
from conveyor.coordination.local import LocalCoordinator
from conveyor.core.errors import ConveyorError


def open_coordinator(config: Config, host_lock: Callable[[], AbstractContextManager[object]]) -> Coordinator:
    """The coordinator daemon.yaml asks for; `host_lock` keeps one daemon per state folder in either mode."""
    url = config.daemon.coordination
    if url is None:
        return LocalCoordinator(host_lock)
    try:
        from conveyor.coordination.postgres import PostgresCoordinator
    except ImportError as exc:
        raise ConveyorError(f"daemon.yaml: coordination: needs the PostgreSQL driver ({exc}); install it with "
                            "`pip install 'conveyor[fleet]'`, or remove the key for the single-host mode") from exc
    return PostgresCoordinator(url, lease_timeout_s=config.daemon.lease_timeout_s,
                               poll_s=config.daemon.fleet_poll_s, host_lock=host_lock())


@dataclass(frozen=True)
class FleetView:
    """What `conveyor status` shows of a fleet: its nodes, and its tasks by state across all of them."""

    nodes: list[NodeInfo]
    counts: dict[str, int]


def fleet_view(config: Config) -> FleetView | None:
    """Every node of the fleet with its tasks and heartbeat, and the fleet's task counts (None on a single
    host), for `conveyor status`; raises ConveyorError when the database does not answer."""
    if config.daemon.coordination is None:
        return None
    coordinator = open_coordinator(config, contextlib.nullcontext)
    try:
        return FleetView(coordinator.nodes(), coordinator.task_counts())
    finally:
        coordinator.close()


__all__ = [
    "Asked",
    "BoardLedger",
    "Coordinator",
    "Fence",
    "FleetView",
    "Grant",
    "LocalCoordinator",
    "NodeInfo",
    "Outcome",
    "Unfenced",
    "fleet_view",
    "open_coordinator",
]
