"""`conveyor init`: board folders, configuration, a ROADMAP.md template and ignore entries."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.cli.common import load, remember_config_dir, remembered_config_dir, repo_option, resolve_repo
from conveyor.core.errors import ConveyorError
from conveyor.setup.first_run import first_run_lines
from conveyor.setup.init_repo import init_repository
from conveyor.workspace import git

WHAT = {"daemon.yaml": "daemon settings", "agents.yaml": "agent → CLI routing", "tools.yaml": "the agent CLIs",
        "models.yaml": "models and prices", "policies.yaml": "budgets and limits", ".gitkeep": "board folder"}


@click.command("init")
@repo_option
def command(repo: Path | None, config_dir: Path | None) -> None:
    """Write working defaults into the repository; safe to run again (nothing is overwritten)."""
    root = resolve_repo(repo)
    chosen = config_dir.resolve() if config_dir else remembered_config_dir(git.common_git_dir(root))
    report = init_repository(root, config_dir=chosen)
    for item in report.created:
        click.echo(f"created  {item}")
    for item in report.kept:
        click.echo(f"kept     {item}")
    added = [item for item in report.created if Path(item).name in WHAT and Path(item).name != ".gitkeep"]
    if added:
        folder = str(Path(added[0]).parent)
        click.echo(f"in {folder}/: " + ", ".join(f"{Path(i).name} ({WHAT[Path(i).name]})" for i in added))
    pointer = remember_config_dir(root, chosen)
    if pointer is not None:
        click.echo(f"remembered {chosen} as this repository's configuration folder (in {pointer}); "
                   "every command uses it without --config-dir")
    for note in report.notes:
        click.echo(f"note:    {note}")
    try:
        plan = first_run_lines(load(root, chosen))
    except ConveyorError as exc:
        plan = [f"cannot tell yet: the configuration has problems ({exc}); run `conveyor config validate`"]
    click.echo("\nThe first `conveyor run`:")
    for line in plan:
        click.echo(f"  - {line}")
    click.echo("\nNext: `conveyor doctor`, then `conveyor run`, then drop a task with `conveyor submit`.")

