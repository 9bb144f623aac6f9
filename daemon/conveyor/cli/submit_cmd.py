"""`conveyor submit`: write a valid task file into inbox/ from arguments."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import TextIO

import click

from conveyor.board.layout import BoardLayout
from conveyor.cli.common import load, repo_option
from conveyor.core import yamlio
from conveyor.core.errors import TaskFileError
from conveyor.core.task import PRIORITY_RANK, new_task_document, slugify, validate_document
from conveyor.core.timeutil import utc_iso


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
    yamlio.write_yaml(path, document)
    click.echo(str(path))


def _free_id(layout: BoardLayout, base: str) -> str:
    """`base`, or `base-2`, `base-3`... when a task with that id is already on the board."""

    def taken(candidate: str) -> bool:
        return any(next(folder.rglob(f"{candidate}.y*ml"), None) is not None
                   for folder in (layout.inbox, layout.assigned, layout.done) if folder.is_dir())

    candidate, counter = base, 2
    while taken(candidate):
        candidate, counter = f"{base}-{counter}", counter + 1
    return candidate


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "conveyor"
