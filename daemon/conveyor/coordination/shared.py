"""What the nodes of a fleet share besides the board: telemetry, the spend ledger and provider pauses.

Single host (no `coordination:`): telemetry is the SQLite file in the state folder, no ledger is needed
and pauses stay in the state folder; nothing here touches a server. In a fleet all three live in the
coordination database, on one connection of their own (`Link`, reconnecting after a server restart), so
a long telemetry write never holds up the node's heartbeat on the coordinator's connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.config import Config
from conveyor.coordination.spend import NoReservations, SpendLedger
from conveyor.core.errors import ConveyorError
from conveyor.telemetry.base import TelemetryStore
from conveyor.telemetry.store import Telemetry

if TYPE_CHECKING:
    from conveyor.coordination.link import Link
    from conveyor.coordination.shared_pauses import SharedPauses

READER_PATIENCE_S = 2.0   # `conveyor status` and `stats` say the database is away rather than wait for it


@dataclass
class Shared:
    telemetry: TelemetryStore
    ledger: SpendLedger = field(default_factory=NoReservations)
    pauses: SharedPauses | None = None      # None: this node's pauses are its own
    fleet: bool = False
    link: Link | None = None                  # the fleet's connection for all three

    def close(self) -> None:
        self.telemetry.close()
        if self.link is not None:
            self.link.close()


def open_shared(config: Config, node: str | None) -> Shared:
    """The stores daemon.yaml asks for; `node` names this daemon in the fleet (None for a reader such as
    `conveyor stats`). Raises ConveyorError when the fleet's database cannot be reached or prepared."""
    return open_stores(config.daemon.coordination, config.telemetry_db, config.daemon.privacy, node=node,
                       patience_s=config.daemon.lease_timeout_s)


def open_stores(url: str | None, telemetry_db: Path, privacy: str, *, node: str | None = None,
                patience_s: float = READER_PATIENCE_S) -> Shared:
    """`open_shared` from the values themselves (the read-only commands have them without the loader)."""
    if url is None:
        return Shared(Telemetry(telemetry_db, privacy=privacy))
    try:
        from conveyor.coordination.link import Link
        from conveyor.coordination.shared_pauses import SharedPauses
        from conveyor.coordination.shared_spend import SharedSpend
        from conveyor.telemetry.pg_store import PgTelemetry
    except ImportError as exc:
        raise ConveyorError(f"daemon.yaml: coordination: needs the PostgreSQL driver ({exc}); install it with "
                            "`pip install 'conveyor[fleet]'`, or remove the key for the single-host mode") from exc
    link = Link(url, f"conveyor shared {node or 'reader'}")
    ledger = SharedSpend(link, node or "reader")
    pauses = SharedPauses(link, node or "reader")
    try:
        telemetry = PgTelemetry(link, node=node, privacy=privacy, patience_s=patience_s)
        ledger.prepare()
        pauses.prepare()
    except ConveyorError as exc:
        link.close()
        raise ConveyorError(f"the coordination database ({_safe(url)}) did not answer: {exc}") from exc
    return Shared(telemetry, ledger, pauses, fleet=True, link=link)


def _safe(url: str) -> str:
    """The URL without anything between `//` and `@` that could be a password."""
    head, _, tail = url.partition("//")
    return head + "//" + tail.split("@", 1)[-1] if "@" in tail else url
