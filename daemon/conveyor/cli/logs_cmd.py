"""`conveyor logs <id>`: the agent transcript of a task's attempts, rendered for people (`--raw`: as captured)."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.cli.common import load, repo_option
from conveyor.runner.transcript import render_lines


@click.command("logs")
@repo_option
@click.argument("task_id")
@click.option("--attempt", type=int, default=None, help="Show one attempt (default: all, oldest first).")
@click.option("--raw", is_flag=True, help="Print the captured output unchanged (the CLI's JSON records).")
def command(repo: Path | None, config_dir: Path | None, task_id: str, attempt: int | None, raw: bool) -> None:
    """Print what the agent runs of TASK_ID did: turns, tool calls, results, in the order they happened."""
    config = load(repo, config_dir)
    folder = config.logs_dir / task_id
    logs = sorted(folder.glob("attempt-*.log"), key=_order) if folder.is_dir() else []
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
        if raw:
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 16), b""):
                    click.echo(chunk.decode("utf-8", "replace"), nl=False)
        else:
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in render_lines(iter(handle)):
                    click.echo(line)
        click.echo("")


def _order(path: Path) -> tuple[int, int, str]:
    """Attempt, then when the file was written: a fix round (`-round-1`) comes after the run it fixes,
    which plain name order put first."""
    parts = path.name.split("-")
    attempt = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    try:
        written = path.stat().st_mtime_ns
    except OSError:
        written = 0
    return attempt, written, path.name
