"""`conveyor doctor`: check git, the agent CLIs and their versions, credentials, repository and config."""

from __future__ import annotations

import os
from pathlib import Path

import click

from conveyor.cli.common import load, repo_option
from conveyor.core.errors import ProblemsError
from conveyor.runner.bwrap import BwrapProbe
from conveyor.runner.sandbox import SandboxContext
from conveyor.setup.doctor import (
    Check,
    check_git,
    check_publishing,
    check_repository,
    check_routing,
    check_sandbox,
    check_tool,
    check_verify,
)
from conveyor.setup.first_run import first_run_lines

MARKS = {"ok": "✔", "warn": "!", "fail": "✘"}


@click.command("doctor")
@repo_option
def command(repo: Path | None, config_dir: Path | None) -> None:
    """Report what works and what to fix; exit 1 if anything fails."""
    checks: list[Check] = [check_git()]
    try:
        config = load(repo, config_dir)
    except ProblemsError as exc:
        checks.extend(Check("config", "fail", p.render()) for p in exc.problems)
        config = None
    if config is not None:
        checks.append(Check("config", "ok", str(config.config_dir)))
        checks.extend(Check("config", "warn", w.render()) for w in config.warnings)
        checks.extend(check_repository(config))
        sandbox = SandboxContext(state_dir=config.state_dir, probe=BwrapProbe())
        for name, tool in config.tools.items():
            checks.extend(check_tool(name, tool, os.environ))
            checks.append(check_sandbox(name, tool, os.environ, sandbox))
        checks.append(check_routing(config, os.environ))
        checks.append(check_verify(config, os.environ))
        checks.extend(check_publishing(config, os.environ))
    for check in checks:
        click.echo(f"{MARKS[check.status]} {check.name:<24} {check.detail}")
    if config is not None:
        click.echo("\nThe next `conveyor run`:")
        for line in first_run_lines(config):
            click.echo(f"  - {line}")
    if any(check.status == "fail" for check in checks):
        raise click.exceptions.Exit(1)
