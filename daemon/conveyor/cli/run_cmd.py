"""`conveyor run`: the daemon in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.cli.common import load, repo_option
from conveyor.core.logs import configure_logging


@click.command("run")
@repo_option
@click.option("--once", is_flag=True, help="Run everything runnable (including tasks made on the way), then exit.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--json-logs/--console-logs", default=None, help="Log format (default: JSON unless on a terminal).")
def command(repo: Path | None, config_dir: Path | None, once: bool, log_level: str, json_logs: bool | None) -> None:
    """Watch the board and run tasks until stopped (SIGTERM drains, SIGHUP reloads configuration)."""
    from conveyor.daemon.loop import Daemon

    configure_logging(level=log_level, json=json_logs)
    config = load(repo, config_dir)
    if config.daemon.dashboard.enabled and not once:
        from conveyor.dashboard.server import beside_daemon

        with beside_daemon(config):
            code = Daemon(config, once=once).run()
    else:
        code = Daemon(config, once=once).run()
    raise click.exceptions.Exit(code)
