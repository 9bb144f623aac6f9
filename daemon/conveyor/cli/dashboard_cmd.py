"""`conveyor dashboard`: serve the live web dashboard, or print its login link."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.cli.common import load, repo_option
from conveyor.core.logs import configure_logging


@click.command("dashboard")
@repo_option
@click.option("--host", default=None, help="Address to listen on (default: daemon.yaml's, else 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: daemon.yaml's, else 8765; 0 picks a free one).")
@click.option("--allow-remote", is_flag=True, default=False, help="Allow a non-loopback --host (warned about).")
@click.option("--print-url", is_flag=True, default=False,
              help="Print the login link (it carries the token) and exit.")
def command(repo: Path | None, config_dir: Path | None, host: str | None, port: int | None, allow_remote: bool,
            print_url: bool) -> None:
    """Serve the board, task pages and spend as a live web page on 127.0.0.1."""
    from conveyor.dashboard.auth import load_token, login_url
    from conveyor.dashboard.server import running_url, serve

    config = load(repo, config_dir)
    settings = config.daemon.dashboard
    chosen_host = host or settings.host
    chosen_port = settings.port if port is None else port
    if print_url:
        running = running_url(config)
        if running is not None and host is None and port is None:
            chosen_host, chosen_port = running
        click.echo(login_url(chosen_host, chosen_port, load_token(config.state_dir)))
        return
    configure_logging(level="info")
    serve(config, chosen_host, chosen_port, allow_remote=allow_remote or settings.allow_remote)
