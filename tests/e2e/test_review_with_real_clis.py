"""The review stage end to end: the REAL claude writes and the REAL codex reviews (and the other way round).

Both CLIs talk to the scripted model server; the reviewer runs read-only in the task's worktree (claude in
plan mode, codex in its read-only sandbox) and ends with a JSON verdict. The daemon publishes to a real
bare `origin` and FakeGitHub, so what a person sees (draft or not, labels, the Review section) is checked
on the pull request itself, and every run's role is checked in telemetry.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.config import load_config
from conveyor.daemon.loop import Daemon
from conveyor.setup.init_repo import init_repository
from conveyor.workspace import git as conveyor_git
from tests.conftest import git
from tests.e2e.conftest import outbound_attempts
from tests.e2e.publishing import codex_home, env, github, origin
from tests.integration.gate_support import GH_REPO, TOKEN_ENV
from tests.support.fake_github import FakeGitHub, FakePull
from tests.support.model_server import Fail, ModelServer, Reply, Step, WriteFile

__all__ = ["codex_home", "env", "github", "origin"]   # fixtures, used by name
pytestmark = pytest.mark.e2e

TASK = "2026-12-07T0300-backend-dev-review"
GOOD = "def add(a: int, b: int) -> int:\n    return a + b\n"
BAD = "def add(a: int, b: int) -> int:\n    return a - b\n"


def verdict(decision: str, *findings: dict[str, Any], summary: str = "") -> str:
    block = json.dumps({"verdict": decision, "summary": summary, "findings": list(findings)})
    return f"I read the change.\n\n```json\n{block}\n```\n"


SUBTRACTS = {"file": "calc.py", "line": 2, "severity": "high", "message": "add() subtracts; return a + b"}
APPROVE = verdict("approve", summary="add() is correct")


def _configure(repo: Path, cli_paths: dict[str, Path], github: FakeGitHub, origin: Path, *, author: str,
               review: dict[str, Any], task: dict[str, Any] | None = None,
               daemon: dict[str, Any] | None = None) -> None:
    init_repository(repo)
    config = repo / "config"
    (config / "daemon.yaml").write_text(yaml.safe_dump({
        "rescan_interval_s": 0.5, "idle_timeout_s": 60, "task_timeout_s": 120, "attempts": 1,
        "roadmap": {"enabled": False}, "review": {"enabled": True, **review},
        "pull_requests": {"api_url": github.api_url, "repo": GH_REPO, "token_env": TOKEN_ENV}, **(daemon or {})}))
    agent: dict[str, Any] = {"tool": author, "max_turns": 8}
    if author == "codex":
        agent["model"] = "gpt-5.5"      # a classic-tools model: the scripted WriteFile needs apply_patch/exec
    (config / "agents.yaml").write_text(yaml.safe_dump({"agents": {"default": agent}}))
    (config / "tools.yaml").write_text(yaml.safe_dump({"tools": {
        "claude-code": {"binary": str(cli_paths["claude-code"])}, "codex": {"binary": str(cli_paths["codex"])}}}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "conveyor init")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    document = {"id": TASK, "agent": "backend-dev", "status": "new", "title": "Add an add() function",
                "description": "Write calc.py with add(a, b) returning the sum.", "artefacts": ["calc.py"],
                **(task or {})}
    inbox = repo / "work" / "collaboration" / "inbox"
    (inbox / f".{TASK}.tmp").write_text(yaml.safe_dump(document, sort_keys=False))
    (inbox / f".{TASK}.tmp").rename(inbox / f"{TASK}.yaml")


def _script(server: ModelServer, author: list[Step], reviewer: list[Step]) -> None:
    """The reviewer's conversation first: its prompt also names the task, and the first marker found wins."""
    server.add_script(f"Review of task {TASK}", reviewer)
    server.add_script(TASK, author)


