"""The REAL claude CLI asks a question (scripted model): the daemon parks the task as needs_input, an answer
resumes the same claude session (`--resume <id>`), and the change it then makes is committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conveyor.daemon.loop import Daemon
from tests.conftest import git
from tests.e2e.conftest import claude_board, invocation_rows, outbound_attempts
from tests.support.model_server import ModelServer, Reply, WriteFile

pytestmark = pytest.mark.e2e

TASK = "2026-12-07T0400-backend-dev-ask"
QUESTION = "Which greeting should greeting.txt hold?"


def test_claude_asks_the_task_parks_and_the_answer_resumes_its_session(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer,
        claude_env: dict[str, str]) -> None:
    model_server.add_script(TASK, [
        Reply(f"I cannot choose the greeting myself.\nNEEDS_INPUT: {QUESTION}"),
        WriteFile("greeting.txt", "hello teal\n"), Reply("Wrote the greeting you chose."),
    ])
    config = claude_board(git_repo, agent_cli_paths["claude-code"], {
        "id": TASK, "title": "Write a greeting", "artefacts": ["greeting.txt"],
        "description": "Write the greeting the user wants into greeting.txt."})
    parked = git_repo / "work" / "collaboration" / "assigned" / "backend-dev" / f"{TASK}.yaml"
    assert Daemon(config, env=claude_env, once=True).run() == 0       # asks, parks, and --once ends idle

    document = yaml.safe_load(parked.read_text())
    assert document["status"] == "needs_input" and document["question"] == QUESTION
    session = document["session_id"]
    assert session and document["asked_tool"] == "claude-code"
    document["answer"] = "Say 'hello teal'."                             # what the dashboard or the CLI writes
    parked.write_text(yaml.safe_dump(document, sort_keys=False))

    assert Daemon(config, env=claude_env, once=True).run() == 0
    done = git_repo / "work" / "collaboration" / "done" / "backend-dev" / f"{TASK}.yaml"
    finished = yaml.safe_load(done.read_text())
    assert finished["status"] == "done", finished.get("error")
    assert finished["questions"][0]["answer"] == "Say 'hello teal'."
    assert git(git_repo, "show", f"conveyor/{TASK}:greeting.txt") == "hello teal"
    rows = invocation_rows(git_repo, TASK)
    assert [row["outcome"] for row in rows] == ["ok", "ok"]
    assert rows[1]["session_id"] == rows[0]["session_id"] == session                # the same session
    scripted = [r for r in model_server.requests if r.conversation == TASK]
    resumed = [r for r in scripted if "Say 'hello teal'." in json.dumps(r.body)]
    assert resumed, "the answer never reached the model"
    assert QUESTION in json.dumps(resumed[0].body)       # the earlier conversation came along with the answer
    assert outbound_attempts(model_server) == []
