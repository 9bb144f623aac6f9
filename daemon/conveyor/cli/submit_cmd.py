"""`conveyor submit`: write a valid task file into inbox/ from arguments."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import TextIO

import click

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.checks.verify_setup import verify_problems
from conveyor.cli.common import load, repo_option
from conveyor.config import Config
from conveyor.core import yamlio
from conveyor.core.errors import TaskFileError
from conveyor.core.state_files import LOCK_FILE
from conveyor.core.task import PRIORITY_RANK, new_task_document, slugify, validate_document
from conveyor.core.timeutil import utc_iso
from conveyor.daemon.lock import holder_pid


@click.command("submit")
@repo_option
@click.option("--agent", "-a", required=True, help="Agent name, e.g. backend-dev (agents.yaml routes it).")
@click.option("--title", "-t", required=True, help="One line saying what to do.")
@click.option("--description", "-d", default="", help="Instructions for the agent.")
@click.option("--description-file", type=click.File("r", encoding="utf-8"), default=None,
              help="Read the instructions from a file ('-' for stdin).")
@click.option("--artefact", "artefacts", multiple=True, help="A file to create or change (repeatable).")
@click.option("--priority", type=click.Choice(list(PRIORITY_RANK)), default="normal")
@click.option("--depends-on", "dependencies", multiple=True, help="Id of a task that must be done first.")
@click.option("--complexity", type=click.Choice(["low", "medium", "high"]), default=None)
@click.option("--tool", default=None, help="Pin a tool from tools.yaml.")
@click.option("--model", default=None, help="Pin a model.")
@click.option("--verify", "verify", multiple=True, help="A command that must pass before committing.")
@click.option("--id", "task_id", default=None, help="Task id (default: YYYY-MM-DDTHHMM-<agent>-<slug>).")
def command(repo: Path | None, config_dir: Path | None, agent: str, title: str, description: str,
            description_file: TextIO | None, artefacts: tuple[str, ...], priority: str,
            dependencies: tuple[str, ...], complexity: str | None, tool: str | None, model: str | None,
            verify: tuple[str, ...], task_id: str | None) -> None:
    """Create a task in inbox/ and print its path."""
    config = load(repo, config_dir)
    layout = BoardLayout(config.board_root)
    layout.inbox.mkdir(parents=True, exist_ok=True)
    if description_file is not None:
        description = description_file.read()
    now = time.time()
    task_id = task_id or _free_id(layout, f"{time.strftime('%Y-%m-%dT%H%M', time.gmtime(now))}-{agent}-"
                                          f"{slugify(title)}")
    extra = {key: value for key, value in (("complexity", complexity), ("tool", tool), ("model", model),
                                           ("verify", list(verify) or None)) if value}
    document = new_task_document(task_id=task_id, agent=agent, title=title, description=description,
                                 artefacts=list(artefacts), priority=priority, dependencies=list(dependencies),
                                 created_at=utc_iso(now), created_by=_user(), extra=extra)
    path = layout.inbox / f"{task_id}.yaml"
    try:
        validate_document(path, document, yamlio.dumps(document))
    except TaskFileError as exc:
        raise click.BadParameter("; ".join(p.message for p in exc.problems)) from exc
    if path.exists():
        raise click.BadParameter(f"{path} already exists; choose another --id")
    _check_against_board(config, layout, tool, dependencies, verify)
    yamlio.write_yaml(path, document)
    click.echo(str(path))
    if holder_pid(config.state_dir / LOCK_FILE) is None:
        click.echo("note: no daemon is running for this repository; start one with `conveyor run` (or "
                   "`conveyor service install --start`) and it picks this task up", err=True)


def _check_against_board(config: Config, layout: BoardLayout, tool: str | None, dependencies: tuple[str, ...],
                         verify: tuple[str, ...]) -> None:
    """What would only fail later, refused now: an unknown tool, a dependency no task has, a verify that
    cannot start."""
    import difflib
    import os

    if tool is not None and tool not in config.tools:
        close = difflib.get_close_matches(tool, list(config.tools), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise click.BadParameter(f"unknown tool {tool!r}; {hint}known tools: {', '.join(sorted(config.tools))}",
                                 param_hint="--tool")
    for dependency in dependencies:
        if board.find_task(layout, dependency) is None:
            raise click.BadParameter(f"no task {dependency!r} on the board, so this task would wait for it for "
                                     "ever; give the id of a task in inbox/, assigned/ or done/ "
                                     "(`conveyor status` lists them)", param_hint="--depends-on")
    problems = [*verify_problems(config.daemon.verify, config, os.environ, where="daemon.yaml verify"),
                *verify_problems(list(verify), config, os.environ, where="--verify")]
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="--verify")


def _free_id(layout: BoardLayout, base: str) -> str:
    """`base`, or `base-2`, `base-3`... when a task with that id is already on the board (archive/ too: the
    daemon would reject a reused id), asked by name (a few `stat` calls), never by walking done/."""
    candidate, counter = base, 2
    while board.find_task(layout, candidate) is not None:
        candidate, counter = f"{base}-{counter}", counter + 1
    return candidate


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "conveyor"
