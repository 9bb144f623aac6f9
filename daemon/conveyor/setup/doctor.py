"""`conveyor doctor`: is everything a daemon needs present? git, the agent CLIs, credentials, repo, config.

Credentials are reported by name only (which variable or file is present), never by value.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.config import Config
from conveyor.config.models import ToolSettings
from conveyor.core.errors import ConveyorError, GitError, ToolUnavailable
from conveyor.core.state_files import LOCK_FILE
from conveyor.daemon.lock import holder_pid
from conveyor.runner.env import build_env
from conveyor.runner.invoke import resolve_binary
from conveyor.runner.process import log_tail, run_command, succeeded
from conveyor.workspace import git

MIN_GIT = (2, 25)


@dataclass(frozen=True)
class Check:
    name: str
    status: str      # ok | warn | fail
    detail: str


def check_git() -> Check:
    try:
        version = git.version()
    except GitError as exc:
        return Check("git", "fail", f"{exc}; install git ≥ {MIN_GIT[0]}.{MIN_GIT[1]}")
    shown = ".".join(str(part) for part in version)
    if version[:2] < MIN_GIT:
        return Check("git", "fail", f"git {shown} is older than {MIN_GIT[0]}.{MIN_GIT[1]}; upgrade git")
    return Check("git", "ok", f"git {shown}")


def check_repository(config: Config) -> list[Check]:
    checks = [Check("repository", "ok", f"{config.repo} (git dir {config.git_dir})")]
    reason = git.base_not_ready(config.repo, config.daemon.base_branch, config.git_dir)
    checks.append(Check("base branch", "fail" if reason else "ok", reason or config.daemon.base_branch))
    board = config.board_root
    checks.append(Check("board", "ok" if (board / "inbox").is_dir() else "warn",
                        str(board) if (board / "inbox").is_dir() else f"{board}/inbox is missing; run `conveyor init`"))
    pid = holder_pid(config.state_dir / LOCK_FILE)
    checks.append(Check("daemon", "ok", f"running (pid {pid})" if pid else "not running"))
    return checks


def check_tool(name: str, tool: ToolSettings, env: Mapping[str, str]) -> list[Check]:
    try:
        binary = resolve_binary(name, tool, env)
    except ToolUnavailable as exc:
        return [Check(f"tool {name}", "warn", str(exc))]
    version = _version(binary, tool, env)
    checks = [Check(f"tool {name}", "ok" if version else "warn", f"{binary} — {version or 'version unknown'}")]
    present = [var for var in tool.credentials_env if env.get(var)]
    files = [f for f in tool.credentials_files if Path(os.path.expanduser(f)).exists()]
    if present or files:
        checks.append(Check(f"credentials {name}", "ok", "found: " + ", ".join(present + files)))
    elif tool.credentials_env or tool.credentials_files:
        wanted = ", ".join([*tool.credentials_env, *tool.credentials_files])
        checks.append(Check(f"credentials {name}", "warn", f"none found (looked for {wanted}); log in with the "
                                                          "CLI or set one of those variables"))
    return checks


def _version(binary: Path, tool: ToolSettings, env: Mapping[str, str]) -> str | None:
    """First line the CLI prints for its version flag, through the one subprocess wrapper."""
    with tempfile.TemporaryDirectory(prefix="conveyor-doctor-") as scratch:
        log_path = Path(scratch) / "version.log"
        try:
            result = run_command([str(binary), *tool.version_argv], cwd=Path(scratch), log_path=log_path,
                                 env=build_env(env, tool.env_allowlist, tool.env), timeout_s=20, check=False)
        except ConveyorError:
            return None
        lines = [line.removeprefix("[stderr] ") for line in log_tail(log_path).splitlines() if line.strip()]
    return lines[0][:120] if succeeded(result) and lines else None
