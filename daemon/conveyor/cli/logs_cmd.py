"""`conveyor logs <id>`: the agent transcript of a task's attempts."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.cli.common import load, repo_option


@click.command("logs")
@repo_option
@click.argument("task_id")
@click.option("--attempt", type=int, default=None, help="Show one attempt (default: all, oldest first).")
def command(repo: Path | None, config_dir: Path | None, task_id: str, attempt: int | None) -> None:
    """Print the captured output of the agent runs of TASK_ID."""
    config = load(repo, config_dir)
    folder = config.logs_dir / task_id
    logs = sorted(folder.glob("attempt-*.log"), key=lambda p: (int(p.name.split("-")[1]), p.name)) \
        if folder.is_dir() else []
    if attempt is not None:
        logs = [p for p in logs if p.name.startswith(f"attempt-{attempt}-")]
    if not logs and config.daemon.privacy != "full":
        raise click.ClickException(
            f"no transcript for task {task_id!r}: agent transcripts are not kept in `privacy: metadata` mode "
            "(the default; each one is deleted when its run ends). Set `privacy: full` in config/daemon.yaml "
            "to keep them for later runs.")
    if not logs:
        raise click.ClickException(f"no logs for task {task_id!r} in {folder}")
    for path in logs:
        click.echo(f"==> {path} <==")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 16), b""):
                click.echo(chunk.decode("utf-8", "replace"), nl=False)
        click.echo("")
