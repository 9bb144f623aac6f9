"""What every subcommand shares: `--repo`, config loading, and output helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from conveyor.config import board_settings
from conveyor.config.board_settings import BoardSettings
from conveyor.workspace import git

if TYPE_CHECKING:   # imported where used: `conveyor status` and `--help` need neither pydantic nor rich
    from rich.console import Console

    from conveyor.config import Config

F = TypeVar("F", bound=Callable[..., Any])


def repo_option(func: F) -> F:
    """`--repo PATH` (default: the git root of the current directory) and `--config-dir`."""
    func = click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder of the YAML configuration (default: <repo>/config).")(func)
    return click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="The git repository to serve (default: the git root of the current directory).")(func)


def resolve_repo(repo: Path | None) -> Path:
    return git.repo_root((repo or Path.cwd()).resolve())


CONFIG_POINTER = "config-dir"   # in <git common dir>/conveyor/: the folder `init --config-dir` chose


def load(repo: Path | None, config_dir: Path | None) -> Config:
    """The repository's configuration: from `--config-dir`, else the folder `init` remembered, else config/."""
    root = resolve_repo(repo)
    git_dir = git.common_git_dir(root)
    return _load_and_remember(root, git_dir, _chosen_config_dir(git_dir, config_dir))


def load_settings(repo: Path | None, config_dir: Path | None) -> BoardSettings:
    """What read-only commands need of the configuration: remembered if the configuration is unchanged since
    the loader last validated it (config.board_settings), else from the full loader, which raises as `load`."""
    root = resolve_repo(repo)
    git_dir = git.common_git_dir(root)
    chosen = _chosen_config_dir(git_dir, config_dir)
    print_ = board_settings.fingerprint(root, git_dir, chosen or root / "config", os.environ)
    settings = board_settings.remembered(git_dir, print_) if print_ else None
    return settings or BoardSettings.of(_load_and_remember(root, git_dir, chosen, print_))


def _chosen_config_dir(git_dir: Path, config_dir: Path | None) -> Path | None:
    return config_dir.resolve() if config_dir else remembered_config_dir(git_dir)


def _load_and_remember(root: Path, git_dir: Path, chosen: Path | None, before: str | None = None) -> Config:
    """The full loader; a valid configuration's settings are remembered for the next read-only command,
    unless a file changed while the loader read it (the fingerprints before and after differ)."""
    from conveyor.config import load_config

    folder = chosen or root / "config"
    before = before or board_settings.fingerprint(root, git_dir, folder, os.environ)
    config = load_config(root, git_dir, chosen)
    if before and before == board_settings.fingerprint(root, git_dir, folder, os.environ) \
            and board_settings.remembered(git_dir, before) is None:
        board_settings.remember(git_dir, before, BoardSettings.of(config))
    return config


def remembered_config_dir(git_dir: Path) -> Path | None:
    """The configuration folder `conveyor init --config-dir` recorded for this repository, if any."""
    try:
        text = (git_dir / "conveyor" / CONFIG_POINTER).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text else None


def remember_config_dir(root: Path, config_dir: Path | None) -> Path | None:
    """Record a non-default configuration folder so every later command (and the service) finds it."""
    pointer = git.common_git_dir(root) / "conveyor" / CONFIG_POINTER
    if config_dir is None or config_dir.resolve() == (root / "config").resolve():
        pointer.unlink(missing_ok=True)
        return None
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(f"{config_dir.resolve()}\n", encoding="utf-8")
    return pointer


def console() -> Console:
    from rich.console import Console

    width = int(os.environ.get("COLUMNS", "0") or 0) or None
    return Console(width=width, soft_wrap=False, highlight=False)
