"""`conveyor status`: the board at a glance (queued, waiting and why, running, done, errors)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from conveyor.cli.common import console, load, load_settings, repo_option
from conveyor.config.board_settings import BoardSettings
from conveyor.core.errors import ConveyorError
from conveyor.core.logs import apply_deferred_logging
from conveyor.daemon.status import BoardStatus, collect_status

if TYPE_CHECKING:
    from conveyor.coordination import FleetView


@click.command("status")
@repo_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def command(repo: Path | None, config_dir: Path | None, fmt: str) -> None:
    """Show queued, waiting, running, done and failed tasks."""
    settings = load_settings(repo, config_dir)   # without pydantic while the configuration is unchanged
    status = collect_status(settings, time.time())
    view, fleet_error = _fleet(settings, repo, config_dir)
    nodes = view.nodes if view is not None else []
    if fmt == "json":
        fleet = {"fleet": {"nodes": [asdict(n) for n in nodes], "counts": _fleet_counts(view),
                           "error": fleet_error}} if view is not None or fleet_error else {}
        click.echo(json.dumps({**status.as_dict(), **fleet}, indent=2, default=str))
        return
    _print(status, fleet=settings.coordination is not None)
    if fleet_error:
        console().print(f"fleet: {fleet_error}")
    if view is not None:
        counts = _fleet_counts(view)
        console().print("fleet (every node): " + " · ".join(f"{name} {counts[name]}" for name in counts))
    if nodes:
        _table(console(), "Fleet", [
            {"node": n.node, "role": "leader" if n.leader else "", "heartbeat": f"{n.heartbeat_age_s:.1f} s ago",
             "state": "alive" if n.alive else "gone", "tasks": ", ".join(n.tasks)} for n in nodes],
            [("node", "node"), ("role", "role"), ("state", "state"), ("heartbeat", "heartbeat"), ("tasks", "tasks")])


def _fleet(settings: BoardSettings, repo: Path | None,
           config_dir: Path | None) -> tuple[FleetView | None, str | None]:
    """The fleet from its database (None on a single host); an unreachable database is said, not fatal."""
    if settings.coordination is None:
        return None, None
    from conveyor.coordination import fleet_view

    apply_deferred_logging()   # the fleet's modules log through structlog directly
    try:
        return fleet_view(load(repo, config_dir)), None
    except ConveyorError as exc:
        return None, f"database unreachable: {exc}"


def _fleet_counts(view: FleetView | None) -> dict[str, int]:
    """The fleet's tasks by state in status's words (a lease is a running task)."""
    found = view.counts if view is not None else {}
    return {"queued": found.get("queued", 0), "running": found.get("leased", 0), "done": found.get("done", 0),
            "errors": found.get("error", 0)}


def _print(status: BoardStatus, *, fleet: bool = False) -> None:
    out = console()
    daemon = status.daemon
    if daemon and daemon.get("running") and daemon.get("draining"):
        out.print(f"daemon: draining (pid {daemon['pid']}): it starts nothing new and stops once the running "
                  f"agents finish (at the latest {daemon.get('drain_until') or 'after drain_grace_s'}); "
                  f"`kill -INT {daemon['pid']}` (or Ctrl-C again) stops them now, their tasks run again at the "
                  "next start")
    elif daemon and daemon.get("running"):
        out.print(f"daemon: running (pid {daemon['pid']}), last looked {daemon.get('updated_at') or '?'}")
    else:
        out.print("daemon: not running" + (f" (last seen {daemon['last_seen']})" if daemon else ""))
    for pause in status.paused_tools:
        why = pause.get("reason") or pause.get("outcome")
        out.print(f"tool {pause['tool']} paused until {pause['until']} ({why}); it resumes by itself")
    counts = status.counts
    out.print(("this node's clone: " if fleet else "") + " · ".join(f"{name} {counts.get(name, 0)}" for name in
              ("queued", "waiting", "running", "claimed", "done", "errors", "rejected")))
    _table(out, "Running", status.running, [("id", "task"), ("agent", "agent"), ("attempt", "try"),
                                            ("elapsed_s", "elapsed s")])
    _table(out, "Queued", status.queued, [("id", "task"), ("agent", "agent"), ("priority", "priority")])
    running = bool(daemon and daemon.get("running"))
    _table(out, "Claimed (waiting for a slot or a paused tool)" if running else
           "Claimed (waiting for the daemon: they run again at `conveyor run`)", status.claimed,
           [("id", "task"), ("agent", "agent"), ("attempt", "try")])
    _table(out, "Waiting", status.waiting, [("id", "task"), ("reason", "why")])
    _table(out, "Done (latest)", status.done, [("id", "task"), ("branch", "branch"), ("commit", "commit"),
                                              ("cost_usd", "USD")])
    _table(out, "Errors", status.errors[:10], [("id", "task"), ("message", "error")])
    _table(out, "Publishing pending (retried periodically)", status.pending_publications[:10],
           [("id", "task"), ("pending", "pending"), ("publish", "why")])
    _table(out, "Rejected", status.rejected[:10], [("file", "file"), ("problem", "problem")])


def _table(out: Any, title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    if not rows:
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", expand=False)
    for _, header in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(key) is None else str(row.get(key)) for key, _ in columns))
    out.print(table)
