"""`conveyor roadmap`: ROADMAP.md as the daemon reads it: every item's state, what starts next, and why
the rest waits. Read-only; works on any file (`--file`), inside a repository or not."""

from __future__ import annotations

import json
from pathlib import Path

import click

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.cli.common import load, repo_option
from conveyor.config import Config
from conveyor.config.models import RoadmapSettings
from conveyor.core.errors import ConveyorError
from conveyor.roadmap.file import read_roadmap
from conveyor.roadmap.select import Selection, Waiting, count_in_flight, explain, next_runnable, to_json
from conveyor.roadmap.sync import roadmap_task_id


@click.command("roadmap")
@repo_option
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The roadmap to read (default: roadmap.file of config/daemon.yaml, i.e. ROADMAP.md).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def command(repo: Path | None, config_dir: Path | None, file: Path | None, fmt: str) -> None:
    """Show the roadmap's items with their state, what runs next, and why the rest waits."""
    config = _config(repo, config_dir, required=file is None)
    settings = config.daemon.roadmap if config is not None else RoadmapSettings()
    path = file if file is not None else _default_path(config)
    read = read_roadmap(path)
    if read is None:
        raise ConveyorError(f"{path} does not exist; write one (`conveyor init` makes a template) or pass --file")
    roadmap = read[1]
    selection = next_runnable(roadmap, in_flight_limit=settings.max_in_flight, in_flight=count_in_flight(roadmap))
    selection = _without_finished(config, selection)
    if fmt == "json":
        click.echo(json.dumps(to_json(roadmap, selection), indent=2, ensure_ascii=False))
        return
    click.echo(explain(roadmap, selection), nl=False)
    if config is not None and file is None and not settings.enabled:
        click.echo(f"Note: roadmap-driven work is off (roadmap.enabled: false in daemon.yaml): the daemon starts "
                   f"none of these. Turn it on to let it start {', '.join(i.label for i in selection.start) or 'them'}"
                   " (each item is an agent run: it spends money).")


def _config(repo: Path | None, config_dir: Path | None, *, required: bool) -> Config | None:
    """The repository's configuration; with --file outside a repository, the defaults do."""
    try:
        return load(repo, config_dir)
    except ConveyorError:
        if required:
            raise
        return None


def _default_path(config: Config | None) -> Path:
    assert config is not None, "without --file the configuration is required"
    return config.repo / config.daemon.roadmap.file


def _without_finished(config: Config | None, selection: Selection) -> Selection:
    """Items that would start but whose task already ran wait instead, saying why: the daemon leaves them
    alone, so listing them under "Starts next" contradicted what it does."""
    if config is None:
        return selection
    layout = BoardLayout(config.board_root)
    start, waiting = [], list(selection.waiting)
    for item in selection.start:
        task_id = roadmap_task_id(item)
        found = board.find_task(layout, task_id)
        if found is not None and not found.is_relative_to(layout.inbox) and not found.is_relative_to(layout.assigned):
            waiting.append(Waiting(item, f"its task {task_id} already ran ({found}); `conveyor task retry "
                                         f"{task_id}` runs it again, or mark the item Completed"))
        else:
            start.append(item)
    return Selection(start=tuple(start), waiting=tuple(waiting))
