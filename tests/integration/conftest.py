"""Integration fixtures: a real repository after `conveyor init`, a fake agent CLI defined in tools.yaml,
and a helper that runs the daemon once (`Daemon(config, once=True).run()`) and reports what happened.

The fake agent (`tests/support/fake_agent.py`) is a real executable the daemon finds through tools.yaml
exactly as it would find `claude`; what it does is written into the task's description as `FAKE ...` lines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from conveyor.board.history_sync import HistorySync
from conveyor.config import Config, load_config
from conveyor.core.timeutil import Clock
from conveyor.daemon.loop import Daemon
from conveyor.setup.init_repo import init_repository
from tests.conftest import git
from tests.integration.dashboard_process import DashboardProcess
from tests.support.agent_script import AgentRecords, install_fake_agent, tool_entry
from tests.support.fake_github import FakeGitHub
from tests.support.waiting import wait_for

DAEMON_CORE = """\
base_branch: main
max_parallel: 2
rescan_interval_s: 30
task_timeout_s: 60
idle_timeout_s: 60
kill_grace_s: 0.5
attempts: 1
drain_grace_s: 10
"""
LOCAL_ONLY = "remote: {name: null, push: false}\npull_requests: {enabled: false}\n"
DAEMON_YAML = DAEMON_CORE + LOCAL_ONLY + "roadmap: {enabled: false}\n"

AGENTS_YAML = """\
agents:
  default:
    tool: fake
  json-agent:
    tool: fake-claude
    commit_type: fix
"""


def tools_yaml(agent_bin: Path, out_dir: Path, sandbox: str = "auto") -> str:
    """Two tools running the fake agent (plain text, and claude's JSON result) and one whose CLI is missing."""
    fake = tool_entry(agent_bin, out_dir, tool="fake", sandbox=sandbox,
                      version_argv=["--version"])     # doctor asks a tool its version only when told how
    claude = tool_entry(agent_bin, out_dir, tool="fake-claude", output="claude-json", sandbox=sandbox)
    claude["argv"] = [*claude["argv"][:-1], ["--model", "{model}"], "{prompt}"]
    ghost = {"binary": "conveyor-test-no-such-agent-cli", "argv": ["{prompt}"]}
    return yaml.safe_dump({"tools": {"fake": fake, "fake-claude": claude, "ghost": ghost}}, sort_keys=False)


@dataclass
class DaemonRun:
    """What one `--once` run did: its exit code and the structured log events it emitted."""

    code: int
    logs: list[dict[str, Any]]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if entry.get("event") == name]


@dataclass
class Repo:
    """A repository after `conveyor init`, with the fake agent configured, and ways to look at its board."""

    path: Path
    out: Path                      # where the fake agent records its prompts and what it saw
    agent_bin: Path                # the fake agent CLI (tests/support/fake_agent.py) installed for this repo
    extra_env: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------- paths
    @property
    def board(self) -> Path:
        return self.path / "work" / "collaboration"

    @property
    def inbox(self) -> Path:
        return self.board / "inbox"

    @property
    def rejected(self) -> Path:
        return self.board / "_rejected"

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    @property
    def telemetry_db(self) -> Path:
        return self.git_dir / "conveyor" / "telemetry.db"

    @property
    def worktrees_dir(self) -> Path:
        return self.config().worktrees_dir

    def config(self) -> Config:
        return load_config(self.path, self.git_dir)

    def write_config(self, name: str, text: str) -> None:
        (self.path / "config" / name).write_text(text, encoding="utf-8")

    # ---------------------------------------------------------------- tasks
    def task_text(self, task_id: str, agent: str = "backend-dev", description: str = "", **extra: Any) -> str:
        document: dict[str, Any] = {"id": task_id, "agent": agent, "status": "new", "title": f"Title of {task_id}",
                                    "description": description, "artefacts": [], "priority": "normal"}
        document.update(extra)
        return yaml.safe_dump(document, sort_keys=False)

    def drop(self, name: str, text: str | bytes, *, settled: bool = True) -> Path:
        """Write a file elsewhere and rename it into inbox/ (as authors should); backdate it when `settled`."""
        staging = self.path.parent / "staging"
        staging.mkdir(exist_ok=True)
        temp = staging / name
        if isinstance(text, bytes):
            temp.write_bytes(text)
        else:
            temp.write_text(text, encoding="utf-8")
        if settled:   # before the rename: a running daemon may claim the file the moment it arrives
            old = temp.stat().st_mtime - 60
            os.utime(temp, (old, old))
        target = self.inbox / name
        os.replace(temp, target)
        return target

    def submit(self, task_id: str, agent: str = "backend-dev", description: str = "", **extra: Any) -> Path:
        return self.drop(f"{task_id}.yaml", self.task_text(task_id, agent, description, **extra))

    def done_path(self, task_id: str, agent: str = "backend-dev") -> Path:
        return self.board / "done" / agent / f"{task_id}.yaml"

    def done_doc(self, task_id: str, agent: str = "backend-dev") -> dict[str, Any]:
        document = yaml.safe_load(self.done_path(task_id, agent).read_text(encoding="utf-8"))
        assert isinstance(document, dict)
        return document

    def rejected_report(self, name: str) -> dict[str, Any]:
        report = yaml.safe_load((self.rejected / f"{name}.error.yaml").read_text(encoding="utf-8"))
        assert isinstance(report, dict)
        return report

    # ---------------------------------------------------------------- git and telemetry
    def git(self, *args: str) -> str:
        return git(self.path, *args)

    def branches(self) -> list[str]:
        out = self.git("for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return [line for line in out.splitlines() if line]

    def worktrees(self) -> list[str]:
        out = self.git("worktree", "list", "--porcelain")
        return [line.removeprefix("worktree ") for line in out.splitlines() if line.startswith("worktree ")]

    def rows(self, task_id: str | None = None) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.telemetry_db)
        conn.row_factory = sqlite3.Row
        try:
            sql = "SELECT * FROM invocations" + (" WHERE task_id=?" if task_id else "") + " ORDER BY id"
            return [dict(row) for row in conn.execute(sql, (task_id,) if task_id else ())]
        finally:
            conn.close()

    @property
    def agent(self) -> AgentRecords:
        return AgentRecords(self.out)

    def agent_prompt(self, task_id: str) -> str:
        return (self.out / f"{task_id}.prompt").read_text(encoding="utf-8")

    def agent_started(self, task_id: str) -> bool:
        return self.agent.count(task_id) > 0

    # ---------------------------------------------------------------- running
    def run_once(self, env: Mapping[str, str] | None = None, config: Config | None = None) -> DaemonRun:
        return run_daemon_once(config or self.config(), {**os.environ, **self.extra_env, **(env or {})})

    @contextlib.contextmanager
    def serving(self, *, config: Config | None = None, clock: Clock = time.time, watch: bool = True,
                env: Mapping[str, str] | None = None) -> Iterator[Daemon]:
        """A long-running daemon in a thread (its signal handlers stay the test's: it is not the main
        thread), with file events on unless `watch=False`; stopped and joined when the block ends."""
        daemon = Daemon(config or self.config(), env={**os.environ, **self.extra_env, **(env or {})},
                        clock=clock, watch=watch)
        thread = threading.Thread(target=daemon.run, name="daemon-under-test")
        thread.start()
        try:
            yield daemon
        finally:
            daemon.request_stop()
            thread.join(timeout=60)
            assert not thread.is_alive(), "the daemon did not stop within 60 s"

    def wait_started(self) -> None:
        """Until a daemon serving this repository has written its first status snapshot."""
        wait_for(lambda: (self.git_dir / "conveyor" / "status.json").exists(), what="the daemon to start")


