"""`conveyor config validate`: every configuration problem with file, line, field and a fix."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.checks.verify_setup import verify_problems
from conveyor.cli.common import load, repo_option
from conveyor.core.errors import ConfigError, Problem
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
    problems = verify_problems(config.daemon.verify, config, os.environ, where="command")
    if problems:   # a command that cannot start would fail every task: an error, like any other set-up one
        raise ConfigError([Problem(str(config.config_dir / "daemon.yaml"), problem, "verify runs without a "
                                   "shell, from the repository's virtualenv (README, 'Before the commit')",
                                   field="verify") for problem in problems])
    click.echo(f"configuration OK ({config.config_dir})")
