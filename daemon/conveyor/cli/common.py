"""What every subcommand shares: `--repo`, config loading, and output helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from conveyor.config import Config, load_config
from conveyor.workspace import git

F = TypeVar("F", bound=Callable[..., Any])


def repo_option(func: F) -> F:
    """`--repo PATH` (default: the git root of the current directory) and `--config-dir`."""
    func = click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder of the YAML configuration (default: <repo>/config).")(func)
    return click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="The git repository to serve (default: the git root of the current directory).")(func)


def resolve_repo(repo: Path | None) -> Path:
    return git.repo_root((repo or Path.cwd()).resolve())


def load(repo: Path | None, config_dir: Path | None) -> Config:
    root = resolve_repo(repo)
    return load_config(root, git.common_git_dir(root), config_dir.resolve() if config_dir else None)


def console() -> Console:
    width = int(os.environ.get("COLUMNS", "0") or 0) or None
    return Console(width=width, soft_wrap=False, highlight=False)
