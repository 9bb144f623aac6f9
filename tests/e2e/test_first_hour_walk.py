"""Issue 16: the first hour in a person's own repository, walked as they would walk it, with the real `claude`
CLI against the scripted model and every command a real `python -m conveyor` process.

The repository is a small Python project of its own (README, pyproject, src/, tests/, an existing
`.gitignore`, `config/` and ROADMAP.md with a Planned item). Each step asserts one point of the issue: init
says what it adds where and what the first run starts; the roadmap does not start by surprise; doctor fails
while no agent CLI can run; an unrunnable verify is refused before any agent round; verify runs in the
project's virtualenv; a failed task is retried while the daemon runs; logs read as a transcript; Ctrl-C
says what the drain does and `status` shows it; the working tree comes clean. The transcript, as the user
sees it, is written to $CONVEYOR_WALK_TRANSCRIPT when set (and printed on failure).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest
import yaml

from tests.conftest import git
from tests.support.model_server import Hang, ModelServer, Reply, WriteFile
from tests.support.project_venv import project_venv
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROADMAP = """\
# Our roadmap

### 🔴 **PRIORITY 1: Rewrite the billing module**

**Status**: 📝 Planned

Written for people; nobody asked an agent to do this yet.
"""
TEST_FILE = """\
from pathlib import Path


def test_greeting() -> None:
    assert Path("greeting.txt").read_text() == "hello world\\n"
"""
CHECK = "python -m pytest -q -p no:cacheprovider tests/test_greeting.py"
BOARD = Path("work/collaboration")


class Walk:
    """Runs `conveyor ...` as the user would and keeps what they saw."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.repo = repo
        self.env = env
        self.transcript: list[str] = []

    def __call__(self, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=self.repo, env=self.env,
                              capture_output=True, text=True, timeout=180, check=False)
        self.note(f"$ conveyor {' '.join(args)}", done.stdout + done.stderr + f"[exit {done.returncode}]")
        if code is not None:
            assert done.returncode == code, done.stdout + done.stderr
        return done

    def note(self, title: str, text: str) -> None:
        self.transcript.extend([title, text.rstrip(), ""])

    def write(self) -> None:
        target = os.environ.get("CONVEYOR_WALK_TRANSCRIPT")
        if target:
            Path(target).write_text("\n".join(self.transcript) + "\n", encoding="utf-8")


def _project(root: Path) -> Path:
    repo = root / "project"
    (repo / "src" / "app").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "config").mkdir()
    (repo / "README.md").write_text("# project\n", encoding="utf-8")
    (repo / "pyproject.toml").write_text('[project]\nname = "project"\nversion = "0.1"\n', encoding="utf-8")
    (repo / "src" / "app" / "__init__.py").write_text("", encoding="utf-8")
    (repo / "tests" / "test_greeting.py").write_text(TEST_FILE, encoding="utf-8")
    (repo / "config" / "app.yaml").write_text("port: 8080\n", encoding="utf-8")
    (repo / ".gitignore").write_text(".venv/\n__pycache__/\n", encoding="utf-8")
    (repo / "ROADMAP.md").write_text(ROADMAP, encoding="utf-8")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "our project")
    return repo


def _task(repo: Path, task_id: str) -> dict[str, object]:
    for folder in ("done", "assigned", "inbox"):
        found = list((repo / BOARD / folder).rglob(f"{task_id}.yaml"))
        if found:
            return dict(yaml.safe_load(found[0].read_text(encoding="utf-8")), _folder=folder)
    return {}


