"""Entry point: the command group and the one handler that turns domain errors into exit codes."""

from __future__ import annotations

import importlib
import os
import sys

import click

from conveyor import __version__
from conveyor.core.errors import ConveyorError, ProblemsError
from conveyor.core.logs import configure_logging
from conveyor.workspace.git import scrub_environment

EXIT_PROBLEMS = 2
EXIT_ERROR = 1


# Subcommand → module holding its `command`. Imported only when that subcommand runs: `conveyor stats`
# must not pay for importing the daemon, GitPython's publisher and PyGithub.
SUBCOMMANDS = {
    "init": "conveyor.cli.init_cmd", "run": "conveyor.cli.run_cmd", "submit": "conveyor.cli.submit_cmd",
    "status": "conveyor.cli.status_cmd", "task": "conveyor.cli.task_cmd", "stats": "conveyor.cli.stats_cmd",
    "config": "conveyor.cli.config_cmd", "doctor": "conveyor.cli.doctor_cmd", "logs": "conveyor.cli.logs_cmd",
    "service": "conveyor.cli.service_cmd", "roadmap": "conveyor.cli.roadmap_cmd",
    "dashboard": "conveyor.cli.dashboard_cmd",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module the first time the subcommand is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS and cmd_name not in self.commands:
            command = importlib.import_module(SUBCOMMANDS[cmd_name]).command
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="conveyor")
def cli() -> None:
    """Conveyor: task files and ROADMAP.md items in, reviewed pull requests out."""


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
