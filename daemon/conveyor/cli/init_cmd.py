"""`conveyor init`: board folders, configuration, a ROADMAP.md template and ignore entries."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.cli.common import repo_option, resolve_repo
from conveyor.setup.init_repo import init_repository


@click.command("init")
@repo_option
def command(repo: Path | None, config_dir: Path | None) -> None:
    """Write working defaults into the repository; safe to run again (nothing is overwritten)."""
    root = resolve_repo(repo)
    report = init_repository(root, config_dir=config_dir.resolve() if config_dir else None)
    for item in report.created:
        click.echo(f"created  {item}")
    for item in report.kept:
        click.echo(f"kept     {item}")
    click.echo("\nNext: `conveyor doctor`, then `conveyor run`, then drop a task with `conveyor submit`.")