def test_the_first_hour_in_a_users_repository(tmp_path: Path, agent_cli_paths: dict[str, Path],
                                             model_server: ModelServer, claude_env: dict[str, str]) -> None:
    repo = _project(tmp_path)
    node = shutil.which("node")
    user_path = os.pathsep.join(p for p in (str(Path(node).parent) if node else "", "/usr/bin", "/bin") if p)
    walk = Walk(repo, {**claude_env, "PATH": user_path, "COLUMNS": "120"})
    daemon: subprocess.Popen[str] | None = None
    log: IO[str] | None = None
    try:
        # 1. init: which files where, the user's config/ noticed, what the first run starts; roadmap untouched
        out = walk("init").stdout
        assert "config/ already held your own files (app.yaml)" in out
        assert "roadmap off (roadmap.enabled: false): the 1 Planned item(s) of ROADMAP.md" in out
        assert "kept     ROADMAP.md" in out and "created  config/daemon.yaml" in out
        assert (repo / ".gitignore").read_text(encoding="utf-8").startswith(".venv/\n__pycache__/\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "conveyor init")

        # 2. doctor with no agent CLI on PATH: exit 1, says what to install
        out = walk("doctor", code=1).stdout
        assert "✘ agents can run" in out and "npm install -g @anthropic-ai/claude-code" in out
        assert "! remote" in out and "git remote add origin" in out

        # the user points tools.yaml at their claude and keeps transcripts; doctor passes
        config = repo / "config"
        (config / "tools.yaml").write_text(yaml.safe_dump(
            {"tools": {"claude-code": {"binary": str(agent_cli_paths["claude-code"])}}}), encoding="utf-8")
        with (config / "daemon.yaml").open("a", encoding="utf-8") as handle:
            handle.write("privacy: full\nrescan_interval_s: 1\nverify_rounds: 0\nattempts: 1\n"
                         "drain_grace_s: 60\nidle_timeout_s: 120\nremote: {name: null}\n")
        (config / "agents.yaml").write_text(yaml.safe_dump(
            {"agents": {"default": {"tool": "claude-code", "max_turns": 8}}}), encoding="utf-8")
        git(repo, "commit", "-q", "-am", "configure conveyor")
        out = walk("doctor").stdout
        assert "✔ agents can run           on claude-code" in out
        assert "✔ credentials claude-code" in out and "ANTHROPIC_API_KEY" in out
        assert "roadmap off" in out

        # 3. verify set-up errors, found before anything runs
        shelly = tmp_path / "shelly.yaml"
        shelly.write_text(yaml.safe_dump({"id": "shelly", "agent": "dev", "status": "new", "title": "x",
                                          "verify": ["pytest -q && echo ok"]}), encoding="utf-8")
        out = walk("task", "validate", str(shelly), code=1).stdout
        assert "holds the shell operator '&&'" in out and "sh -c" in out
        err = walk("submit", "-a", "dev", "-t", "Write a greeting", "--verify", CHECK, code=2).stderr
        assert "verify" in err and ("is not on verify's PATH" in err or "has no module 'pytest'" in err)
        err = walk("submit", "-a", "dev", "-t", "x", "--tool", "claude", code=2).stderr
        assert "did you mean 'claude-code'?" in err
        assert _task(repo, "shelly") == {}

        # the project's virtualenv (ignored by git, so not in a task's workspace) is where verify runs
        venv_bin = project_venv(repo / ".venv")   # a real venv with pytest (verify runs it in the sandbox)
        out = walk("doctor").stdout
        assert f"with {venv_bin} first on PATH" in out

        # 4. a task, submitted before the daemon runs: accepted, with a hint to start one
        model_server.add_script("greet-one", [WriteFile("greeting.txt", "hello world\n"),
                                              Reply("Wrote greeting.txt.")])
        done = walk("submit", "-a", "dev", "-t", "Write a greeting", "--id", "greet-one",
                    "-d", "Write 'hello world' into greeting.txt (task greet-one).", "--verify", CHECK)
        assert "no daemon is running" in done.stderr

        log = (tmp_path / "daemon.log").open("w", encoding="utf-8")
        daemon = subprocess.Popen([sys.executable, "-m", "conveyor", "run"], cwd=repo, env=walk.env,
                                  stdout=log, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: _task(repo, "greet-one").get("_folder") == "done", timeout=150, what="greet-one done")
        first = _task(repo, "greet-one")
        assert first["status"] == "done", first.get("error")
        assert git(repo, "show", "conveyor/greet-one:greeting.txt") == "hello world"
        checks = {c["check"]: c for c in first["result"]["checks"]}          # type: ignore[index]
        assert checks[f"verify: {CHECK}"]["result"] == "passed"              # with the venv's python
        assert (repo / "ROADMAP.md").read_text(encoding="utf-8") == ROADMAP  # no surprise spend

        # 5. a task that fails verify, retried while the daemon runs
        model_server.add_script("greet-two", [WriteFile("greeting.txt", "hello wrold\n"), Reply("Wrote it."),
                                              WriteFile("greeting.txt", "hello world\n"), Reply("Fixed it.")])
        walk("submit", "-a", "dev", "-t", "Write the greeting again", "--id", "greet-two",
             "-d", "Write 'hello world' into greeting.txt (task greet-two).", "--verify", CHECK)
        wait_for(lambda: _task(repo, "greet-two").get("_folder") == "done", timeout=150, what="greet-two ended")
        assert _task(repo, "greet-two")["status"] == "error"
        out = walk("status").stdout
        assert "greet-two" in out and "verify command" in out
        out = walk("task", "retry", "greet-two").stdout
        assert "back in inbox/" in out
        wait_for(lambda: _task(repo, "greet-two").get("status") == "done", timeout=150, what="the retry done")
        assert _task(repo, "greet-two")["retries"][0]["status"] == "error"   # type: ignore[index]

        # 6. logs: a transcript for people, oldest first; --raw for the JSON
        out = walk("logs", "greet-one").stdout
        assert "── session" in out and "→ Write" in out and "── result: success" in out
        assert '"type":"system"' not in out.replace(" ", "")
        raw = subprocess.run([sys.executable, "-m", "conveyor", "logs", "--raw", "greet-one"], cwd=repo,
                             env=walk.env, capture_output=True, text=True, check=True).stdout
        assert '"subtype":"init"' in raw.replace(" ", "")

        # 7. Ctrl-C while an agent runs: the drain says what it does, status shows it, a second one stops now
        model_server.add_script("greet-slow", [Hang()])
        walk("submit", "-a", "dev", "-t", "Take your time", "--id", "greet-slow",
             "-d", "Write anything (task greet-slow).")
        wait_for(lambda: _task(repo, "greet-slow").get("_folder") == "assigned"
                 and _task(repo, "greet-slow").get("status") == "in_progress", timeout=60, what="greet-slow runs")
        daemon.send_signal(signal.SIGINT)
        wait_for(lambda: "draining" in walk("status", code=None).stdout.split("\n", 1)[0], timeout=30,
                 what="status to say draining")
        out = walk("status").stdout
        assert "daemon: draining" in out and "stops them now" in out
        daemon.send_signal(signal.SIGINT)
        assert daemon.wait(timeout=90) == 0
        log.close()
        said = (tmp_path / "daemon.log").read_text(encoding="utf-8")
        walk.note("(the terminal of `conveyor run`, the drain)",
                  "\n".join(line for line in said.splitlines() if "drain" in line or "stopping_agents" in line))
        assert "Stop again (Ctrl-C) to stop them now" in said
        assert _task(repo, "greet-slow")["_folder"] == "assigned"     # it runs again at the next start

        # 8. the roadmap never started, and the working tree is clean (the board is committed)
        assert "roadmap-driven work is off" in walk("roadmap").stdout
        assert (repo / "ROADMAP.md").read_text(encoding="utf-8") == ROADMAP
        assert not list((repo / BOARD).rglob("roadmap-*.yaml"))
        status = git(repo, "status", "--porcelain")
        walk.note("$ git status --porcelain", status or "(clean)")
        assert status == ""
    except BaseException:
        print("\n".join(walk.transcript))
        raise
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)
        if log is not None:
            log.close()   # also when a step failed: a file left open fails a later test's warning check
        walk.write()
