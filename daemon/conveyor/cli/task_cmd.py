"""`conveyor task validate PATH...`: check task files against the board format."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.board.validate import collect, validate_file


@click.group("task")
def command() -> None:
    """Work with task files."""


@command.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="Only print files with problems.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(paths: tuple[Path, ...], quiet: bool, strict: bool) -> None:
    """Validate task files (or every task file under the given folders); exit 1 if any is invalid."""
    files = collect(list(paths))
    failed = warned = 0
    for path in files:
        report = validate_file(path)
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
