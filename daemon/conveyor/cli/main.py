"""Entry point: the command group and the one handler that turns domain errors into exit codes."""

from __future__ import annotations

import importlib
import os
import sys

import click

from conveyor import __version__
from conveyor.core.errors import ConveyorError, ProblemsError
from conveyor.core.logs import apply_deferred_logging, configure_logging_when_used
from conveyor.workspace.git import scrub_environment

EXIT_PROBLEMS = 2
EXIT_ERROR = 1


# Subcommand → (module holding its `command`, its one-line summary for `conveyor --help`). A module is
# imported only when its subcommand runs: `conveyor status` must not pay for importing the daemon, GitPython's
# publisher and PyGithub, and `conveyor --help` lists the summaries without importing any subcommand (a test
# holds each summary equal to its command's own short help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "config": ("conveyor.cli.config_cmd", "Inspect the configuration."),
    "dashboard": ("conveyor.cli.dashboard_cmd", "Serve the board, task pages and spend as a live web page on "
                                                "127.0.0.1."),
    "doctor": ("conveyor.cli.doctor_cmd", "Report what works and what to fix; exit 1 if anything fails."),
    "init": ("conveyor.cli.init_cmd", "Write working defaults into the repository; safe to run again (nothing "
                                      "is overwritten)."),
    "logs": ("conveyor.cli.logs_cmd", "Print what the agent runs of TASK_ID did: turns, tool calls, results, in "
                                      "the order they happened."),
    "roadmap": ("conveyor.cli.roadmap_cmd", "Show the roadmap's items with their state, what runs next, and why "
                                            "the rest waits."),
    "run": ("conveyor.cli.run_cmd", "Watch the board and run tasks until stopped (SIGTERM drains, SIGHUP reloads "
                                    "configuration)."),
    "service": ("conveyor.cli.service_cmd", "Run this repository's daemon as a user service (systemd, or launchd "
                                            "on macOS)."),
    "stats": ("conveyor.cli.stats_cmd", "Invocations, success rate, tokens, cost, p50/p95 duration, and cost per "
                                        "merged change."),
    "status": ("conveyor.cli.status_cmd", "Show queued, waiting, running, done and failed tasks."),
    "submit": ("conveyor.cli.submit_cmd", "Create a task in inbox/ and print its path."),
    "task": ("conveyor.cli.task_cmd", "Work with task files."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module the first time the subcommand is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS and cmd_name not in self.commands:
            command = importlib.import_module(SUBCOMMANDS[cmd_name][0]).command
            self.add_command(command, cmd_name)
            # the module may have loaded structlog (the daemon's modules log through it directly): the
            # deferred configuration must hold before any of them logs
            apply_deferred_logging(if_loaded=True)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, from the summaries above for subcommands not imported yet."""
        listed = [(name, self.commands.get(name)) for name in self.list_commands(ctx)]
        listed = [(name, loaded) for name, loaded in listed if loaded is None or not loaded.hidden]
        if not listed:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in listed)
        rows = []
        for name, loaded in listed:
            shown = loaded or click.Command(name, help=SUBCOMMANDS[name][1])   # shortened as click does
            rows.append((name, shown.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="conveyor")
def cli() -> None:
    """Conveyor: task files and ROADMAP.md items in, reviewed pull requests out."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; ConveyorError becomes a message on stderr and a non-zero exit, never a traceback."""
    scrub_environment(os.environ)
    # Until a command says otherwise (`run` configures its own), log warnings and worse to stderr only:
    # stdout belongs to the command's output (`status --format json` must stay parseable).
    # structlog itself is imported only if something logs: see conveyor.core.logs.
    configure_logging_when_used(level="warning")
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
