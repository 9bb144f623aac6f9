"""Fixtures for driving the real `claude` and `codex` CLIs against the scripted fake model server.

The pinned CLIs are installed once per machine into the real cache folder. Its path is captured here, at
import time, because the autouse safety net points HOME and XDG_CACHE_HOME at a temporary folder for
every test (a cache there would mean a fresh 330 MB download, 760 MB on disk, per test).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.config import Config, load_config
from conveyor.setup.init_repo import init_repository
from conveyor.workspace import git as conveyor_git
from tests.conftest import git
from tests.support import agent_clis
from tests.support.model_server import ModelServer

REAL_CLI_CACHE = agent_clis.cache_root(os.environ)
REAL_PATH = os.environ.get("PATH", "/usr/bin:/bin")


@dataclass(frozen=True)
class CliRun:
    """What one CLI run printed, how it ended, and whether we had to kill it."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    killed: bool

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip().startswith("{")]


def run_cli(argv: list[str], cwd: Path, env: Mapping[str, str], timeout: float) -> CliRun:
    """Run a CLI as the daemon would: own process group, stdin from /dev/null, whole group killed on timeout."""
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        killed = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        killed = True
    return CliRun(None if killed else process.returncode, stdout, stderr, time.monotonic() - started, killed)


def base_env(server: ModelServer) -> dict[str, str]:
    """PATH and LANG, plus a tripwire: any attempt to reach another host goes to the fake server's CONNECT.

    Both CLIs honour the proxy variables, so a CONNECT in `server.requests` means the CLI tried to leave
    the machine (update checks, telemetry, plugin sync) and the configuration must switch that off.
    """
    return {"PATH": REAL_PATH, "LANG": "C.UTF-8", "HTTPS_PROXY": server.url, "HTTP_PROXY": server.url,
            "https_proxy": server.url, "http_proxy": server.url, "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost"}


def outbound_attempts(server: ModelServer) -> list[str]:
    return [request.path for request in server.requests if request.method == "CONNECT"]


@pytest.fixture(scope="session")
def agent_cli_paths() -> dict[str, Path]:
    """Executable of each pinned CLI (tool name → path), installed once per machine into the real cache."""
    return {tool: agent_clis.install(tool, REAL_CLI_CACHE) for tool in agent_clis.PINNED}


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture
def agent_home(tmp_path: Path) -> Path:
    """A private, empty HOME for the CLI (it writes ~/.claude.json, transcripts, codex state)."""
    home = tmp_path / "agent-home"
    home.mkdir()
    return home


@pytest.fixture
def claude_env(model_server: ModelServer, agent_home: Path) -> dict[str, str]:
    """The complete environment for `claude -p` against the fake server (one retry)."""
    return {**base_env(model_server), **model_server.claude_env(agent_home)}


@pytest.fixture
def codex_home(model_server: ModelServer, agent_home: Path) -> Path:
    """A `$CODEX_HOME` whose config.toml points codex at the fake server with bounded retries."""
    home = agent_home / ".codex"
    model_server.write_codex_config(home)
    return home


@pytest.fixture
def codex_env(model_server: ModelServer, codex_home: Path, agent_home: Path, tmp_path: Path) -> dict[str, str]:
    """The complete environment for `codex exec` against the fake server.

    TMPDIR: where bubblewrap is installed, codex's own sandbox runs it through a helper it links under
    CODEX_HOME, and refuses to when CODEX_HOME lies in the temporary folder (measured on 0.169.0:
    "Refusing to create helper binaries under temporary dir"); a test's home is under /tmp, so the
    temporary folder is moved beside it. The daemon's sandbox needs none of this (its CODEX_HOME is
    /run/conveyor/home/.codex inside), and the daemon's allowlist for codex drops TMPDIR anyway."""
    scratch = tmp_path / "codex-tmp"
    scratch.mkdir(exist_ok=True)
    return {**base_env(model_server), **model_server.codex_env(codex_home, agent_home), "TMPDIR": str(scratch)}


def claude_board(repo: Path, claude: Path, task: dict[str, Any], **daemon: Any) -> Config:
    """`conveyor init` done in `repo`, the real claude CLI as the one tool, `task` dropped into inbox/ (renamed
    in, as authors should), and the configuration to hand the daemon. `daemon` adds daemon.yaml keys."""
    init_repository(repo)
    config = repo / "config"
    (config / "daemon.yaml").write_text(yaml.safe_dump({
        "rescan_interval_s": 0.5, "idle_timeout_s": 60, "task_timeout_s": 120, "attempts": 1,
        "remote": {"name": None}, "roadmap": {"enabled": False},
        # claude refuses to edit under a `.git/` folder ("a sensitive file"), where worktrees go by default
        "worktrees_dir": str(repo.parent / "worktrees"), **daemon}))
    (config / "agents.yaml").write_text(yaml.safe_dump({"agents": {"default": {"tool": "claude-code",
                                                                               "max_turns": 8}}}))
    (config / "tools.yaml").write_text(yaml.safe_dump({"tools": {"claude-code": {"binary": str(claude)}}}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "conveyor init")
    document = {"id": task["id"], "agent": "backend-dev", "status": "new", **task}
    inbox = repo / "work" / "collaboration" / "inbox"
    (inbox / f".{task['id']}.tmp").write_text(yaml.safe_dump(document, sort_keys=False))
    (inbox / f".{task['id']}.tmp").rename(inbox / f"{task['id']}.yaml")
    return load_config(repo, conveyor_git.common_git_dir(repo))


def invocation_rows(repo: Path, task_id: str) -> list[dict[str, Any]]:
    """The task's telemetry rows, oldest first."""
    with sqlite3.connect(repo / ".git" / "conveyor" / "telemetry.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM invocations WHERE task_id=? ORDER BY id", (task_id,))]
