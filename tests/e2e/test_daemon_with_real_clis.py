"""The daemon end to end with the REAL claude and codex CLIs (pinned versions) and the scripted model.

A task file goes into inbox/; the daemon routes it through tools.yaml to the real CLI, which talks to the
fake model on 127.0.0.1 and really writes a file in the task's worktree; the daemon commits it on the
task branch, and the task lands in done/<agent>/ with the tokens the model reported and the cost the CLI
reported (claude) or the price list gives (codex). The telemetry row must agree with the task file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.config import load_config
from conveyor.daemon.loop import Daemon
from conveyor.runner.types import Tokens
from conveyor.setup.init_repo import init_repository
from conveyor.workspace import git as conveyor_git
from tests.conftest import git
from tests.e2e.conftest import base_env, outbound_attempts
from tests.support.model_server import Fail, Hang, ModelServer, Reply, WriteFile

pytestmark = pytest.mark.e2e

CLAUDE_USAGE = Tokens(input=1200, output=80, cache_read=300, cache_write=40)
FINAL_USAGE = Tokens(input=1500, output=25, cache_read=900, cache_write=0)


def _configure(repo: Path, cli_paths: dict[str, Path], *, agent_tool: str, model: str | None = None,
               fallback: list[str] | None = None, daemon: dict[str, Any] | None = None) -> None:
    init_repository(repo)
    config = repo / "config"
    settings = {"rescan_interval_s": 0.5, "idle_timeout_s": 60, "task_timeout_s": 120, "attempts": 1,
                "remote": {"name": None}, **(daemon or {})}
    (config / "daemon.yaml").write_text(yaml.safe_dump(settings))
    agent: dict[str, Any] = {"tool": agent_tool, "fallback": fallback or [], "max_turns": 8}
    if model:
        agent["model"] = model
    (config / "agents.yaml").write_text(yaml.safe_dump({"agents": {"default": agent}}))
    (config / "tools.yaml").write_text(yaml.safe_dump({"tools": {
        "claude-code": {"binary": str(cli_paths["claude-code"])},
        "codex": {"binary": str(cli_paths["codex"])},
    }}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "conveyor init")


def _drop_task(repo: Path, task_id: str, title: str, description: str) -> None:
    document = {"id": task_id, "agent": "backend-dev", "status": "new", "title": title,
                "description": description, "artefacts": ["hello.py"], "priority": "high"}
    inbox = repo / "work" / "collaboration" / "inbox"
    (inbox / f".{task_id}.tmp").write_text(yaml.safe_dump(document, sort_keys=False))
    (inbox / f".{task_id}.tmp").rename(inbox / f"{task_id}.yaml")


def _run_daemon(repo: Path, env: dict[str, str]) -> None:
    config = load_config(repo, conveyor_git.common_git_dir(repo))
    assert Daemon(config, env=env, once=True).run() == 0


def _done(repo: Path, task_id: str) -> dict[str, Any]:
    path = repo / "work" / "collaboration" / "done" / "backend-dev" / f"{task_id}.yaml"
    assert path.exists(), f"task not in done/: {sorted(p.name for p in (repo / 'work').rglob('*.yaml'))}"
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def _rows(repo: Path, task_id: str) -> list[dict[str, Any]]:
    db = repo / ".git" / "conveyor" / "telemetry.db"
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM invocations WHERE task_id=? ORDER BY id", (task_id,))]


def _assert_committed(repo: Path, task_id: str, expected: str) -> str:
    branch = f"conveyor/{task_id}"
    assert git(repo, "show", f"{branch}:hello.py") == expected.rstrip("\n")
    message = git(repo, "log", "-1", "--format=%B", branch)
    assert f"Conveyor-Task: {task_id}" in message
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1, "task worktree left behind"
    assert not (repo / "hello.py").exists(), "the user's working tree was touched"
    return git(repo, "rev-parse", branch)


def test_claude_task_is_committed_with_the_tokens_the_model_reported(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer,
        claude_env: dict[str, str]) -> None:
    task_id = "2026-11-23T0900-backend-dev-hello-claude"
    content = "def hello() -> str:\n    return 'hello from claude'\n"
    model_server.add_script(task_id, [WriteFile("hello.py", content, usage=CLAUDE_USAGE),
                                      Reply("Added hello.py with a hello() function.", usage=FINAL_USAGE)])
    _configure(git_repo, agent_cli_paths, agent_tool="claude-code")
    _drop_task(git_repo, task_id, "Add a hello module", "Create hello.py with a hello() function.")

    _run_daemon(git_repo, claude_env)

    task = _done(git_repo, task_id)
    result = task["result"]
    assert task["status"] == "done"
    sha = _assert_committed(git_repo, task_id, content)
    reported = model_server.reported_usage(task_id)
    assert result["tokens"] == {"input": reported.input, "output": reported.output,
                                "cache_read": reported.cache_read, "cache_write": reported.cache_write}
    assert reported.input == CLAUDE_USAGE.input + FINAL_USAGE.input
    assert result["tool"] == "claude-code" and result["commit"] == sha
    assert result["cost_usd"] > 0 and result["cost_source"] == "reported"
    assert result["summary"] == "Added hello.py with a hello() function."
    assert result["artefacts"] == ["hello.py"] and result["session_id"]
    [row] = _rows(git_repo, task_id)
    assert row["outcome"] == "ok" and row["tool"] == "claude-code" and row["commit_sha"] == sha
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        reported.input, reported.output, reported.cache_read, reported.cache_write)
    assert row["cost_usd"] == pytest.approx(result["cost_usd"])
    assert outbound_attempts(model_server) == []


def test_codex_task_is_committed_and_priced_from_models_yaml(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer,
        codex_env: dict[str, str]) -> None:
    task_id = "2026-11-23T0905-backend-dev-hello-codex"
    content = "print('hello from codex')\n"
    usage = Tokens(input=2000, output=120, cache_read=500, cache_write=0)
    model_server.add_script(task_id, [WriteFile("hello.py", content, usage=usage),
                                      Reply("Created hello.py.", usage=FINAL_USAGE)])
    _configure(git_repo, agent_cli_paths, agent_tool="codex", model="gpt-5.5")
    _drop_task(git_repo, task_id, "Add a hello script", "Create hello.py printing a greeting.")

    _run_daemon(git_repo, codex_env)

    result = _done(git_repo, task_id)["result"]
    _assert_committed(git_repo, task_id, content)
    reported = model_server.reported_usage(task_id)
    # The wire format counts cached tokens inside input_tokens; Conveyor's `input` is the full-rate part.
    assert result["tokens"] == {"input": reported.input, "output": reported.output,
                                "cache_read": reported.cache_read, "cache_write": reported.cache_write}
    assert result["tool"] == "codex" and result["model"] == "gpt-5.5"
    expected_cost = (reported.input * 1.25 + reported.output * 10.0 + reported.cache_read * 0.125) / 1e6
    assert result["cost_usd"] == pytest.approx(expected_cost, abs=1e-6)
    assert result["cost_source"] == "computed"
    [row] = _rows(git_repo, task_id)
    assert row["outcome"] == "ok" and row["cost_usd"] == pytest.approx(expected_cost, abs=1e-6)
    assert outbound_attempts(model_server) == []


def test_claude_rides_out_an_overloaded_model(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer,
        agent_home: Path) -> None:
    """529 twice, then success: claude retries on its own; the run is one invocation, not an attempt lost."""
    task_id = "2026-11-23T0910-backend-dev-overloaded"
    content = "OVERLOAD = 'survived'\n"
    model_server.add_script(task_id, [Fail(529), Fail(529), WriteFile("hello.py", content),
                                      Reply("Done after the overload.")])
    env = {**base_env(model_server), **model_server.claude_env(agent_home, max_retries=3)}
    _configure(git_repo, agent_cli_paths, agent_tool="claude-code")
    _drop_task(git_repo, task_id, "Survive an overload", "Create hello.py.")

    _run_daemon(git_repo, env)

    task = _done(git_repo, task_id)
    assert task["status"] == "done" and task["attempt"] == 1
    _assert_committed(git_repo, task_id, content)
    [row] = _rows(git_repo, task_id)
    assert row["outcome"] == "ok"
    served = [r.step for r in model_server.requests if r.conversation == task_id]
    assert served[:3] == ["Fail", "Fail", "WriteFile"], served


def test_rate_limited_claude_falls_back_to_codex(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, agent_home: Path,
        codex_home: Path) -> None:
    """A 429 pauses claude-code without spending an attempt; the fallback tool does the work."""
    task_id = "2026-11-23T0915-backend-dev-fallback"
    content = "FALLBACK = True\n"
    # claude makes exactly one request (no retries of its own), so codex gets the next steps.
    model_server.add_script(task_id, [Fail(429, headers={"retry-after": "120"}),
                                      WriteFile("hello.py", content), Reply("Done by codex.")])
    env = {**base_env(model_server), **model_server.claude_env(agent_home, max_retries=0),
           **model_server.codex_env(codex_home, agent_home)}
    _configure(git_repo, agent_cli_paths, agent_tool="claude-code", fallback=["codex:gpt-5.5"])
    _drop_task(git_repo, task_id, "Fall back", "Create hello.py.")

    _run_daemon(git_repo, env)

    task = _done(git_repo, task_id)
    result = task["result"]
    assert task["status"] == "done" and task["attempt"] == 1
    assert result["tool"] == "codex"
    _assert_committed(git_repo, task_id, content)
    outcomes = [(r["tool"], r["outcome"]) for r in _rows(git_repo, task_id)]
    assert outcomes == [("claude-code", "rate_limited"), ("codex", "ok")]


def test_a_hung_model_is_stopped_by_the_no_output_timeout(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer,
        claude_env: dict[str, str]) -> None:
    """The model accepts the request and never answers: the daemon's idle timeout ends the whole CLI."""
    import psutil

    task_id = "2026-11-23T0920-backend-dev-hangs"
    model_server.add_script(task_id, [Hang()])
    _configure(git_repo, agent_cli_paths, agent_tool="claude-code",
               daemon={"idle_timeout_s": 4, "kill_grace_s": 1})
    _drop_task(git_repo, task_id, "Hang forever", "Anything.")

    _run_daemon(git_repo, claude_env)

    task = _done(git_repo, task_id)
    assert task["status"] == "error"
    assert task["error"]["kind"] == "timeout"
    assert "printed nothing" in task["error"]["message"]
    assert not conveyor_git.branch_exists(git_repo, f"conveyor/{task_id}") or git(
        git_repo, "rev-list", "--count", f"main..conveyor/{task_id}") == "0"
    assert git(git_repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    # This test's claude only: another test (an xdist worker beside this one) may be running the same
    # binary right now, but not against this test's model server.
    def ours(process: psutil.Process) -> bool:
        try:
            return (str(agent_cli_paths["claude-code"]) in " ".join(process.cmdline())
                    and process.environ().get("ANTHROPIC_BASE_URL") == model_server.anthropic_base_url)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    survivors = [p for p in psutil.process_iter() if ours(p)]
    assert survivors == []
    [row] = _rows(git_repo, task_id)
    assert row["outcome"] == "timeout"
