"""`conveyor service render|install|uninstall|status`: run this repository's daemon as a user service.

The unit (or plist) is rendered for the loaded configuration: its state, worktrees and telemetry folders
become the writable paths, and PATH holds the folders of the agent CLIs that agents.yaml routes to, found
through each tool's `binary` in tools.yaml (a service does not inherit the login shell's PATH).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.cli.common import load, repo_option
from conveyor.config import Config
from conveyor.service.install import install as do_install
from conveyor.service.install import rendered
from conveyor.service.install import status as do_status
from conveyor.service.install import uninstall as do_uninstall
from conveyor.service.render import ServiceParams, default_params

F = TypeVar("F", bound=Callable[..., Any])


def service_params(config: Config, env: dict[str, str] | os._Environ[str]) -> ServiceParams:
    """The service definition's parameters for this repository, user and configuration."""
    extra = [config.worktrees_dir, config.telemetry_db.parent, config.logs_dir]
    params = default_params(config.repo, env, state_dir=config.state_dir, extra_rw_paths=extra,
                            drain_grace_s=math.ceil(config.daemon.drain_grace_s),
                            agent_binaries=agent_binaries(config), config_dir=config.config_dir)
    return dataclasses.replace(params, credentials=credentials(config, env))


def credentials(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """The credential variables set now that the service needs: the routed tools' and the PR token."""
    names: list[str] = []
    for agent in config.agents.values():
        for entry in (agent.tool, *agent.fallback):
            tool = config.tools.get(entry.split(":", 1)[0])
            names.extend(tool.credentials_env if tool is not None else [])
    if config.daemon.remote.name and config.daemon.pull_requests.enabled:
        names.append(config.daemon.pull_requests.token_env)
    return {name: env[name] for name in dict.fromkeys(names) if env.get(name)}


def agent_binaries(config: Config) -> list[str]:
    """The `binary` of every tool an agent routes to (its tool and fallbacks), in first-use order."""
    names: list[str] = []
    for agent in config.agents.values():
        names.extend([agent.tool, *(entry.split(":", 1)[0] for entry in agent.fallback)])
    binaries = [config.tools[name].binary for name in dict.fromkeys(names) if name in config.tools]
    return list(dict.fromkeys(str(Path(b).expanduser()) if b.startswith("~") else b for b in binaries))


def default_unit_dir(launchd: bool, env: dict[str, str] | os._Environ[str]) -> Path:
    home = Path(env.get("HOME") or Path.home())
    if launchd:
        return home / "Library" / "LaunchAgents"
    config_home = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config_home) / "systemd" / "user"


def _flavour_options(func: F) -> F:
    func = click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder for the unit (default: ~/.config/systemd/user, or ~/Library/LaunchAgents "
                             "with --launchd).")(func)
    return click.option("--launchd/--systemd", "launchd", default=sys.platform == "darwin",
                        help="A launchd agent (default on macOS) or a systemd user unit (default elsewhere).")(func)


def _manager_options(func: F) -> F:
    func = click.option("--manager-command", default=None, hidden=True,
                        help="Command line standing in for `systemctl --user` / `launchctl` (tests).")(func)
    return click.option("--no-manager", is_flag=True,
                        help="Only write or remove the file; do not call systemctl or launchctl.")(func)


def _manager(no_manager: bool, manager_command: str | None, launchd: bool) -> tuple[str, ...] | None:
    if no_manager:
        return None
    if manager_command:
        return tuple(shlex.split(manager_command))
    return ("launchctl",) if launchd else ("systemctl", "--user")


def _setup(repo: Path | None, config_dir: Path | None, launchd: bool,
           unit_dir: Path | None) -> tuple[ServiceParams, Path]:
    config = load(repo, config_dir)
    return service_params(config, os.environ), (unit_dir or default_unit_dir(launchd, os.environ))


@click.group("service")
def command() -> None:
    """Run this repository's daemon as a user service (systemd, or launchd on macOS)."""


@command.command("render")
@repo_option
@_flavour_options
def render_command(repo: Path | None, config_dir: Path | None, launchd: bool, unit_dir: Path | None) -> None:
    """Print the unit (or plist) for this repository to stdout."""
    params, _ = _setup(repo, config_dir, launchd, unit_dir)
    click.echo(rendered(params, launchd=launchd), nl=False)


@command.command("install")
@repo_option
@_flavour_options
@_manager_options
@click.option("--start", is_flag=True, help="Start the service now (otherwise it starts at the next login).")
def install_command(repo: Path | None, config_dir: Path | None, launchd: bool, unit_dir: Path | None,
                    no_manager: bool, manager_command: str | None, start: bool) -> None:
    """Write the unit for this repository and user, enable it, and start it with --start."""
    params, directory = _setup(repo, config_dir, launchd, unit_dir)
    report = do_install(params, directory, start=start, launchd=launchd,
                        systemctl=_manager(no_manager, manager_command, launchd))
    click.echo(report.text())
    if report.activated is False:
        raise click.exceptions.Exit(1)


@command.command("uninstall")
@repo_option
@_flavour_options
@_manager_options
def uninstall_command(repo: Path | None, config_dir: Path | None, launchd: bool, unit_dir: Path | None,
                      no_manager: bool, manager_command: str | None) -> None:
    """Stop and disable the service and remove its unit; the state folder (telemetry, logs) stays."""
    params, directory = _setup(repo, config_dir, launchd, unit_dir)
    report = do_uninstall(params, directory, launchd=launchd,
                          systemctl=_manager(no_manager, manager_command, launchd))
    click.echo(report.text())
    if report.activated is False:
        raise click.exceptions.Exit(1)


@command.command("status")
@repo_option
@_flavour_options
@_manager_options
def status_command(repo: Path | None, config_dir: Path | None, launchd: bool, unit_dir: Path | None,
                   no_manager: bool, manager_command: str | None) -> None:
    """Whether the unit is installed and current, and what the service manager says about it."""
    params, directory = _setup(repo, config_dir, launchd, unit_dir)
    report = do_status(params, directory, launchd=launchd, systemctl=_manager(no_manager, manager_command, launchd))
    click.echo(report.text())
    if not report.installed:
        raise click.exceptions.Exit(3)


__all__ = ["agent_binaries", "command", "default_unit_dir", "service_params"]
