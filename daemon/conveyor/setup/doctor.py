"""`conveyor doctor`: is everything a daemon needs present? git, the agent CLIs, credentials, repo, config.

Credentials are reported by name only (which variable or file is present), never by value.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.checks.verify_setup import verify_problems, where_verify_runs
from conveyor.config import Config
from conveyor.config.models import ToolSettings
from conveyor.core.errors import ConveyorError, GitError, ToolUnavailable
from conveyor.core.state_files import LOCK_FILE
from conveyor.daemon.lock import holder_pid
from conveyor.publish.flow import destination, why_no_pull_request
from conveyor.runner.env import build_env
from conveyor.runner.invoke import resolve_binary
from conveyor.runner.process import log_tail, run_command, succeeded
from conveyor.runner.sandbox import SandboxContext, SandboxUnavailable, plan
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


def routed_tools(config: Config) -> list[str]:
    """Tools some agent routes to (first choice or fallback): the ones a task can actually run on."""
    names: list[str] = []
    for agent in config.agents.values():
        for entry in (agent.tool, *agent.fallback):
            tool = entry.split(":", 1)[0]
            if tool in config.tools and tool not in names:
                names.append(tool)
    return names


def check_routing(config: Config, env: Mapping[str, str]) -> Check:
    """Fails when none of the routed tools can start: every task would fail (or wait) with nothing to run it."""
    routed = routed_tools(config)
    runnable = []
    for name in routed:
        try:
            resolve_binary(name, config.tools[name], env)
        except ToolUnavailable:
            continue
        runnable.append(name)
    if runnable:
        return Check("agents can run", "ok", f"on {', '.join(runnable)}")
    return Check("agents can run", "fail",
                 f"none of the tools agents.yaml routes to ({', '.join(routed) or 'none'}) is installed, so no "
                 "task can run; install one (Claude Code: `npm install -g @anthropic-ai/claude-code`; Codex: "
                 "`npm install -g @openai/codex`) or point tools.yaml `binary:` at it")


def check_publishing(config: Config, env: Mapping[str, str]) -> list[Check]:
    """Remote, GitHub repository and token: what publishing needs, asked now rather than after an agent ran."""
    settings = config.daemon
    if not settings.remote.name:
        return [Check("remote", "ok", "none (remote.name: null): each result stays a local branch conveyor/<id>")]
    try:
        where = destination(config.repo, settings)
    except GitError as exc:
        return [Check("remote", "warn", f"cannot read the remote ({exc})")]
    if where.remote is None:
        fix = (f"add it (`git remote add {settings.remote.name} URL`), or set `remote: {{name: null}}` in "
               "daemon.yaml to keep results as local branches") if "no remote" in (where.why_local or "") else \
            "set remote.push: true in daemon.yaml to push"
        return [Check("remote", "warn", f"{where.why_local}: results stay local branches; {fix}")]
    url = git.remote_url(config.repo, where.remote) or "?"
    checks = [Check("remote", "ok", f"{where.remote} ({_without_credentials(url)})")]
    missing = why_no_pull_request(settings, env, where)
    if missing:
        checks.append(Check("pull requests", "ok" if not settings.pull_requests.enabled else "warn",
                            missing.removeprefix("no pull request opened").lstrip(": ") or missing))
    else:
        checks.append(Check("pull requests", "ok", f"{where.github_repo} at {settings.pull_requests.api_url}, "
                            f"token from ${settings.pull_requests.token_env} (present; not tried online)"))
    return checks


def _without_credentials(url: str) -> str:
    return re.sub(r"(://)[^/@]*@", r"\1***@", url)


def check_verify(config: Config, env: Mapping[str, str]) -> Check:
    """Whether daemon.yaml's verify commands can start where they run; says where that is."""
    problems = verify_problems(config.daemon.verify, config, env, where="daemon.yaml verify")
    if problems:
        return Check("verify", "fail", "; ".join(problems))
    count = len(config.daemon.verify)
    return Check("verify", "ok", f"{count} command(s) from daemon.yaml, and each task's own; they run "
                                 f"{where_verify_runs(config)}")


def check_tool(name: str, tool: ToolSettings, env: Mapping[str, str]) -> list[Check]:
    try:
        binary = resolve_binary(name, tool, env)
    except ToolUnavailable as exc:
        return [Check(f"tool {name}", "warn", str(exc))]
    if tool.version_argv is None:
        checks = [Check(f"tool {name}", "ok", f"{binary} — version not asked (no version_argv in tools.yaml)")]
    else:
        version = _version(binary, tool.version_argv, tool, env)
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


def check_sandbox(name: str, tool: ToolSettings, env: Mapping[str, str], ctx: SandboxContext) -> Check:
    """What contains this tool's agent here: bubblewrap, or nothing and why (and what that leaves open)."""
    try:
        decided = plan(name, tool, env, ctx)
    except SandboxUnavailable as exc:
        return Check(f"sandbox {name}", "fail", str(exc))
    if decided.bwrap is not None:
        return Check(f"sandbox {name}", "ok", f"{decided.bwrap}: {decided.reason.removeprefix('bubblewrap: ')}")
    return Check(f"sandbox {name}", "warn", decided.reason)


VERSION_LIKE = re.compile(r"\d+\.\d+")


def _version(binary: Path, argv: list[str], tool: ToolSettings, env: Mapping[str, str]) -> str | None:
    """The line the CLI prints for its version flag that holds a version number (a CLI may print warnings
    first), through the one subprocess wrapper."""
    with tempfile.TemporaryDirectory(prefix="conveyor-doctor-") as scratch:
        log_path = Path(scratch) / "version.log"
        try:
            result = run_command([str(binary), *argv], cwd=Path(scratch), log_path=log_path,
                                 env=build_env(env, tool.env_allowlist, tool.env), timeout_s=20, check=False)
        except ConveyorError:
            return None
        lines = [line for line in log_tail(log_path).splitlines() if line.strip()]
    if not succeeded(result) or not lines:
        return None
    stdout = [line for line in lines if not line.startswith("[stderr] ")]
    chosen = next((line for line in stdout if VERSION_LIKE.search(line)),
                  next((line for line in lines if VERSION_LIKE.search(line)), lines[0]))
    return chosen.removeprefix("[stderr] ").strip()[:120]
