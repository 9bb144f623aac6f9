"""A failing verify command goes back to the REAL claude CLI by resuming its session (`--resume <id>`).

The scripted model writes a greeting with a typo; the daemon's verify command fails; the daemon resumes
the same claude session with the command and its output; the model (seeing the whole earlier conversation
plus the failure) fixes the file; verify passes and the fix is committed.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from conveyor.daemon.loop import Daemon
from tests.conftest import git
from tests.e2e.conftest import claude_board, invocation_rows, outbound_attempts
from tests.support.model_server import ModelServer, Reply, WriteFile

pytestmark = pytest.mark.e2e

TASK = "2026-11-23T0930-backend-dev-greeting"
CHECK = shlex.join([sys.executable, "-c", "import sys; t = open('greeting.txt').read(); "
                    "print('greeting.txt says:', t.strip()); sys.exit(0 if t == 'hello world\\n' else 1)"])


def test_claude_is_resumed_with_the_verify_failure_and_its_fix_is_committed(
        git_repo: Path, agent_cli_paths: dict[str, Path], model_server: ModelServer,
        claude_env: dict[str, str]) -> None:
    model_server.add_script(TASK, [
        WriteFile("greeting.txt", "hello wrold\n"), Reply("Wrote greeting.txt."),
        WriteFile("greeting.txt", "hello world\n"), Reply("Fixed the typo in greeting.txt."),
    ])
    config = claude_board(git_repo, agent_cli_paths["claude-code"], {
        "id": TASK, "title": "Write a greeting", "artefacts": ["greeting.txt"],
        "description": "Write 'hello world' into greeting.txt."}, verify=[CHECK], verify_rounds=2)
    assert Daemon(config, env=claude_env, once=True).run() == 0

    done = git_repo / "work" / "collaboration" / "done" / "backend-dev" / f"{TASK}.yaml"
    document = yaml.safe_load(done.read_text())
    assert document["status"] == "done", document.get("error")
    result = document["result"]
    assert result["verify_rounds"] == 1
    assert git(git_repo, "show", f"conveyor/{TASK}:greeting.txt") == "hello world"
    rows = invocation_rows(git_repo, TASK)
    assert [(row["attempt"], row["round"], row["outcome"]) for row in rows] == [(1, 0, "ok"), (1, 1, "ok")]
    assert rows[0]["session_id"] and rows[1]["session_id"] == rows[0]["session_id"]   # the same session
    assert result["session_id"] == rows[0]["session_id"]
    # the resumed request carries the earlier conversation and, as the new user turn, the failure
    scripted = [r for r in model_server.requests if r.conversation == TASK]
    resumed = [r for r in scripted if "greeting.txt says: hello wrold" in json.dumps(r.body)]
    assert resumed, "the verify output never reached the model"
    assert "Write 'hello world' into greeting.txt." in json.dumps(resumed[0].body)   # the original task
    assert "Fixed the typo" in result["summary"]
    assert outbound_attempts(model_server) == []
