"""A follow-up on an open pull request, end to end with the REAL claude and the REAL codex as its author.

The original task runs first (the scripted model writes a wrong add()), the daemon pushes it to a real bare
`origin` and opens PR #1 on FakeGitHub. A permitted person comments; the follow-up task the watcher would
write is dropped into inbox/, and the daemon resumes the author's own session (claude `--resume`, codex
`exec resume`) in the original task's folder, on the PR's head: the model sees its earlier conversation and
the person's words, fixes add(), and the daemon pushes one commit onto the same branch and answers on the
PR. With claude the review stage runs on the follow-up too (codex reviews and approves).
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
from tests.support.fake_github import FakeGitHub
from tests.support.model_server import ModelServer, Reply, WriteFile

__all__ = ["codex_home", "env", "github", "origin"]   # fixtures, used by name
pytestmark = pytest.mark.e2e

TASK = "2026-12-07T0500-backend-dev-calc"
GOOD = "def add(a: int, b: int) -> int:\n    return a + b\n"
BAD = "def add(a: int, b: int) -> int:\n    return a - b\n"
ASK = "add() subtracts: make it return a + b, please."
APPROVE = "Checked.\n\n```json\n" + json.dumps({"verdict": "approve", "summary": "fixed", "findings": []}) + "\n```\n"


def _daemon_yaml(repo: Path, github: FakeGitHub, *, review: bool) -> None:
    (repo / "config" / "daemon.yaml").write_text(yaml.safe_dump({
        "rescan_interval_s": 0.5, "idle_timeout_s": 60, "task_timeout_s": 120, "attempts": 1,
        "roadmap": {"enabled": False}, "review": {"enabled": review, "model": "gpt-5.5"},
        "pull_requests": {"api_url": github.api_url, "repo": GH_REPO, "token_env": TOKEN_ENV}}))


def _configure(repo: Path, cli_paths: dict[str, Path], github: FakeGitHub, origin: Path, author: str) -> None:
    init_repository(repo)
    _daemon_yaml(repo, github, review=False)
    agent: dict[str, Any] = {"tool": author, "max_turns": 8}
    if author == "codex":
        agent["model"] = "gpt-5.5"      # a classic-tools model: the scripted WriteFile needs apply_patch/exec
    (repo / "config" / "agents.yaml").write_text(yaml.safe_dump({"agents": {"default": agent}}))
    (repo / "config" / "tools.yaml").write_text(yaml.safe_dump({"tools": {
        "claude-code": {"binary": str(cli_paths["claude-code"])}, "codex": {"binary": str(cli_paths["codex"])}}}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "conveyor init")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    _drop(repo, {"id": TASK, "agent": "backend-dev", "status": "new", "title": "Add an add() function",
                 "description": "Write calc.py with add(a, b) returning the sum.", "artefacts": ["calc.py"]})


def _drop(repo: Path, document: dict[str, Any]) -> None:
    inbox = repo / "work" / "collaboration" / "inbox"
    (inbox / f".{document['id']}.tmp").write_text(yaml.safe_dump(document, sort_keys=False))
    (inbox / f".{document['id']}.tmp").rename(inbox / f"{document['id']}.yaml")


def _run(repo: Path, env: dict[str, str], task_id: str) -> dict[str, Any]:
    config = load_config(repo, conveyor_git.common_git_dir(repo))
    assert Daemon(config, env=env, once=True).run() == 0
    path = repo / "work" / "collaboration" / "done" / "backend-dev" / f"{task_id}.yaml"
    assert path.exists(), sorted(p.name for p in (repo / "work").rglob("*.yaml"))
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def _rows(repo: Path, task_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(repo / ".git" / "conveyor" / "telemetry.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM invocations WHERE task_id=? ORDER BY id", (task_id,))]


@pytest.mark.parametrize("author", ["claude-code", "codex"])
def test_a_comment_on_the_pull_request_resumes_the_authors_session_and_lands_one_commit_on_its_branch(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer, env: dict[str, str],
        github: FakeGitHub, origin: Path, author: str) -> None:
    model_server.add_script(f"Review of task {TASK}.fu-", [Reply(APPROVE)])
    model_server.add_script(TASK, [WriteFile("calc.py", BAD), Reply("Added calc.py."),
                                   WriteFile("calc.py", GOOD), Reply("add() now returns a + b.")])
    _configure(git_repo, agent_cli_paths, github, origin, author)
    original = _run(git_repo, env, TASK)
    assert original["status"] == "done", original.get("error")
    (pull,) = github.pulls_for(GH_REPO, f"conveyor/{TASK}")
    head = git(origin, "rev-parse", f"refs/heads/conveyor/{TASK}")

    comment = github.threads.comment(pull.number, "alice", ASK)
    follow_up_id = f"{TASK}.fu-c{comment.id}"
    if author == "claude-code":   # the follow-up is reviewed like any change: codex approves the fix
        _daemon_yaml(git_repo, github, review=True)
    _drop(git_repo, {"id": follow_up_id, "agent": "backend-dev", "title": f"Follow-up on PR #{pull.number}",
                     "priority": "high", "artefacts": [], "follow_up": {
                         "of": TASK, "pr": pull.number, "pr_url": f"{github.web_url}/{GH_REPO}/pull/{pull.number}",
                         "branch": f"conveyor/{TASK}", "head_sha": head, "trigger": "comment",
                         "event_id": f"c{comment.id}", "author": "alice",
                         "reply_to": {"kind": "issue_comment", "id": comment.id}, "request": ASK}})
    document = _run(git_repo, env, follow_up_id)

    assert document["status"] == "done", document.get("error")
    after = git(origin, "rev-parse", f"refs/heads/conveyor/{TASK}")
    assert document["result"]["commit"] == after and git(origin, "rev-parse", f"{after}^") == head
    assert git(origin, "show", f"{after}:calc.py") == GOOD.rstrip("\n")
    assert len(github.pulls(GH_REPO)) == 1
    answers = [c for c in github.threads.comments(pull.number) if follow_up_id in c.body]
    assert len(answers) == 1 and after in answers[0].body and "`calc.py`" in answers[0].body
    first, = [row for row in _rows(git_repo, TASK) if row["role"] == "author"]
    fixes = [row for row in _rows(git_repo, follow_up_id) if row["role"] == "fixer"]
    assert len(fixes) == 1 and fixes[0]["tool"] == author and fixes[0]["outcome"] == "ok"
    # the author's own session went on: its earlier turn came along with the person's words
    resumed = [r for r in model_server.requests if r.conversation == TASK and ASK in json.dumps(r.body)]
    assert resumed, "the request never reached the model"
    assert "Added calc.py." in json.dumps(resumed[0].body), "a fresh session, not the author's"
    if author == "claude-code":
        assert fixes[0]["session_id"] == first["session_id"]
        assert document["result"]["review"]["status"] == "approved"
        assert [row["role"] for row in _rows(git_repo, follow_up_id)] == ["fixer", "reviewer"]
    assert outbound_attempts(model_server) == []