def _run(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    config = load_config(repo, conveyor_git.common_git_dir(repo))
    assert Daemon(config, env=env, once=True).run() == 0
    path = repo / "work" / "collaboration" / "done" / "backend-dev" / f"{TASK}.yaml"
    assert path.exists(), sorted(p.name for p in (repo / "work").rglob("*.yaml"))
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def _roles(repo: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(repo / ".git" / "conveyor" / "telemetry.db") as conn:
        return [(row[0], row[1]) for row in conn.execute(
            "SELECT role, tool FROM invocations WHERE task_id=? ORDER BY id", (TASK,))]


def _pull(github: FakeGitHub) -> FakePull:
    (pull,) = github.pulls_for(GH_REPO, f"conveyor/{TASK}")
    return pull


def _review_requests(server: ModelServer) -> list[str]:
    return [json.dumps(r.body) for r in server.requests if r.conversation == f"Review of task {TASK}"]


def test_claude_writes_codex_approves_and_the_pull_request_is_ready(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")], [Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code", review={"model": "gpt-5.5"})

    document = _run(git_repo, env)

    assert document["status"] == "done", document.get("error")
    review = document["result"]["review"]
    assert (review["status"], review["verdict"], review["rounds"], review["fix_rounds"]) == ("approved", "approve",
                                                                                            1, 0)
    assert review["reviewer"] == "codex:gpt-5.5" and review["findings"] == []
    assert review["tokens"]["input"] > 0 and review["cost_usd"] > 0     # priced from models.yaml
    assert _roles(git_repo) == [("author", "claude-code"), ("reviewer", "codex")]
    pull = _pull(github)
    assert not pull.draft and "unreviewed" not in pull.labels
    assert "## Review: ✅ approved" in pull.body and "**Reviewer:** codex:gpt-5.5" in pull.body
    # the reviewer saw the task and the diff against the base
    [seen] = _review_requests(model_server)
    assert "Write calc.py with add(a, b)" in seen and "+    return a + b" in seen
    assert "Conveyor-Review: approved" in git(git_repo, "log", "-1", "--format=%B", f"conveyor/{TASK}")
    assert outbound_attempts(model_server) == []


def test_codex_writes_claude_requests_changes_then_approves_the_fix(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    """The blocking finding goes back to codex (its session resumed); the second review sees only the fix.
    The reviewer also tries to write a file: plan mode refuses it, so nothing of it reaches the branch."""
    _script(model_server,
            [WriteFile("calc.py", BAD), Reply("Added calc.py."), WriteFile("calc.py", GOOD), Reply("Fixed add().")],
            [WriteFile("reviewer-was-here.txt", "x\n"), Reply(verdict("request_changes", SUBTRACTS)),
             Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="codex", review={})

    document = _run(git_repo, env)

    assert document["status"] == "done", document.get("error")
    review = document["result"]["review"]
    assert (review["status"], review["rounds"], review["fix_rounds"], review["reviewer"]) == ("approved", 2, 1,
                                                                                             "claude-code")
    assert git(git_repo, "show", f"conveyor/{TASK}:calc.py") == GOOD.rstrip("\n")
    files = git(git_repo, "show", "--name-only", "--format=", f"conveyor/{TASK}").split()
    assert files == ["calc.py"], "the read-only reviewer's write reached the branch"
    assert _roles(git_repo) == [("author", "codex"), ("reviewer", "claude-code"), ("fixer", "codex"),
                                ("reviewer", "claude-code")]
    fix = [json.dumps(r.body) for r in model_server.requests if r.conversation == TASK]
    assert any("add() subtracts; return a + b" in body for body in fix), "the finding never reached the author"
    second = [body for body in _review_requests(model_server) if "What changed since your previous review" in body]
    assert second and "[high] calc.py:2" in second[-1]
    assert not _pull(github).draft


def test_a_malformed_verdict_is_retried_once_then_the_pull_request_is_an_unreviewed_draft(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")],
            [Reply("Looks good to me!"), Reply('```json\n{"verdict": "lgtm"}\n```')])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code", review={})

    document = _run(git_repo, env)

    assert document["status"] == "done", document.get("error")
    review = document["result"]["review"]
    assert review["status"] == "unreviewed" and review["verdict"] is None and review["rounds"] == 0
    assert _roles(git_repo) == [("author", "claude-code"), ("reviewer", "codex"), ("reviewer", "codex")]
    pull = _pull(github)
    assert pull.draft and "unreviewed" in pull.labels
    assert "⚠️ unreviewed" in pull.body


def test_rounds_exhausted_open_a_draft_with_the_findings(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    low = {"file": "calc.py", "line": 1, "severity": "low", "message": "name the parameters better"}
    _script(model_server, [WriteFile("calc.py", BAD), Reply("Added calc.py."), Reply("I think it is right.")],
            [Reply(verdict("request_changes", SUBTRACTS, low))])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code", review={"rounds": 1})

    document = _run(git_repo, env)

    review = document["result"]["review"]
    assert (review["status"], review["rounds"], review["fix_rounds"]) == ("changes_requested", 2, 1)
    assert {finding["severity"] for finding in review["findings"]} == {"high", "low"}
    assert _roles(git_repo) == [("author", "claude-code"), ("reviewer", "codex"), ("fixer", "claude-code"),
                                ("reviewer", "codex")]
    pull = _pull(github)
    assert pull.draft and "changes-requested" in pull.labels
    assert "add() subtracts; return a + b" in pull.body and "name the parameters better" in pull.body


def test_findings_below_the_threshold_do_not_block(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    nit = {"file": "calc.py", "line": 1, "severity": "medium", "message": "add a docstring"}
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")],
            [Reply(verdict("request_changes", nit))])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code", review={"block_at": "high"})

    document = _run(git_repo, env)

    review = document["result"]["review"]
    assert (review["status"], review["fix_rounds"]) == ("approved", 0)
    assert review["findings"] == [nit]
    assert _roles(git_repo) == [("author", "claude-code"), ("reviewer", "codex")]
    assert not _pull(github).draft


def test_a_rate_limited_reviewer_hands_over_to_the_fallback_reviewer(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")],
            [Fail(429, headers={"retry-after": "120"}), Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code",
               review={"tool": "codex", "fallback": ["claude-code"]})

    document = _run(git_repo, env)

    review = document["result"]["review"]
    assert (review["status"], review["reviewer"]) == ("approved", "claude-code")
    assert any("codex stopped by rate_limited" in note for note in review["notes"])
    with sqlite3.connect(git_repo / ".git" / "conveyor" / "telemetry.db") as conn:
        rows = conn.execute("SELECT role, tool, outcome FROM invocations WHERE task_id=? ORDER BY id",
                            (TASK,)).fetchall()
    assert rows == [("author", "claude-code", "ok"), ("reviewer", "codex", "rate_limited"),
                    ("reviewer", "claude-code", "ok")]
    assert not _pull(github).draft


def test_a_change_over_the_size_gate_fails_with_the_authors_split_proposal(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py."),
                           Reply("Split it: 1. add() alone; 2. its tests.")], [Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code", review={},
               daemon={"size": {"max_changed_lines": 1}})

    document = _run(git_repo, env)

    assert document["status"] == "error"
    error = document["error"]
    assert error["kind"] == "too_large" and "2 changed lines (max_changed_lines: 1)" in error["message"]
    assert error["split_proposal"] == "Split it: 1. add() alone; 2. its tests."
    assert github.pulls_for(GH_REPO, f"conveyor/{TASK}") == []
    assert _roles(git_repo) == [("author", "claude-code"), ("fixer", "claude-code")]   # no review spent


def test_a_task_may_ask_for_a_too_large_draft(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")], [Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code", review={"enabled": False},
               task={"max_changed_files": 1, "max_changed_lines": 1, "too_large": "draft"})

    document = _run(git_repo, env)

    assert document["status"] == "done", document.get("error")
    pull = _pull(github)
    assert pull.draft and "too-large" in pull.labels and "Too large" in pull.body
    assert _roles(git_repo) == [("author", "claude-code")]


# ------------------------------------------------------------------ the same stories the other way round
def test_codex_writes_claude_approves_and_the_pull_request_is_ready(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")], [Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="codex", review={})

    document = _run(git_repo, env)

    assert document["status"] == "done", document.get("error")
    review = document["result"]["review"]
    assert (review["status"], review["rounds"], review["reviewer"]) == ("approved", 1, "claude-code")
    assert _roles(git_repo) == [("author", "codex"), ("reviewer", "claude-code")]
    pull = _pull(github)
    assert not pull.draft and "## Review: ✅ approved" in pull.body
    assert outbound_attempts(model_server) == []


def test_claude_writes_codex_requests_changes_then_approves_the_fix(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    """The finding goes back into claude's own session (`--resume`); codex's second review sees only the fix."""
    _script(model_server,
            [WriteFile("calc.py", BAD), Reply("Added calc.py."), WriteFile("calc.py", GOOD), Reply("Fixed add().")],
            [Reply(verdict("request_changes", SUBTRACTS)), Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="claude-code", review={"model": "gpt-5.5"})

    document = _run(git_repo, env)

    assert document["status"] == "done", document.get("error")
    review = document["result"]["review"]
    assert (review["status"], review["rounds"], review["fix_rounds"], review["reviewer"]) == (
        "approved", 2, 1, "codex:gpt-5.5")
    assert git(git_repo, "show", f"conveyor/{TASK}:calc.py") == GOOD.rstrip("\n")
    assert _roles(git_repo) == [("author", "claude-code"), ("reviewer", "codex"), ("fixer", "claude-code"),
                                ("reviewer", "codex")]
    with sqlite3.connect(git_repo / ".git" / "conveyor" / "telemetry.db") as conn:
        sessions = [row[0] for row in conn.execute(
            "SELECT session_id FROM invocations WHERE task_id=? AND role IN ('author', 'fixer') ORDER BY id",
            (TASK,))]
    assert len(sessions) == 2 and sessions[0] == sessions[1]        # the author's session, resumed
    fix = [json.dumps(r.body) for r in model_server.requests if r.conversation == TASK]
    assert any("add() subtracts; return a + b" in body for body in fix)
    second = [body for body in _review_requests(model_server) if "What changed since your previous review" in body]
    assert second and "+    return a + b" in second[-1]
    assert not _pull(github).draft


def test_codex_writes_and_a_malformed_claude_verdict_makes_an_unreviewed_draft(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")],
            [Reply("Ship it."), Reply('```json\n{"verdict": "approve", "findings": "none"}\n```')])
    _configure(git_repo, agent_cli_paths, github, origin, author="codex", review={})

    document = _run(git_repo, env)

    review = document["result"]["review"]
    assert review["status"] == "unreviewed" and review["verdict"] is None
    assert _roles(git_repo) == [("author", "codex"), ("reviewer", "claude-code"), ("reviewer", "claude-code")]
    pull = _pull(github)
    assert pull.draft and "unreviewed" in pull.labels


def test_codex_writes_and_rounds_exhausted_open_a_draft_with_claudes_findings(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", BAD), Reply("Added calc.py."), Reply("I think it is right.")],
            [Reply(verdict("request_changes", SUBTRACTS))])
    _configure(git_repo, agent_cli_paths, github, origin, author="codex", review={"rounds": 1})

    document = _run(git_repo, env)

    review = document["result"]["review"]
    assert (review["status"], review["rounds"], review["fix_rounds"]) == ("changes_requested", 2, 1)
    assert _roles(git_repo) == [("author", "codex"), ("reviewer", "claude-code"), ("fixer", "codex"),
                                ("reviewer", "claude-code")]
    pull = _pull(github)
    assert pull.draft and "changes-requested" in pull.labels and "add() subtracts; return a + b" in pull.body


def test_a_rate_limited_claude_reviewer_hands_over_to_the_fallback_codex(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path) -> None:
    _script(model_server, [WriteFile("calc.py", GOOD), Reply("Added calc.py.")],
            [Fail(429, headers={"retry-after": "120"}), Reply(APPROVE)])
    _configure(git_repo, agent_cli_paths, github, origin, author="codex",
               review={"tool": "claude-code", "fallback": ["codex"], "model": None})

    document = _run(git_repo, env)

    review = document["result"]["review"]
    assert review["status"] == "approved" and review["reviewer"].startswith("codex")
    assert any("claude-code stopped by rate_limited" in note for note in review["notes"])
    with sqlite3.connect(git_repo / ".git" / "conveyor" / "telemetry.db") as conn:
        rows = conn.execute("SELECT role, tool, outcome FROM invocations WHERE task_id=? ORDER BY id",
                            (TASK,)).fetchall()
    assert rows == [("author", "codex", "ok"), ("reviewer", "claude-code", "rate_limited"),
                    ("reviewer", "codex", "ok")]
    assert not _pull(github).draft
