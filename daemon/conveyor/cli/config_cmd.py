"""`conveyor config validate`: every configuration problem with file, line, field and a fix."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.cli.common import load, repo_option
from conveyor.setup.doctor import check_tool


@click.group("config")
def command() -> None:
    """Inspect the configuration."""


@command.command("validate")
@repo_option
def validate(repo: Path | None, config_dir: Path | None) -> None:
    """Load and cross-check config/*.yaml; exit 2 on errors (printed one per line)."""
    import os

    config = load(repo, config_dir)  # ProblemsError → printed by main, exit 2
    for warning in config.warnings:
        click.echo(f"warning: {warning.render()}")
    for name, tool in config.tools.items():
        for check in check_tool(name, tool, os.environ):
            if check.status != "ok" and check.name.startswith("tool"):
                click.echo(f"warning: {check.detail}")
    click.echo(f"configuration OK ({config.config_dir})")
