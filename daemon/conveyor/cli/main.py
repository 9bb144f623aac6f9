"""Entry point: the command group and the one handler that turns domain errors into exit codes."""

from __future__ import annotations

import os
import sys

import click

from conveyor import __version__
from conveyor.cli import (
    config_cmd,
    doctor_cmd,
    init_cmd,
    logs_cmd,
    roadmap_cmd,
    run_cmd,
    service_cmd,
    stats_cmd,
    status_cmd,
    submit_cmd,
    task_cmd,
)
from conveyor.errors import ConveyorError, ProblemsError
from conveyor.git import scrub_environment
from conveyor.logs import configure_logging

EXIT_PROBLEMS = 2
EXIT_ERROR = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="conveyor")
def cli() -> None:
    """Conveyor: task files and ROADMAP.md items in, reviewed pull requests out."""


for module in (init_cmd, run_cmd, submit_cmd, status_cmd, task_cmd, stats_cmd, config_cmd, doctor_cmd, logs_cmd,
               service_cmd, roadmap_cmd):
    cli.add_command(module.command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; ConveyorError becomes a message on stderr and a non-zero exit, never a traceback."""
    scrub_environment(os.environ)
    # Until a command says otherwise (`run` configures its own), log warnings and worse to stderr only:
    # stdout belongs to the command's output (`status --format json` must stay parseable).
    configure_logging(level="warning")
    try:
        # without standalone mode, click returns (not raises) the code of a `raise Exit(n)` in a command
        code = cli.main(args=argv, prog_name="conveyor", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except ProblemsError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem.render()}", err=True)
        sys.exit(EXIT_PROBLEMS)
    except ConveyorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)
