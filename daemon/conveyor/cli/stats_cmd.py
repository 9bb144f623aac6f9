"""`conveyor stats`: invocations, success, tokens and cost by agent, tool and model."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from conveyor.cli.common import console, load, repo_option
from conveyor.telemetry import Telemetry


@click.command("stats")
@repo_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def command(repo: Path | None, config_dir: Path | None, fmt: str) -> None:
    """Totals from the telemetry database."""
    config = load(repo, config_dir)
    telemetry = Telemetry(config.telemetry_db, privacy=config.daemon.privacy)
    data = {group: telemetry.totals(group) for group in ("agent", "tool", "model")}
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    out = console()
    for group, rows in data.items():
        table = Table(title=f"By {group}", title_justify="left")
        for header in (group, "runs", "ok", "input", "output", "cache r", "cache w", "USD"):
            table.add_column(header, justify="left" if header == group else "right")
        for row in rows:
            table.add_row(str(row["key"]), str(row["invocations"]), str(row["ok"]), str(row["input"]),
                          str(row["output"]), str(row["cache_read"]), str(row["cache_write"]),
                          f"{row['cost_usd']:.4f}")
        out.print(table)
