"""`conveyor task validate PATH...` checks task files against the board format; `conveyor task retry ID`
puts a finished or failed task back into inbox/; `conveyor task answer ID TEXT` answers an agent's question."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.board.layout import BoardLayout
from conveyor.board.retry import retry_task
from conveyor.board.validate import collect, validate_file
from conveyor.checks.verify_setup import verify_problems
from conveyor.cli.common import load, repo_option
from conveyor.config import Config
from conveyor.core.errors import ConveyorError, Problem, TaskFileError
from conveyor.core.task import line_of, parse_task
from conveyor.core.timeutil import utc_iso


@click.group("task")
def command() -> None:
    """Work with task files."""


@command.command("validate")
@repo_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="Only print files with problems.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(repo: Path | None, config_dir: Path | None, paths: tuple[Path, ...], quiet: bool,
             strict: bool) -> None:
    """Validate task files (or every task file under the given folders); exit 1 if any is invalid.

    Inside a repository, `verify` commands are also checked where they will run (its virtualenv's PATH)."""
    files = collect(list(paths))
    config = _config_if_any(repo, config_dir)
    failed = warned = 0
    for path in files:
        report = validate_file(path)
        if report.ok:
            report.errors.extend(_verify_problems(path, config))
        if report.errors or (strict and report.warnings):
            failed += 1
        warned += bool(report.warnings)
        if report.ok and not report.warnings and quiet:
            continue
        click.echo(f"{'FAIL' if report.errors else 'warn' if report.warnings else 'ok  '}  {path}")
        for problem in report.errors:
            click.echo(f"      error: {problem.render()}")
        for problem in report.warnings:
            click.echo(f"      warning: {problem.render()}")
    click.echo(f"{len(files)} file(s): {len(files) - failed} valid, {failed} invalid, {warned} with warnings")
    if failed:
        raise click.exceptions.Exit(1)


@command.command("retry")
@repo_option
@click.argument("task_id")
def retry(repo: Path | None, config_dir: Path | None, task_id: str) -> None:
    """Run a finished or failed task again: back into inbox/ as new (works while the daemon runs)."""
    import time

    config = load(repo, config_dir)
    target = retry_task(BoardLayout(config.board_root), task_id, utc_iso(time.time()))
    click.echo(f"{task_id} is back in inbox/ ({target}); a running daemon starts it with fresh attempts, "
               "the last outcome is kept under `retries:` in the file")


@command.command("answer")
@repo_option
@click.argument("task_id")
@click.argument("text")
def answer(repo: Path | None, config_dir: Path | None, task_id: str, text: str) -> None:
    """Answer the question of a task that waits for one (status needs_input); the daemon resumes the agent."""
    import time

    from conveyor.dashboard.actions import ActionRefused
    from conveyor.dashboard.actions import answer as write_answer

    config = load(repo, config_dir)
    try:
        path = write_answer(config, task_id, text, time.time())
    except ActionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"answered {task_id} ({path}); the daemon resumes its agent with the answer")


def _config_if_any(repo: Path | None, config_dir: Path | None) -> Config | None:
    """The repository's configuration when there is one; a file checked elsewhere gets the form checks only."""
    try:
        return load(repo, config_dir)
    except ConveyorError:
        return None


def _verify_problems(path: Path, config: Config | None) -> list[Problem]:
    import os

    try:
        task = parse_task(path)
    except (TaskFileError, OSError):
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    return [Problem(str(path), problem, "verify runs without a shell, from the repository's virtualenv "
                    "(README, 'Before the commit')", field="verify", line=line_of(text, "verify"))
            for problem in verify_problems(task.get_list("verify"), config, os.environ, where="command")]