def run_daemon_once(config: Config, env: Mapping[str, str]) -> DaemonRun:
    """`Daemon(config, once=True).run()` with its log events captured and the test's signal handlers kept."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with capture_logs() as logs:
            code = Daemon(config, env=env, once=True).run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return DaemonRun(code, [dict(entry) for entry in logs])


def use_only(repo: Repo, binary: Path, tool: str = "fake", **settings: Any) -> None:
    """Make the fake agent at `binary`, recording in `repo.out`, the one tool every agent routes to;
    `settings` are more tools.yaml keys (env, env_allowlist, sandbox, ...)."""
    entry = tool_entry(binary, repo.out, tool=tool, **settings)
    repo.write_config("tools.yaml", yaml.safe_dump({"tools": {tool: entry}}, sort_keys=False))
    repo.write_config("agents.yaml", f"agents:\n  default:\n    tool: {tool}\n")


def make_repo(root: Path) -> Repo:
    """A git repository on `main`, `conveyor init` done and committed, with the fake tools configured."""
    path = root / "repo"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# scratch project\n", encoding="utf-8")
    init_repository(path)
    agent_bin = install_fake_agent(root / "bin")
    repo = Repo(path=path, out=root / "agent-out", agent_bin=agent_bin)
    repo.write_config("daemon.yaml", DAEMON_YAML)
    repo.write_config("agents.yaml", AGENTS_YAML)
    repo.write_config("tools.yaml", tools_yaml(agent_bin, repo.out))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "conveyor init")
    return repo


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    """FakeGitHub serving octo/widgets over HTTP on 127.0.0.1, its pull requests checked against the bare
    `tmp_path/origin.git` that `gate_support.make_project` makes (the publishing tests' one GitHub)."""
    from tests.integration.gate_support import fake_github  # it imports this module: not at the top

    with fake_github(tmp_path) as server:
        yield server


@pytest.fixture
def dashboard(repo: Repo) -> Iterator[DashboardProcess]:
    """`conveyor dashboard` serving `repo` as a real process (the dashboard tests' one way to start it)."""
    process = DashboardProcess(repo.path).start()
    try:
        yield process
    finally:
        process.stop()


ConveyorCli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def conveyor_cli() -> Iterator[ConveyorCli]:
    """Run `python -m conveyor ARGS` as a real subprocess from `cwd`; returns the CompletedProcess."""

    def run(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=timeout, check=False)

    yield run


def catch_up(sync: HistorySync) -> None:
    """Do the history table's pending work now (the daemon does it in slices with `step`)."""
    while sync.busy:
        sync.step(limit=10_000, budget_s=3600.0)
